r"""A linear layer over a 4-bit NF4 weight, dequantized inside the matmul (Dettmers et al.
2023; the format is minift.quant.nf4).

For x (M, K) and a frozen weight W (N, K) stored as 4-bit codes, two per byte, in blocks
of 64 consecutive elements of the row-major flattened W, each block with its scale c:

    W[n, k] = code[idx(f)] * c[f // 64],   f = n K + k,
    idx(f)  = high nibble of packed[f // 2] if f is even, else the low nibble,
    y       = x W^T + b.

Dequantizing first writes the whole (N, K) weight in the compute dtype and reads it back:
four times the bytes of the NF4 weight in bf16, eight in fp32. The Triton kernel instead
decodes each (BLOCK_K, BLOCK_N) tile of W^T in registers from the packed bytes and the
block scales, right before its tl.dot, so the weight crosses memory at 4.13 bits a value.

Backward: W is frozen (no gradient); dL/dx = g W, computed by dequantizing W once (one
Triton pass on the Triton backend) and a library matmul. The scales passed in are the first
level's, already dequantized from their 8-bit second level (a few floats per 64 weights).
"""

from __future__ import annotations

import torch

from .dispatch import triton_or_reference, use_triton


def dequantize_reference(packed, scales, code, shape) -> torch.Tensor:
    """W (N, K) in fp32 from the packed codes and the block scales."""
    n, k = shape
    idx = torch.stack([packed >> 4, packed & 0xF], dim=1).flatten()[: n * k].long()
    f = torch.arange(n * k, device=packed.device)
    return (code.float()[idx] * scales.float()[f // 64]).view(n, k)


def nf4_linear_reference(x, packed, scales, code, shape, bias=None) -> torch.Tensor:
    """The definition: dequantize, then x W^T + b (differentiated by autograd)."""
    w = dequantize_reference(packed, scales, code, shape).to(x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


def _forward_triton(x, packed, scales, code, shape, bias):
    from .nf4_triton import nf4_matmul

    return nf4_matmul(x, packed, scales, code, shape, bias)


def _dequantize(packed, scales, code, shape, dtype, backend: str) -> torch.Tensor:
    """W (N, K) in ``dtype``: one Triton pass on the Triton backend, else the reference."""
    if backend == "triton":
        from .nf4_triton import nf4_dequantize

        return nf4_dequantize(packed, scales, code, shape, dtype)
    return dequantize_reference(packed, scales, code, shape).to(dtype)


class NF4LinearFunction(torch.autograd.Function):
    """y = x dequant(W)^T + b, with W frozen: gradients for x (and a trainable bias) only."""

    @staticmethod
    def forward(ctx, x, packed, scales, code, shape, bias, backend="torch"):
        if backend == "triton":
            key = ("nf4_linear", x.dtype, bias is not None)
            y = triton_or_reference(
                key,
                lambda: _forward_triton(x, packed, scales, code, shape, bias),
                lambda: nf4_linear_reference(x, packed, scales, code, shape, bias),
            )
        else:
            y = nf4_linear_reference(x, packed, scales, code, shape, bias)
        ctx.save_for_backward(packed, scales, code)
        ctx.shape, ctx.has_bias, ctx.backend = shape, bias is not None, backend
        return y

    @staticmethod
    def backward(ctx, g):
        packed, scales, code = ctx.saved_tensors
        dx = g @ _dequantize(packed, scales, code, ctx.shape, g.dtype, ctx.backend)
        db = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[5] else None
        return dx, None, None, None, None, db, None


def nf4_linear(x, packed, scales, code, shape, bias=None) -> torch.Tensor:
    """x (..., K) times an NF4 weight of ``shape`` (N, K), plus bias: Triton on CUDA (or
    when MINIFT_KERNELS=triton), the dequantize-then-matmul reference elsewhere."""
    n, k = shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features but the NF4 weight expects {k}")
    if packed.numel() != (n * k + 1) // 2 or scales.numel() != -(-n * k // 64):
        raise ValueError(
            f"packed ({packed.numel()}) and scales ({scales.numel()}) do not fit a {n}x{k} weight"
        )
    if torch.is_autocast_enabled(x.device.type):  # compute in the autocast dtype, as F.linear
        x = x.to(torch.get_autocast_dtype(x.device.type))
    if bias is not None:
        bias = bias.to(x.dtype)
    x2 = x.reshape(-1, k)
    triton = use_triton(x2, packed, scales) and x2.numel() > 0
    with torch.autocast(x.device.type, enabled=False):
        y = NF4LinearFunction.apply(x2, packed, scales, code, tuple(shape), bias,
                                    "triton" if triton else "torch")  # fmt: skip
    return y.reshape(*x.shape[:-1], n)
