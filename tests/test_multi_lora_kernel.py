"""Many adapters in one batch: the segmented gather kernels against the row-by-row definition
(Triton through the interpreter on CPU), gradients included."""

import json
import os
import subprocess
import sys

import pytest
import torch
from minift.kernels.buffers import poisoned_outputs
from minift.kernels.lora import lora_linear_reference
from minift.kernels.multi_lora import (
    MultiLoRAFunction,
    multi_lora,
    multi_lora_loop,
    multi_lora_reference,
    segments,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def ragged_ids(lengths: list[int], n_rows: int, seed: int) -> torch.Tensor:
    """Adapter l on lengths[l] rows, the rest -1 (no adapter), shuffled across the batch."""
    ids = torch.full((n_rows,), -1, dtype=torch.long)
    ids[: sum(lengths)] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return ids[torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))]


def make(n_adapters, r, k, n, dtype, device=DEVICE):
    g = dict(dtype=dtype, device=device)
    a = (torch.randn(n_adapters, r, k, **g) / k**0.5).requires_grad_()
    b = torch.randn(n_adapters, n, r, **g, requires_grad=True)  # non-zero B: every term counts
    s = torch.rand(n_adapters) + 0.25  # a different scaling per adapter
    return a, b, s


@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")


# Segments of 1, 17 and 19 rows cross the interpreter's 16-row tiles unevenly; adapter 3
# has no rows at all (its gradients must be exactly 0); -1 rows take no adapter; K, N and
# ranks are not multiples of 16 (rank 20 pads to a 32-wide tile).
CASES = [
    dict(lengths=[1, 17, 19, 0], rows=41, k=45, n=29, r=5),
    dict(lengths=[3, 0, 30], rows=33, k=16, n=17, r=20),
    dict(lengths=[7], rows=9, k=33, n=18, r=1),  # one adapter and two -1 rows: the kernel
]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['lengths']}k{c['k']}n{c['n']}r{c['r']}")
def test_triton_matches_reference(force_triton, case, dtype, tol):
    torch.manual_seed(len(case["lengths"]) + case["r"])
    ids = ragged_ids(case["lengths"], case["rows"], seed=case["k"]).to(DEVICE)
    a, b, s = make(len(case["lengths"]), case["r"], case["k"], case["n"], dtype)
    x = torch.randn(case["rows"], case["k"], dtype=dtype, device=DEVICE, requires_grad=True)
    g = torch.randn(case["rows"], case["n"], dtype=dtype, device=DEVICE)
    with poisoned_outputs():
        y = multi_lora(x, a, b, ids, s)
        grads = torch.autograd.grad(y, [x, a, b], g)
    y_ref = multi_lora_reference(x, a, b, ids, s)
    grads_ref = torch.autograd.grad(y_ref, [x, a, b], g)
    assert rel_err(y, y_ref) < tol
    assert (y[ids < 0] == 0).all()
    for got, want in zip(grads, grads_ref):
        assert torch.isfinite(got).all()
        assert rel_err(got, want) < tol
    empty = [lid for lid, n in enumerate(case["lengths"]) if n == 0]
    for lid in empty:  # an adapter with no rows gets exactly zero gradient (not NaN, not stale)
        assert (grads[1][lid] == 0).all() and (grads[2][lid] == 0).all()


def test_a_batch_on_one_adapter_takes_two_plain_matmuls(monkeypatch):
    """Every row on adapter 2 (found by the ids' range check): the segmented path is not
    taken, and the term and its gradients equal the definition's."""
    import minift.kernels.multi_lora as ml

    def never(*args):
        raise AssertionError("the segmented path was taken")

    monkeypatch.setattr(ml.MultiLoRAFunction, "apply", never)
    a, b, s = make(3, 4, 12, 10, torch.float64, device="cpu")
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    ids = torch.full((2,), 2)
    y = multi_lora(x, a, b, ids, s)
    want = multi_lora_reference(x.reshape(10, 12), a, b, ids.repeat_interleave(5), s)
    assert y.shape == (2, 5, 10) and rel_err(y.reshape(10, 10), want) < 1e-12
    for got, exp in zip(torch.autograd.grad(y.sum(), [x, a, b]),
                        torch.autograd.grad(want.sum(), [x, a, b])):  # fmt: skip
        assert rel_err(got, exp) < 1e-12
    with pytest.raises(AssertionError, match="segmented"):  # a second adapter: the kernel
        multi_lora(x, a, b, torch.tensor([2, 0]), s)
    with pytest.raises(AssertionError, match="segmented"):  # unchecked ids: not known
        multi_lora(x, a, b, ids, s, check_ids=False)


