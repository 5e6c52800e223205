"""minift.recipes.tune and `minift tune` end to end on the fast base: the trial table is
consistent with the scheduler (rung sizes, cost), a fixed seed reproduces the search, and
bad input is one clear error before any training."""

import json

import pytest

from minift.cli import main
from minift.errors import UserError
from minift.recipes.pretrain import load_base
from minift.recipes.tune import TuneConfig, method_options, run_tune


@pytest.fixture(scope="module")
def base():
    return load_base(progress=False, verbose=False)


def test_asha_trial_table_and_reproducibility(base):
    model, enc = base
    config = TuneConfig(methods=("lora", "adapter"), trials=4, min_steps=1, max_steps=4,
                        eta=2, batch_size=8)  # fmt: skip
    a = run_tune(config, model, enc)
    assert {r["method"] for r in a.trials} <= {"lora", "adapter"}
    assert a.total_steps == sum(r["steps"] for r in a.trials)
    assert {r["steps"] for r in a.trials} <= {1, 2, 4}
    assert a.best["steps"] == max(r["steps"] for r in a.trials)
    top = [r for r in a.trials if r["steps"] == a.best["steps"]]
    assert a.best["metric"] == max(r["metric"] for r in top)
    for r in a.trials:  # options follow the method
        assert ("r" in r) == (r["method"] == "lora") and ("reduction_factor" in r) == (
            r["method"] == "adapter"
        )
    b = run_tune(config, model, enc)
    assert [(r["trial"], r["steps"], r["metric"]) for r in a.trials] == [
        (r["trial"], r["steps"], r["metric"]) for r in b.trials
    ]


def test_method_options():
    assert method_options({"method": "lora", "r": 4, "alpha_over_r": 2, "reduction_factor": 8}) == {"r": 4, "alpha": 8.0}  # fmt: skip
    assert method_options({"method": "adapter", "r": 4, "alpha_over_r": 2, "reduction_factor": 8}) == {"reduction_factor": 8}  # fmt: skip
    assert method_options({"method": "full", "r": 4, "alpha_over_r": 2, "reduction_factor": 8}) == {}  # fmt: skip


def test_cli_writes_the_table(tmp_path, capsys):
    main(["tune", "--methods", "lora", "--scheduler", "random", "--trials", "2",
          "--max-steps", "2", "--batch-size", "8", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert "best: trial" in out and "cost: 4 steps" in out
    saved = json.loads((tmp_path / "trials.json").read_text())
    assert len(saved["trials"]) == 2 and all(t["method"] == "lora" for t in saved["trials"])
    assert (tmp_path / "tune.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "bogus"], "unknown method 'bogus'"),
        (["--rank", "8..2"], "integer range 8..2 is empty"),
        (["--lr", "1e-2:1e-4"], "is empty or not positive"),
        (["--scheduler", "grid"], "invalid choice: 'grid'"),
        (["--time-budget", "0m"], "duration must be > 0"),
        (["--eta", "1"], "eta must be >= 2"),
    ],
)
def test_bad_input_is_one_clear_error(argv, message, capsys):
    try:
        code = main(["tune", "--trials", "1", "--max-steps", "1", *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_config_checks():
    with pytest.raises(UserError, match="unknown scheduler 'grid'"):
        TuneConfig(scheduler="grid")
    with pytest.raises(UserError, match="at least one method"):
        TuneConfig(methods=())
