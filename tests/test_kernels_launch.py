"""Launch decisions at the GPU's limits, on the CPU: 64-bit offsets, grid shapes, pipeline
stages from shared memory, and the fallback to the reference when a launch fails.

The limits themselves (2^31 elements, 65,536 batch-heads, 99 KB of shared memory) cannot be
reached here, so the pure functions of minift.kernels.launch are tested at them, and the
launchers are tested to act on what those functions decide (through the interpreter).
"""

import importlib
import warnings

import pytest
import torch
from minift.kernels import attention_reference, block_sparse_attention_reference, launch
from minift.kernels import dispatch as dispatch_mod
from minift.kernels.launch import (
    CONSUMER_SMEM,
    attention_smem,
    check_grid,
    flat_grid,
    grid_fits,
    lora_smem,
    max_offset,
    needs_int64,
    pick_stages,
    pipeline_buffers,
    smem_bytes,
)

H100_SMEM = 232_448  # 227 KB opt-in per block (sm_90)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(out, ref):
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


# --------------------------------------------------------------------------- offsets
def test_max_offset_is_the_last_element_of_a_strided_view():
    assert max_offset((3, 4), (4, 1)) == 11
    assert max_offset((4, 3), (1, 4)) == 11  # the transposed view reaches the same element
    assert max_offset((5, 0), (7, 1)) == 0
    with pytest.raises(ValueError, match="differ in length"):
        max_offset((2, 3), (1,))


def test_int64_exactly_past_2_to_the_31():
    assert not needs_int64(((2**31,), (1,)))  # last offset 2^31 - 1 still fits int32
    assert needs_int64(((2**31 + 1,), (1,)))
    assert not needs_int64(((46_340, 46_340), (46_340, 1)))  # 2.147e9 - 1 elements: fits
    assert needs_int64(((46_341, 46_341), (46_341, 1)))


def test_output_layers_past_2_to_the_31_elements_need_int64():
    """A 256k-vocabulary output layer: 8k wide fits int32 offsets, 16k wide does not."""
    assert not needs_int64(torch.empty(256_000, 8_192, device="meta"))
    big = torch.empty(256_000, 16_384, device="meta")  # no memory allocated
    assert needs_int64(big)
    assert needs_int64(big.t())  # the launchers pass transposed views of weights
    assert needs_int64(big[:, :16])  # few elements, but the row stride still spans 2^31
    assert not needs_int64(big[:16])
    assert not needs_int64(None, torch.empty(3, 5, device="meta"))


def test_attention_inputs_past_2_to_the_31_need_int64():
    """(B, T, H, D) storage viewed as (B, H, T, D): one batch element of 1M tokens x 32
    heads x 128 dims spans 4.3e9 elements, whatever the batch."""
    q = torch.empty(1, 1_048_576, 32, 128, device="meta").transpose(1, 2)
    assert needs_int64(q)
    assert not needs_int64(q[:, :, :4096])


# ----------------------------------------------------------------------------- grids
def test_batch_heads_over_65535_fit_a_flat_grid():
    tiles, batch_heads = 32, 70_000  # e.g. B=2187, H=32: over CUDA's y-axis limit
    assert not grid_fits((tiles, batch_heads))  # the old (tiles, B*H) grid
    with pytest.raises(ValueError, match="axis 1 has 70,000 programs, over CUDA's limit"):
        check_grid((tiles, batch_heads))
    assert flat_grid(tiles, batch_heads) == (tiles * batch_heads,)
    assert grid_fits(flat_grid(tiles, batch_heads))
    assert flat_grid(0, 3) == (1,)


def test_a_grid_past_2_to_the_31_programs_is_named():
    with pytest.raises(ValueError, match="axis 0"):
        flat_grid(2**16, 2**15)
    with pytest.raises(ValueError, match="1 to 3 axes"):
        check_grid((1, 1, 1, 1))


