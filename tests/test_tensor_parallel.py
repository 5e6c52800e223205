"""Tensor parallelism (Megatron-style, PyTorch's engine) on 2 CPU processes against the
same model in one: the same losses and weights after 5 AdamW steps, each process holding
about half of the blocks' parameters. The fused c_attn's row order is checked on its own.
Tolerances as in the FSDP test (a different summation order in the all-reduces)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from minift.errors import UserError
from minift.model import GPT, GPTConfig
from minift.train.tensor_parallel import parallelize_gpt, qkv_order

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_two_process_tensor_parallel_matches_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "tp_worker.py"), str(tmp_path / "tp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "tp.json").read_text())
    # float64 (tests/tp_worker.py): another summation order is ~1e-16 relative, and Adam's
    # worst amplification over 5 steps (lr / eps per unit of gradient difference) < 1e-9
    assert r["losses"]["tp"] == pytest.approx(r["losses"]["plain"], rel=1e-12)
    assert max(r["diffs"].values()) < 1e-9, r["diffs"]
    # biases of the row-parallel layers and the norms stay whole: a bit over half
    assert 0.5 * r["block_total"] <= r["held"] < 0.55 * r["block_total"]


def test_qkv_order_groups_each_ranks_heads():
    # d = 4, 2 ranks: q rows 0-3, k rows 4-7, v rows 8-11; rank 0 owns rows 0-1 of each.
    assert qkv_order(4, 2, 2).tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
    order = qkv_order(12, 6, 3)
    assert sorted(order.tolist()) == list(range(36))


def test_bad_input():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31))
    with pytest.raises(UserError, match="tensor parallelism needs at least 2 processes"):
        parallelize_gpt(model)
    assert torch.is_tensor(model.transformer.h[0].attn.c_attn.weight)
