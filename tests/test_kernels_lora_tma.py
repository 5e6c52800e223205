"""The LoRA layer's other routes: the TMA kernel (Triton's interpreter emulates tensor
descriptors on the CPU; fp32 and fp16, as its dot reads bf16 descriptor tiles as raw bits)
and the library route the tuner times beside the kernels."""

import pytest
import torch
from minift.kernels import lora_linear, lora_linear_reference
from minift.kernels.buffers import poisoned_outputs
from minift.kernels.dispatch import failed_kernels, reset_failures
from minift.kernels.launch import last_launch

lora_triton = pytest.importorskip("minift.kernels.lora_triton")
from minift.kernels.lora_tma_triton import lora_tma, tma_ready  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
TILES = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)
if DEVICE == "cuda":  # the GPU's 16-bit tiles; fp32 halves K
    TILES = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=3)


def rel_err(out, ref) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def operands(m, k, n, r, dtype, gen):
    rand = lambda *s: torch.randn(*s, generator=gen).to(DEVICE, dtype)  # noqa: E731
    return rand(m, k), rand(n, k) / k**0.5, rand(n), rand(r, k) / k**0.5, rand(n, r)


def definition(x, w_t, bias, a_t, b_t, s):
    x, w_t, a_t, b_t = (t.double() for t in (x, w_t, a_t, b_t))
    y = x @ w_t + s * (x @ a_t) @ b_t
    return y if bias is None else y + bias.double()


# Rows, K and N that are not multiples of the tiles, with 16-byte aligned rows (TMA's rule):
# fp32 needs multiples of 4 elements, fp16 of 8.
CASES = [
    (37, 36, 20, 5, torch.float32),
    (70, 40, 56, 3, torch.float32),
    (33, 64, 24, 16, torch.float16),
]
if DEVICE == "cuda":  # each dtype is two compiles on a GPU (and gpu-check has a time cap)
    CASES = [CASES[1], (300, 520, 264, 16, torch.bfloat16)]


@pytest.mark.skipif(DEVICE == "cuda" and not HOPPER, reason="TMA needs sm_90 or later")
@pytest.mark.parametrize("persistent", [1, 0])
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "x".join(map(str, c[:4])) + "-" + str(c[4]).removeprefix("torch.")
)
def test_tma_kernel_matches_the_definition_in_both_weight_layouts(case, persistent):
    """The forward's W^T view (the weight K-contiguous) and the dx pass's W (N-contiguous):
    each product, bias and rank-r term, against float64; u = x A^T is returned as well."""
    m, k, n, r, dtype = case
    gen = torch.Generator().manual_seed(m + persistent)
    x, w, bias, a, b = operands(m, k, n, r, dtype, gen)
    cfg = {**TILES, "BLOCK_R": 16, "TMA": 1, "PERSISTENT": persistent}
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    with poisoned_outputs():  # Y starts as NaN: every element must be written
        y, u = lora_triton.fused_lora(x, w.t(), bias, a.t(), b.t(), 0.75, **cfg)
    assert rel_err(y, definition(x, w.t(), bias, a.t(), b.t(), 0.75)) < tol
    assert rel_err(u, x.double() @ a.double().t()) < tol
    g = torch.randn(m, n, generator=gen).to(DEVICE, dtype)  # dx = g W + s (g B) A
    dx, gb = lora_triton.fused_lora(g, w, None, b, a, 0.75, **cfg)
    assert rel_err(dx, definition(g, w, None, b, a, 0.75)) < tol