try:  # a kernel defined at module level: triton.jit resolves names in its module
    import triton
    import triton.language as tl
    from minift.kernels.triton_utils import tile_and_head

    @triton.jit
    def _mark_tiles(out_ptr, n_tiles, REVERSE: tl.constexpr):
        tile, bh = tile_and_head(n_tiles, REVERSE)
        first = tl.program_id(0) % n_tiles == 0
        tl.atomic_add(out_ptr + bh * n_tiles + tile, 1 + 100 * first.to(tl.int32))

except ImportError:
    _mark_tiles = None


@pytest.mark.skipif(_mark_tiles is None, reason="needs triton")
@pytest.mark.parametrize("reverse", [False, True])
def test_flat_grid_covers_every_tile_of_every_head_once(reverse):
    """The in-kernel half of flat_grid: every program maps to a distinct (tile, head)."""
    if DEVICE == "cpu" and not dispatch_mod.interpreting():
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    n_tiles, heads = 7, 5
    out = torch.zeros(heads, n_tiles, dtype=torch.int32, device=DEVICE)
    _mark_tiles[flat_grid(n_tiles, heads)](out, n_tiles, REVERSE=reverse)
    assert (out % 100 == 1).all()  # each exactly once
    first = out // 100  # which tile each head's first program took
    assert first[:, -1 if reverse else 0].eq(1).all() and first.sum() == heads


# --------------------------------------------------------------------- shared memory
HOPPER, AMPERE, CONSUMER_BLACKWELL = (9, 0), (8, 6), (12, 0)


def test_lora_bf16_three_stages_need_102_kb_on_hopper():
    per_stage, fixed = lora_smem(128, 128, 64, 16, elem=2)
    assert per_stage * 3 == 104_448  # the 102 KB of the issue: 3 buffers of X, Wt, At tiles
    assert smem_bytes(per_stage, fixed, 3, HOPPER) > CONSUMER_SMEM
    assert smem_bytes(per_stage, fixed, 3, AMPERE) < CONSUMER_SMEM  # 2 buffers on sm_86
    assert pipeline_buffers(3, HOPPER) == 3 and pipeline_buffers(3, CONSUMER_BLACKWELL) == 2
    assert pipeline_buffers(1, AMPERE) == 1 and pipeline_buffers(3, (13, 0)) == 3


@pytest.mark.parametrize(
    "smem,capability,expected",
    [
        (CONSUMER_SMEM, HOPPER, 2),  # 3 buffers would not fit 99 KB
        (H100_SMEM, HOPPER, 3),
        (CONSUMER_SMEM, AMPERE, 3),
        (CONSUMER_SMEM, CONSUMER_BLACKWELL, 3),
        (60_000, AMPERE, 2),
        (40_000, HOPPER, 1),  # nothing fits: 1, and a failed launch falls back
    ],
)
def test_stages_fit_the_shared_memory(smem, capability, expected):
    per_stage, fixed = lora_smem(128, 128, 64, 16, elem=2)
    stages = pick_stages(per_stage, fixed, smem, 3, capability)
    assert stages == expected
    if smem_bytes(per_stage, fixed, 1, capability) <= smem:
        assert smem_bytes(per_stage, fixed, stages, capability) <= smem
        assert smem_bytes(per_stage, fixed, stages + 1, capability) > smem or stages == 3
    assert pick_stages(per_stage, fixed, H100_SMEM, 8, HOPPER) == 6  # room for more


@pytest.mark.parametrize("pass_,consumer,h100", [("fwd", 2, 3), ("dkdv", 3, 3), ("dq", 3, 3)])
def test_attention_stages_for_head_dim_128(pass_, consumer, h100):
    """On an async-MMA GPU with 99 KB, the forward's Q tile plus 3 buffers of K and V
    (128 KB) do not fit; the backward's smaller tiles do."""
    tiles = {"fwd": (128, 64), "dkdv": (32, 64), "dq": (64, 32)}[pass_]
    per_stage, fixed = attention_smem(pass_, *tiles, 128, elem=2)
    assert pick_stages(per_stage, fixed, CONSUMER_SMEM, 3, HOPPER) == consumer
    assert pick_stages(per_stage, fixed, H100_SMEM, 3, HOPPER) == h100
    with pytest.raises(ValueError, match="unknown attention pass"):
        attention_smem("bwd", 64, 64, 64, 2)


