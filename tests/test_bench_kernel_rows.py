"""The GPU-only rows of bench_efficiency (NF4 routes) and bench_personal (multi-LoRA) run
on a lent GPU for a few minutes at most, where a Python error would waste the run: here
each row's code runs on CPU tensors through Triton's interpreter, with one call standing in
for ``do_bench``'s timing, and its checks and fields are read back."""

import importlib.util
import pathlib
import time

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_call_timer(monkeypatch):
    """triton.testing.do_bench replaced by one timed call (the interpreter's times mean
    nothing; what is tested is that each route runs and is checked)."""
    triton_testing = pytest.importorskip("triton.testing")
    from minift.kernels.dispatch import interpreting

    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")

    def once(fn, return_mode=None, **_):
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)

    monkeypatch.setattr(triton_testing, "do_bench", once)
    monkeypatch.setenv("MINIFT_KERNELS", "triton")


def test_every_nf4_route_runs_and_agrees(one_call_timer):
    from minift.kernels.nf4 import dequantize_reference

    from minift.quant.nf4 import nf4_code_f32, quantize_nf4

    bench = script("bench_efficiency")
    torch.manual_seed(0)
    code = nf4_code_f32(torch.device("cpu"))
    q = quantize_nf4(torch.randn(40, 70) * 0.02)
    w32 = dequantize_reference(q.packed, q.block_scales(), code, (40, 70))
    row = bench.time_nf4(torch.randn(17, 70), q.packed, q.block_scales(), code, w32)
    routes = [
        "fused",
        "dequant_triton_then_matmul",
        "dequant_torch_then_matmul",
        "bf16_dense",
        "auto",
    ]
    assert all(row[f"{r}_ms"] > 0 for r in routes)
    assert row["rel_err"] < 1e-5 and row["picked"] == "fused"  # no tuning off CUDA


def test_the_multi_lora_row_runs_and_agrees(one_call_timer):
    bench = script("bench_personal")
    row = bench.time_case(40, 3, 48, 33, 4, torch.float32, dev="cpu")
    assert row["rel_err"] < 1e-5
    timed = [
        "kernel_fwd_ms",
        "loop_fwd_ms",
        "one_adapter_fused_ms",
        "kernel_fwd_bwd_ms",
        "loop_fwd_bwd_ms",
    ]
    assert all(row[name] > 0 for name in timed)
