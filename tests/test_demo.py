"""The demo: every method against full fine-tuning and the probe, on the same rows, with
the verdicts, the per-row scores and the machine recorded; a bad option fails first."""

import json

import pytest
import torch

from minift.peft.methods import METHODS
from minift.recipes.demo import PROBE_HEAD_LR, format_table, run_demo


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()  # run_demo(threads=...) sets the process's count
    yield
    torch.set_num_threads(before)


def test_demo_records_verdicts_scores_and_the_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIFT_OUT", str(tmp_path))
    results = run_demo(methods=("full", "probe", "lora"), steps=4, progress=False, threads=1)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["machine"]["threads"] == 1 and saved["base_size"] == "tiny"
    # LP-FT by default: every gradient method's head starts from the probe, at its swept rate
    assert saved["head"] == "probe"
    by = {r.method: r for r in results}
    assert by["lora"].head_fit["l2"] == by["probe"].fit["l2"] and by["probe"].head_fit is None
    assert by["full"].train.lr == PROBE_HEAD_LR["full"] != METHODS["full"].lr
    assert set(saved["verdicts"]["lora"]) == {"full", "probe"}
    assert "full" not in saved["verdicts"]["full"]
    assert all(len(v) == len(results[0].val_scores) for v in saved["val_scores"].values())
    table = format_table(results)
    assert "vs probe" in table and "fit" in table.splitlines()[3]  # the probe has no lr
    assert (tmp_path / "demo" / "results.png").stat().st_size > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"methods": ("full", "nope")}, "unknown method"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"base_size": "huge"}, "unknown base size"),
        ({"head": "labels"}, "head must be one of"),
    ],
)
def test_bad_demo_options_fail_before_any_work(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIFT_OUT", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        run_demo(**{"methods": ("full",), "steps": 1, "progress": False, **kwargs})
    assert not (tmp_path / "demo" / "results.json").exists()


def test_the_label_word_start_runs_at_the_registry_rates(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIFT_OUT", str(tmp_path))
    (full,) = run_demo(methods=("full",), steps=2, progress=False, threads=1, head="words")
    assert full.head_fit is None and full.train.lr == METHODS["full"].lr
    assert json.loads((tmp_path / "demo" / "results.json").read_text())["head"] == "words"