def test_shared_memory_off_the_gpu_is_the_safe_default():
    smem, capability = launch.device_limits_of(torch.device("cpu"))
    assert smem == launch.DEFAULT_SMEM == CONSUMER_SMEM and pipeline_buffers(3, capability) == 3


# ----------------------------------------------- the launchers act on those decisions
@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")


def lora_inputs(m, k, n, r, dtype=torch.float32):
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    w = torch.randn(n, k, dtype=dtype, device=DEVICE) / k**0.5
    a = torch.randn(r, k, dtype=dtype, device=DEVICE) / k**0.5
    b = torch.randn(n, r, dtype=dtype, device=DEVICE)
    return x, w, a, b


@pytest.mark.parametrize(
    "limits,expected", [((CONSUMER_SMEM, HOPPER), 2), ((H100_SMEM, HOPPER), 3)]
)
def test_lora_launcher_picks_stages_from_the_device(force_triton, monkeypatch, limits, expected):
    """The GPU's tile table (128x128x64, 3 stages) at fp16, on 99 KB and on 227 KB."""
    lora_triton = pytest.importorskip("minift.kernels.lora_triton")
    gpu = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
    monkeypatch.setattr(lora_triton, "_config", lambda dtype: dict(gpu))
    monkeypatch.setattr(launch, "device_limits_of", lambda device: limits)
    x, w, a, b = lora_inputs(37, 70, 45, 16, dtype=torch.float16)
    y, _ = lora_triton.fused_lora(x, w.t(), None, a.t(), b.t(), 0.5)
    assert launch.last_launch("fused_lora")["num_stages"] == expected
    want = x.float() @ w.float().t() + 0.5 * (x.float() @ a.float().t()) @ b.float().t()
    assert rel_err(y, want) < 2e-3


def test_attention_launcher_picks_stages_from_the_device(force_triton, monkeypatch):
    flash_triton = pytest.importorskip("minift.kernels.flash_triton")
    table = dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3)
    monkeypatch.setattr(
        flash_triton, "_tiles", lambda dtype, d, pass_, capability=None: dict(table)
    )
    monkeypatch.setattr(launch, "device_limits_of", lambda device: (55_000, HOPPER))
    q, k, v = (torch.randn(1, 2, 45, 128, device=DEVICE, dtype=torch.float16) for _ in range(3))
    o, _ = flash_triton.flash_forward(q, k, v, causal=True)
    # fwd: Q 16 KB once + (K + V) 16 KB a buffer: 2 of the 3 stages fit 55,000 bytes
    assert launch.last_launch("attention fwd")["num_stages"] == 2
    assert rel_err(o, attention_reference(q.float(), k.float(), v.float())) < 2e-3


def test_lora_with_int64_offsets_matches_the_reference(force_triton, monkeypatch):
    """The WIDE path of every LoRA kernel (forward, dx, dA, dB, dW) computes the same."""
    lora_triton = pytest.importorskip("minift.kernels.lora_triton")
    monkeypatch.setattr(lora_triton, "needs_int64", lambda *t: True)
    from minift.kernels import lora_linear, lora_linear_reference

    x, w, a, b = (t.requires_grad_() for t in lora_inputs(29, 33, 19, 5))
    bias = torch.randn(19, device=DEVICE, requires_grad=True)
    g = torch.randn(29, 19, device=DEVICE)
    y = lora_linear(x, w, bias, a, b, 0.7)
    grads = torch.autograd.grad(y, (x, w, bias, a, b), g)
    assert launch.last_launch("fused_lora")["WIDE"] and launch.last_launch("matmul")["WIDE"]
    y_ref = lora_linear_reference(x, w, bias, a, b, 0.7)
    grads_ref = torch.autograd.grad(y_ref, (x, w, bias, a, b), g)
    assert rel_err(y, y_ref) < 1e-4
    for got, want in zip(grads, grads_ref):
        assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("sparse", [False, True])