def test_each_row_equals_its_own_lora_layer():
    """Independent check: the rows of adapter l equal the single-adapter LoRA term."""
    ids = ragged_ids([5, 9, 4], 20, seed=1)
    a, b, s = make(3, 4, 12, 10, torch.float64, device="cpu")
    x = torch.randn(20, 12, dtype=torch.float64)
    y = multi_lora(x, a, b, ids, s)
    zero_w = torch.zeros(10, 12, dtype=torch.float64)
    for lid in range(3):
        rows = ids == lid
        want = lora_linear_reference(x[rows], zero_w, None, a[lid], b[lid], float(s[lid]))
        assert rel_err(y[rows], want) < 1e-12


def test_loop_and_segment_backends_match_definition():
    ids = ragged_ids([6, 0, 11], 21, seed=2)
    a, b, s = make(3, 3, 9, 7, torch.float64, device="cpu")
    x = torch.randn(21, 9, dtype=torch.float64)
    ref = multi_lora_reference(x, a, b, ids, s)
    assert rel_err(multi_lora_loop(x, a, b, ids, s), ref) < 1e-12
    seg = segments(ids, 3)
    assert rel_err(MultiLoRAFunction.apply(x, a, b, seg, s, "torch"), ref) < 1e-12


def test_segments_and_tiles_by_hand():
    """Rows sorted by adapter with the id -1 rows first, and the tile list of fixed length
    ceil(M / BLOCK_M) + L: the real tiles in order, never spanning two adapters, then empty
    ones (first = end), all built without reading a value back to the host."""
    ids = torch.tensor([2, -1, 0, 2, 2, -1, 0])
    seg = segments(ids, 4)  # adapters 1 and 3 have no rows
    assert seg.order.tolist() == [1, 5, 2, 6, 0, 3, 4]
    assert seg.starts.tolist() == [2, 4, 4, 7, 7]
    adapter, first, end = (v.tolist() for v in seg.tiles(2))
    assert len(adapter) == 4 + 4
    real = [(a, f, e) for a, f, e in zip(adapter, first, end) if f < e]
    assert real == [(0, 2, 4), (2, 4, 6), (2, 6, 7)]
    assert all(f == e for f, e in zip(first[3:], end[3:]))
    assert seg.tiles(2)[0] is seg.tiles(2)[0]  # cut once per tile size (forward, backward)
    none = segments(torch.tensor([-1, -1]), 2)
    assert none.starts.tolist() == [2, 2, 2] and all(
        f == e for f, e in zip(*(v.tolist() for v in none.tiles(16)[1:]))
    )


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradcheck(monkeypatch, backend):
    """The hand-derived backward (both backends) against finite differences, in float64."""
    if backend == "triton":
        pytest.importorskip("triton")
        if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    ids = torch.tensor([1, -1, 0, 1, 0], device=DEVICE)
    seg = segments(ids, 3)  # adapter 2 has no rows
    a, b, s = make(3, 2, 3, 2, torch.float64, device=DEVICE)
    x = torch.randn(5, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    s = s.to(DEVICE)
    fn = lambda x, a, b: MultiLoRAFunction.apply(x, a, b, seg, s, backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, a, b))


def test_ids_per_sequence_broadcast_over_tokens():
    """ids (batch,) for x (batch, T, K): one adapter per sequence, as in serving."""
    a, b, s = make(3, 2, 8, 6, torch.float64, device="cpu")
    x = torch.randn(4, 5, 8, dtype=torch.float64)
    ids = torch.tensor([2, 0, -1, 2])
    y = multi_lora(x, a, b, ids, s)
    assert y.shape == (4, 5, 6)
    flat = multi_lora_reference(x.reshape(20, 8), a, b, ids.repeat_interleave(5), s)
    assert rel_err(y.reshape(20, 6), flat) < 1e-12


def test_no_adapter_anywhere_is_zero(force_triton):
    a, b, s = make(2, 3, 17, 5, torch.float32)
    x = torch.randn(6, 17, device=DEVICE, requires_grad=True)
    y = multi_lora(x, a, b, torch.full((6,), -1, device=DEVICE), s)
    assert (y == 0).all()
    dx, da, db = torch.autograd.grad(y.sum(), [x, a, b])
    assert (dx == 0).all() and (da == 0).all() and (db == 0).all()


