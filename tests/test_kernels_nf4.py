"""The NF4 linear kernel against dequantize-then-matmul (Triton through the interpreter on
CPU), at shapes that are not multiples of the 16-wide tiles or of the 64-value blocks (so
blocks straddle rows of W and the packed bytes straddle rows when K is odd)."""

import pytest
import torch
from minift.kernels.nf4 import (
    NF4LinearFunction,
    dequantize_reference,
    nf4_linear,
    nf4_linear_reference,
)

from minift.quant import nf4_code, quantize_nf4

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def quantized(n, k, seed):
    torch.manual_seed(seed)
    q = quantize_nf4(torch.randn(n, k) * 0.05, double_quant=True)
    return q, q.packed.to(DEVICE), q.block_scales().to(DEVICE), nf4_code().float().to(DEVICE)


@pytest.mark.parametrize("m, n, k", [(1, 37, 45), (5, 20, 64), (17, 33, 70)])
def test_kernel_equals_dequantize_then_matmul(monkeypatch, m, n, k):
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    q, packed, scales, code = quantized(n, k, m + n + k)
    # the dequantization matches minift.quant's own
    assert torch.equal(dequantize_reference(packed, scales, code, (n, k)).cpu(), q.dequantize())
    x = torch.randn(m, k, device=DEVICE)
    bias = torch.randn(n, device=DEVICE)
    got = nf4_linear(x, packed, scales, code, (n, k), bias)
    want = nf4_linear_reference(x.double(), packed, scales, code, (n, k), bias.double())
    # fp32 dot products of k <= 70 terms of size ~0.1: a few float32 ulps of the sums
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_backward_gradcheck_float64():
    q, packed, scales, code = quantized(7, 9, 0)
    x = torch.randn(3, 9, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def f(x, bias):
        return NF4LinearFunction.apply(x, packed, scales, code, (7, 9), bias, "torch")

    assert torch.autograd.gradcheck(f, (x, bias))


def test_qlora_layer_uses_it_and_bad_shapes_are_named():
    q, packed, scales, code = quantized(4, 6, 1)
    with pytest.raises(ValueError, match="x has 5 features but the NF4 weight expects 6"):
        nf4_linear(torch.randn(2, 5, device=DEVICE), packed, scales, code, (4, 6))
    with pytest.raises(ValueError, match="do not fit a 4x7 weight"):
        nf4_linear(torch.randn(2, 7, device=DEVICE), packed, scales, code, (4, 7))


@pytest.mark.parametrize("n, k", [(1, 1), (3, 5), (37, 45), (20, 64), (33, 70)])
def test_the_dequantize_kernel_equals_the_reference(n, k):
    """One Triton pass over the packed bytes gives the reference's W, bit for bit in fp32
    (the same product of two fp32 numbers), at odd element counts (a half-used last byte)."""
    pytest.importorskip("triton")
    from minift.kernels.dispatch import interpreting

    if DEVICE == "cpu" and not interpreting():
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    from minift.kernels.nf4_triton import nf4_dequantize

    _, packed, scales, code = quantized(n, k, n * k)
    want = dequantize_reference(packed, scales, code, (n, k))
    assert torch.equal(nf4_dequantize(packed, scales, code, (n, k), torch.float32), want)
    half = nf4_dequantize(packed, scales, code, (n, k), torch.bfloat16)
    # one bf16 unit in the last place (2^-8 to 2^-7 relative): the GPU rounds to nearest,
    # Triton's interpreter truncates
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), want, rtol=2.0**-7, atol=0)


def test_the_triton_backward_and_the_unfused_route_match_the_reference(monkeypatch):
    """The Triton backend's backward (W decoded by the Triton pass) and the tuner's
    ``unfused`` candidate (decode, then the library matmul) give the reference's outputs."""
    pytest.importorskip("triton")
    from minift.kernels.dispatch import interpreting

    if DEVICE == "cpu" and not interpreting():
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    from minift.kernels.nf4_triton import nf4_matmul

    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    _, packed, scales, code = quantized(29, 45, 7)
    x = torch.randn(11, 45, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.randn(29, dtype=torch.float64, device=DEVICE, requires_grad=True)
    g = torch.randn(11, 29, dtype=torch.float64, device=DEVICE)
    got = NF4LinearFunction.apply(x, packed, scales, code, (29, 45), bias, "triton")
    dx, db = torch.autograd.grad(got, [x, bias], g)
    want = nf4_linear_reference(x, packed, scales, code, (29, 45), bias)
    dx_ref, db_ref = torch.autograd.grad(want, [x, bias], g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(db, db_ref, rtol=1e-12, atol=1e-12)
    unfused = nf4_matmul(x.detach(), packed, scales, code, (29, 45), bias.detach(), UNFUSED=1)
    torch.testing.assert_close(unfused, want.detach(), rtol=1e-12, atol=1e-12)