@pytest.mark.skipif(DEVICE == "cuda" and not HOPPER, reason="TMA needs sm_90 or later")
def test_lora_linear_forward_and_backward_through_the_tma_route(monkeypatch):
    """The whole layer with the TMA route as the fixed table: forward, the dx pass, and the
    thin dA, dB products (the plain matmul kernel, which takes no route keys)."""
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    monkeypatch.setattr(lora_triton, "_config", lambda dtype: {**TILES, "TMA": 1, "PERSISTENT": 1})
    reset_failures()
    gen = torch.Generator().manual_seed(11)
    x, w, bias, a, b = operands(45, 36, 28, 4, torch.float32, gen)
    x, a, b, bias = (t.requires_grad_() for t in (x, a, b, bias))
    g = torch.randn(45, 28, generator=gen).to(DEVICE)
    y = lora_linear(x, w, bias, a, b, 0.5)
    grads = torch.autograd.grad(y, (x, a, b, bias), g)
    want = lora_linear_reference(x, w, bias, a, b, 0.5)
    grads_ref = torch.autograd.grad(want, (x, a, b, bias), g)
    assert failed_kernels() == {}  # no launch fell back to the reference
    assert last_launch("fused_lora").get("TMA") == 1
    assert rel_err(y, want) < 1e-5
    for got, ref in zip(grads, grads_ref):
        assert rel_err(got, ref) < 1e-5


def test_operands_tma_cannot_describe_are_named():
    x = torch.randn(8, 36, device=DEVICE)
    w_t = torch.randn(20, 36, device=DEVICE).t()
    if DEVICE == "cpu":
        from minift.kernels.dispatch import interpreting

        if not interpreting():
            assert "CUDA" in tma_ready(x, w_t, 20)
            return
    elif not HOPPER:
        assert "sm_90" in tma_ready(x, w_t, 20)
        return
    assert tma_ready(x, w_t, 20) is None
    assert "16-byte" in tma_ready(torch.randn(8, 37, device=DEVICE)[:, :36], w_t, 20)
    assert "16 bytes" in tma_ready(x, torch.randn(18, 36, device=DEVICE).t(), 18)
    assert "16-byte aligned dimension" in tma_ready(
        x, torch.randn(21, 37, device=DEVICE)[:20, :36].t(), 20
    )
    with pytest.raises(ValueError, match="TMA LoRA kernel cannot run: .*16 bytes"):
        lora_tma(x, torch.randn(18, 36, device=DEVICE).t(), None, torch.randn(36, 2, device=DEVICE),
                 torch.randn(2, 18, device=DEVICE), 1.0, {**TILES, "BLOCK_R": 16})  # fmt: skip
    with pytest.raises(ValueError, match="at most 256"):
        lora_tma(x, w_t, None, torch.randn(36, 2, device=DEVICE), torch.randn(2, 20, device=DEVICE),
                 1.0, {**TILES, "BLOCK_M": 512, "BLOCK_R": 16})  # fmt: skip


@pytest.mark.parametrize("bias", [True, False])
def test_the_library_route_returns_the_same_outputs(bias):
    """``UNFUSED=1``: cuBLAS for x W^T (+ bias) and the thin u, then y += s u B^T in place."""
    gen = torch.Generator().manual_seed(5)
    x, w, b_, a, b = operands(29, 45, 31, 3, torch.float32, gen)
    bias_ = b_ if bias else None
    y, u = lora_triton.fused_lora(x, w.t(), bias_, a.t(), b.t(), 0.5, UNFUSED=1)
    assert rel_err(y, definition(x, w.t(), bias_, a.t(), b.t(), 0.5)) < 1e-6
    assert rel_err(u, x.double() @ a.double().t()) < 1e-6
    assert last_launch("fused_lora")["UNFUSED"] == 1


def test_the_environment_switch_turns_tma_off(monkeypatch):
    """MINIFT_TMA=0 (set by make gpu-check when its TMA probe fails): no TMA candidate is
    offered and a forced launch is refused, naming the switch."""
    from minift.kernels.tma import TMA_ENV

    x, w_t = torch.randn(8, 32, device=DEVICE), torch.randn(32, 16, device=DEVICE)
    monkeypatch.setenv(TMA_ENV, "0")
    assert f"{TMA_ENV}=0" in tma_ready(x, w_t, 16)
    with pytest.raises(ValueError, match=f"switched off .{TMA_ENV}=0"):
        lora_tma(x, w_t, None, torch.randn(32, 2, device=DEVICE), torch.randn(2, 16, device=DEVICE),
                 1.0, {**TILES, "BLOCK_R": 16, "TMA": 1})  # fmt: skip