def test_attention_with_int64_offsets_matches_the_reference(force_triton, monkeypatch, sparse):
    flash_triton = pytest.importorskip("minift.kernels.flash_triton")
    monkeypatch.setattr(flash_triton, "needs_int64", lambda *t: True)
    from minift.kernels import attention, block_sparse_attention, sliding_window_layout

    q, k, v = (torch.randn(2, 3, t, 24, device=DEVICE, requires_grad=True) for t in (27, 38, 38))
    g = torch.randn(2, 3, 27, 24, device=DEVICE)
    if sparse:
        layout = sliding_window_layout(48, 16, 2, causal=True)
        fn = lambda q, k, v: block_sparse_attention(q, k, v, layout, 16)
        ref = lambda q, k, v: block_sparse_attention_reference(q, k, v, layout, 16)
    else:
        fn, ref = attention, attention_reference
    out = fn(q, k, v)
    assert launch.last_launch("attention fwd")["WIDE"]
    grads = torch.autograd.grad(out, (q, k, v), g)
    assert launch.last_launch("attention dq")["WIDE"]
    want = ref(q, k, v)
    assert rel_err(out, want) < 1e-4
    for got, exp in zip(grads, torch.autograd.grad(want, (q, k, v), g)):
        assert rel_err(got, exp) < 1e-4


# -------------------------------------------------------------------------- fallback
@pytest.fixture
def clean_failures():
    dispatch_mod.reset_failures()
    yield
    dispatch_mod.reset_failures()


def test_a_failed_launch_falls_back_once_with_one_warning(monkeypatch, clean_failures):
    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("out of resource: shared memory, Required: 104448\nmore detail")

    with pytest.warns(
        dispatch_mod.KernelFallbackWarning,
        match=r"kernel for \('k', 1\) failed \(RuntimeError: out",
    ):
        assert dispatch_mod.triton_or_reference(("k", 1), broken, lambda: "ref") == "ref"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert dispatch_mod.triton_or_reference(("k", 1), broken, lambda: "ref") == "ref"
    assert len(calls) == 1  # the failing compile is not retried
    assert "shared memory" in dispatch_mod.failed_kernels()[("k", 1)]
    assert dispatch_mod.triton_or_reference(("k", 2), lambda: "tri", lambda: "ref") == "tri"


def test_what_a_fallback_must_not_hide(monkeypatch, clean_failures):
    def raiser(err):
        def fn():
            raise err

        return fn

    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    with pytest.raises(ValueError, match="bad input"):  # the user's problem, named
        dispatch_mod.triton_or_reference("v", raiser(ValueError("bad input")), lambda: 0)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # the reference needs more memory
        dispatch_mod.triton_or_reference("m", raiser(torch.cuda.OutOfMemoryError()), lambda: 0)
    monkeypatch.setenv("MINIFT_KERNELS", "triton")  # forced: tests must see the error
    with pytest.raises(RuntimeError, match="launch"):
        dispatch_mod.triton_or_reference("t", raiser(RuntimeError("launch")), lambda: 0)
    assert dispatch_mod.failed_kernels() == {}


def test_lora_falls_back_to_the_reference(monkeypatch, clean_failures):
    """A forward whose launch fails, and a backward whose launch fails, both give the
    reference's values (dispatch in the default mode, as on a GPU)."""
    import minift.kernels.lora as lora

    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    monkeypatch.setattr(lora, "use_triton", lambda *t: True)

    def fail(*args):
        raise RuntimeError("PTX compilation failed")

    monkeypatch.setattr(lora, "_BACKENDS", {**lora._BACKENDS, "triton": (fail, fail)})
    x, w, a, b = (t.requires_grad_() for t in lora_inputs(11, 21, 13, 3))
    with pytest.warns(dispatch_mod.KernelFallbackWarning) as caught:
        y = lora.lora_linear(x, w, None, a, b, 0.5)
        grads = torch.autograd.grad(y.square().sum(), (x, a, b))
    assert len(caught) == 2  # one for the forward's key, one for the backward's
    y_ref = lora.lora_linear_reference(x, w, None, a, b, 0.5)
    assert rel_err(y, y_ref) < 1e-6
    for got, want in zip(grads, torch.autograd.grad(y_ref.square().sum(), (x, a, b))):
        assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("failing", ["flash_forward", "flash_backward"])
