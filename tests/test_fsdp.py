"""FSDP on 2 CPU processes (gloo) against 1 process on the same global batches: the same
losses and final weights, each rank holding about half the parameters; for full
fine-tuning and for LoRA (only the adapters are in the optimizer, the sharded base stays
bit-identical). The `minift finetune --fsdp` command under torchrun against the same
command in one process: the same metrics and saved weights, and the saved model loads
with `minift eval`. A sharded Trainer run stopped and resumed from its sharded checkpoint
ends bit-identical. Bad input: FSDP in one process, a method FSDP cannot shard, a sharded
checkpoint resumed without FSDP.

Tolerances: the two runs sum the same gradients in a different order (a reduce-scatter
of per-rank means against one mean over the batch). In float32 that rounding, amplified by
Adam's division by sqrt(v) where a gradient is near zero, moved weights by up to ~1e-4 and
made any fixed tolerance a bet on the machine; the workers run in float64, where the same
rounding is ~1e-16 relative and Adam's worst amplification (lr / eps per unit of gradient
difference, 3e-3 / 1e-8) keeps it below 1e-9 after 5 steps.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import minift.cli
from minift.errors import UserError
from minift.train.fsdp import shard_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "fsdp_worker.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both modes (full, lora) in one launch each of 1 and 2 processes (start-up dominates)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    return run(tmp / "one"), run(tmp / "two", nproc=2)


def run(out, nproc=1):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.run(launcher + [str(WORKER), str(out)], env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(pathlib.Path(str(out) + ".json").read_text())
    return {**result, "stdout": proc.stdout}


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_two_process_fsdp_matches_one_process_and_halves_the_parameters(runs, mode):
    one, two = runs[0][mode], runs[1][mode]
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-12)
    assert set(one["weights"]) == set(two["weights"])
    for name in one["weights"]:
        a = torch.tensor(one["weights"][name], dtype=torch.float64)
        b = torch.tensor(two["weights"][name], dtype=torch.float64)
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9, msg=name)
    # Each rank holds its dim-0 shard of every parameter: half, up to odd row counts.
    total = two["total"]
    assert sum(two["held"]) >= total and all(
        abs(h - total / 2) <= 0.02 * total for h in two["held"]
    )
    if mode == "lora":  # the optimizer holds the adapters only; the sharded base is untouched
        assert len(two["optimized"]) == 8 and all("lora_" in n for n in two["optimized"])
        assert two["frozen"] and two["frozen_change"] == 0.0


def test_sharded_checkpoint_saves_loads_and_resumes_exactly(runs):
    ck = runs[1]["checkpoint"]
    assert ck["differs_before_load"] > 0  # the fresh model really was different
    assert ck["max_diff_after_resume"] == 0.0  # same shards, same state, same arithmetic


def test_fsdp_in_one_process_is_a_clear_error():
    from minift.model import GPT, GPTConfig

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31))
    with pytest.raises(UserError, match="FSDP needs at least 2 processes"):
        shard_model(model)


def test_a_sharded_trainer_run_resumed_from_its_checkpoint_ends_bit_identical(runs):
    resume = runs[1]["resume"]
    assert resume["saved"] == ["latest.json", "step-000004"]  # it stopped after step 4
    assert resume["resumed_losses"] == resume["losses"]  # every step, before and after
    assert resume["max_diff"] == 0.0


def tensors(folder):
    from safetensors.torch import load_file

    files = sorted(pathlib.Path(folder).glob("*.safetensors"))
    assert files, folder
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_minift_finetune_fsdp_under_torchrun_matches_one_process(runs, method, capsys):
    one, two = (pathlib.Path(r["cli"]["folder"]) for r in runs)
    assert runs[1]["stdout"].count(f"saved the fine-tuned model ({method})") == 1  # rank 0 only
    rows1 = [
        json.loads(x) for x in (one / f"{method}_run" / "metrics.jsonl").read_text().splitlines()
    ]
    rows2 = [
        json.loads(x) for x in (two / f"{method}_run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r.keys() for r in rows2] == [r.keys() for r in rows1]
    for r1, r2 in zip(rows1, rows2):  # float64 throughout: see the module's docstring
        assert r2 == pytest.approx(r1, rel=1e-9, abs=1e-12)
    a, b = tensors(one / f"{method}_model"), tensors(two / f"{method}_model")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == torch.float64, name
        torch.testing.assert_close(b[name], a[name], rtol=1e-9, atol=1e-9, msg=name)
    # What torchrun saved loads with `minift eval` and scores what the run logged at its
    # end, up to the print's rounding (4 decimals). In float64 as it was trained: the loader
    # builds in the default dtype, and a saved adapter checks its base's fingerprint.
    torch.set_default_dtype(torch.float64)
    try:
        assert minift.cli.main(["eval", "--model", str(two / f"{method}_model")]) == 0
    finally:
        torch.set_default_dtype(torch.float32)
    line = next(x for x in capsys.readouterr().out.splitlines() if "val_accuracy=" in x)
    shown = dict(w.split("=") for w in line.split() if "=" in w)
    assert shown.keys() == {"val_accuracy", "val_loss"}
    for key, value in shown.items():
        assert float(value) == pytest.approx(rows2[-1][key], abs=5e-5), key


def test_fsdp_in_one_process_exits_2_with_one_line():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "minift", "finetune", "--fsdp", "--steps", "1"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("minift: error: FSDP needs at least 2 processes")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_fsdp_refuses_a_method_with_its_own_parameter_groups():
    from minift.recipes.finetune import FinetuneConfig, finetune
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    base, enc = load_base(progress=False, verbose=False)
    config = FinetuneConfig(method="llrd")
    with pytest.raises(UserError, match="--fsdp: method 'llrd' sets its own parameter groups"):
        finetune(get_task("stdlib-package"), base, enc, config, fsdp=True)


def test_a_sharded_checkpoint_resumed_without_fsdp_is_a_clear_error(runs):
    from minift.model import GPT, GPTConfig
    from minift.train import TrainConfig, Trainer

    out = pathlib.Path(runs[1]["cli"]["folder"]).parent / "resume" / "stopped"
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=61))
    config = TrainConfig(steps=6, ckpt_every=2, out_dir=str(out), progress=False)
    with pytest.raises(ValueError, match="sharded checkpoint of an FSDP run \\(2 processes\\)"):
        Trainer(model.double(), config, lambda s, m: None).fit(resume=True)
