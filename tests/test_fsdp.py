"""FSDP on 2 CPU processes (gloo) against 1 process on the same global batches: the same
losses and final weights, each rank holding about half the parameters; for full
fine-tuning and for LoRA (only the adapters train). Bad input: FSDP in one process.

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
    return json.loads(pathlib.Path(str(out) + ".json").read_text())


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
    if mode == "lora":
        assert two["trainable"] and all("lora_" in n for n in two["trainable"])


def test_sharded_checkpoint_saves_loads_and_resumes_exactly(runs):
    ck = runs[1]["checkpoint"]
    assert ck["differs_before_load"] > 0  # the fresh model really was different
    assert ck["max_diff_after_resume"] == 0.0  # same shards, same state, same arithmetic


def test_fsdp_in_one_process_is_a_clear_error():
    from minift.model import GPT, GPTConfig

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31))
    with pytest.raises(UserError, match="FSDP needs at least 2 processes"):
        shard_model(model)