def test_reference_mode_never_touches_triton(monkeypatch):
    import minift.kernels.multi_lora as ml

    def boom(*args):
        raise AssertionError("triton path taken")

    monkeypatch.setattr(ml, "_BACKENDS", {**ml._BACKENDS, "triton": (boom, boom)})
    monkeypatch.setenv("MINIFT_KERNELS", "reference")
    a, b, s = make(2, 2, 8, 5, torch.float32, device="cpu")
    x = torch.randn(3, 8)
    ids = torch.tensor([0, 1, 1])
    assert rel_err(multi_lora(x, a, b, ids, s), multi_lora_reference(x, a, b, ids, s)) < 1e-6


def test_bad_inputs_are_named():
    a, b, s = make(2, 3, 8, 5, torch.float32, device="cpu")
    x = torch.randn(4, 8)
    ids = torch.tensor([0, 1, -1, 0])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        multi_lora(x, a, b, torch.tensor([0, 2, 0, 0]), s)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        multi_lora(x, a, b, torch.tensor([0, -2, 0, 0]), s)
    with pytest.raises(ValueError, match="integer"):
        multi_lora(x, a, b, ids.float(), s)
    with pytest.raises(ValueError, match="features"):
        multi_lora(x[:, :7], a, b, ids, s)
    with pytest.raises(ValueError, match="lora_B"):
        multi_lora(x, a, b[:, :, :2], ids, s)
    with pytest.raises(ValueError, match="scaling"):
        multi_lora(x, a, b, ids, torch.ones(3))
    with pytest.raises(ValueError, match="prefix"):
        multi_lora(x, a, b, torch.tensor([0, 1]), s)
    with pytest.raises(ValueError, match="dtype"):
        multi_lora(x.double(), a, b, ids, s)
    with pytest.raises(ValueError, match="adapters, r, in"):
        multi_lora(x, a[0], b, ids, s)


COMPILE = r"""
import inspect, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

if "constexprs" not in inspect.signature(ASTSource).parameters:
    print(json.dumps({"skip": "this Triton's ASTSource takes other arguments"}))
    sys.exit(0)
from minift.kernels.multi_lora_triton import _sgmv_kernel, _segmented_outer_kernel

def build(kernel, dtype, const, cap):
    sig = {}
    for name in kernel.arg_names:
        if name in const:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i32" if name.startswith(("order", "tile", "starts")) else (
                "*fp32" if name == "s_ptr" else "*" + dtype)
        else:
            sig[name] = "fp32" if name == "scaling" else "i32"
    target = GPUTarget("cuda", cap, 32)
    opts = triton.compiler.make_backend(target).parse_options({"num_warps": 4, "num_stages": 2})
    src = ASTSource(fn=kernel, signature=sig, constexprs=const)
    return triton.compile(src, target=target, options=opts.__dict__).metadata.shared

out = []
for cap, dtype in ((90, "bf16"), (90, "fp32"), (86, "bf16")):
    common = {"F64": False, "PRECISION": "ieee" if dtype == "fp32" else "tf32", "WIDE": False}
    tiles = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "BLOCK_R": 16}
    out.append(build(_sgmv_kernel, dtype, {**common, **tiles}, cap))
    tiles = {"BLOCK_M": 32, "BLOCK_P": 64, "BLOCK_Q": 16}
    out.append(build(_segmented_outer_kernel, dtype, {**common, **tiles}, cap))
print(json.dumps({"shared": out}))
"""


def test_kernels_compile_for_gpu_targets():
    """The interpreter accepts things ptxas would not: compile both kernels for sm_90 (bf16,
    fp32) and sm_86 (bf16), within a consumer GPU's 99 KB of shared memory."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", COMPILE], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert len(result["shared"]) == 6 and all(s < 101_376 for s in result["shared"])


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_many_users(dtype):
    """64 users, 2,048 tokens in ragged segments, 1024 -> 1024, r=16, against fp32."""
    torch.manual_seed(0)
    lengths = torch.randint(0, 64, (64,)).tolist()
    ids = ragged_ids(lengths, sum(lengths) + 5, seed=0).cuda()
    a, b, s = make(64, 16, 1024, 1024, torch.float32)
    x = torch.randn(len(ids), 1024, device="cuda")
    y = multi_lora(x.to(dtype), a.to(dtype), b.to(dtype), ids, s)
    assert rel_err(y, multi_lora_reference(x, a, b, ids, s)) < 2e-2