@pytest.mark.parametrize("sparse", [False, True])
def test_attention_falls_back_to_the_reference(monkeypatch, clean_failures, failing, sparse):
    """Either pass may fail alone: the other runs Triton (interpreter), and the saved
    log-sum-exp crosses between base 2 (kernels) and base e (reference) correctly."""
    flash_triton = pytest.importorskip("minift.kernels.flash_triton")
    attention_mod = importlib.import_module("minift.kernels.attention")
    from minift.kernels import attention, bigbird_layout, block_sparse_attention

    if DEVICE == "cpu" and not dispatch_mod.interpreting():
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    monkeypatch.setattr(attention_mod, "use_triton", lambda *t: True)

    def fail(*args, **kwargs):
        raise RuntimeError("triton.runtime.errors.OutOfResources")

    monkeypatch.setattr(flash_triton, failing, fail)
    q, k, v = (torch.randn(1, 2, t, 16, device=DEVICE, requires_grad=True) for t in (30, 41, 41))
    g = torch.randn(1, 2, 30, 16, device=DEVICE)
    if sparse:
        layout = bigbird_layout(48, 16, window=1, n_global=1, n_random=1, seed=1, n_heads=2)
        fn = lambda q, k, v: block_sparse_attention(q, k, v, layout, 16)
        ref = lambda q, k, v: block_sparse_attention_reference(q, k, v, layout, 16)
    else:
        fn, ref = attention, attention_reference
    with pytest.warns(dispatch_mod.KernelFallbackWarning, match="attention"):
        out = fn(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), g)
    want = ref(q, k, v)
    assert rel_err(out, want) < 1e-4
    for got, exp in zip(grads, torch.autograd.grad(want, (q, k, v), g)):
        assert rel_err(got, exp) < 1e-4


def test_inputs_the_kernels_do_not_take_run_the_reference_unless_forced(monkeypatch):
    """Head dims over 128, LoRA ranks over 128, odd block sizes: the reference in the
    default mode (as on a GPU), a named error when Triton is forced."""
    attention_mod = importlib.import_module("minift.kernels.attention")
    import minift.kernels.lora as lora
    from minift.kernels import attention, block_sparse_attention, dense_layout

    monkeypatch.delenv("MINIFT_KERNELS", raising=False)
    monkeypatch.setattr(attention_mod, "use_triton", lambda *t: True)
    monkeypatch.setattr(lora, "use_triton", lambda *t: True)

    def boom(*args, **kwargs):
        raise AssertionError("the Triton path was taken")

    monkeypatch.setattr(lora, "_BACKENDS", {**lora._BACKENDS, "triton": (boom, boom)})
    q = torch.randn(1, 1, 5, 136)
    assert rel_err(attention(q, q, q), attention_reference(q, q, q)) < 1e-6
    x, w, a, b = lora_inputs(4, 9, 7, 130)
    assert rel_err(lora.lora_linear(x, w, None, a, b, 1.0), x @ w.t() + x @ a.t() @ b.t()) < 1e-5
    q = torch.randn(1, 1, 24, 8)
    layout = dense_layout(24, 8)
    want = block_sparse_attention_reference(q, q, q, layout, 8)
    assert rel_err(block_sparse_attention(q, q, q, layout, 8), want) < 1e-6
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    with pytest.raises(ValueError, match="head dims up to 128"):
        attention(torch.randn(1, 1, 5, 136), *[torch.randn(1, 1, 5, 136)] * 2)
