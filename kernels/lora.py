r"""The LoRA linear layer as one fused kernel (Hu et al. 2021, "LoRA: Low-Rank Adaptation").

Forward, for x (M, K) (leading dims flattened), frozen W (N, K), bias b (N,), adapters
A (r, K) and B (N, r), and s = alpha / r:

    y = x W^T + b + s (x A^T) B^T.

Written as two matmuls plus an elementwise add, eager PyTorch reads x twice and writes
and re-reads an (M, N) temporary for the low-rank term. The Triton kernel computes
u = x A^T from the same x tiles as x W^T and adds s u B^T in the epilogue, so the only
extra memory traffic is the (M, r) side product u, saved for the backward.

Backward. With g = dL/dy and u = x A^T, each output element is
y_mn = sum_k x_mk W_nk + b_n + s sum_j u_mj B_nj, so

    dL/dx = g W + s (g B) A          since dy_mn/dx_mk = W_nk + s sum_j B_nj A_jk,
    dL/dW = g^T x,   dL/db = sum_m g_m,
    dL/dB = s g^T u                  since dy_mn/dB_nj = s u_mj,
    dL/dA = s (g B)^T x              since dL/du = s g B and du_mj/dA_jk = x_mk.

Every intermediate is rank-r: u and g B are (M, r); no (M, N) or (N, K) product of the
adapters (like B A) is ever formed. dW and db are computed only when they require grad,
which for LoRA's frozen base they do not, saving the backward's largest matmul.
"""

from __future__ import annotations

import contextlib

import torch

from .dispatch import kernel_mode, triton_or_reference, use_triton
from .lora_library import lora_forward_library

MAX_TRITON_RANK = 128  # BLOCK_R's cap in lora_triton; higher ranks take the reference
# The kernels accumulate in float32: float64 inputs take the reference (in the default
# mode) rather than silently losing precision.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def lora_linear_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """The definition, y = x W^T + b + s (x A^T) B^T, differentiated by autograd."""
    y = x @ weight.t() + scaling * (x @ lora_A.t()) @ lora_B.t()
    return y if bias is None else y + bias


def _forward_torch(x, weight, bias, lora_A, lora_B, scaling):
    """The fused forward in PyTorch: addmm accumulates in place, no (M, N) temporary."""
    return lora_forward_library(x, weight.t(), bias, lora_A.t(), lora_B.t(), scaling)


def _backward_torch(g, x, weight, lora_A, lora_B, u, scaling, needs):
    """The gradients of the module docstring, in PyTorch; ``needs`` = (x, W, b, A, B)."""
    gb = g @ lora_B  # (M, r)
    dx = torch.addmm(g @ weight, gb, lora_A, alpha=scaling) if needs[0] else None
    dw = g.t() @ x if needs[1] else None
    db = g.sum(0) if needs[2] else None
    da = scaling * (gb.t() @ x) if needs[3] else None
    dB = scaling * (g.t() @ u) if needs[4] else None
    return dx, dw, db, da, dB


def _forward_triton(x, weight, bias, lora_A, lora_B, scaling):
    from .lora_triton import fused_lora

    return fused_lora(x, weight.t(), bias, lora_A.t(), lora_B.t(), scaling)


def _backward_triton(g, x, weight, lora_A, lora_B, u, scaling, needs):
    """dx and gB = g B in one fused pass (the forward kernel on transposed weights)."""
    from .lora_triton import fused_lora, matmul
    from .triton_utils import dot_tile

    r = lora_A.shape[0]
    # dx = g W + s (g B) A: the forward's Y = X Wt + s (X At) Bt with X=g, Wt=W, At=B, Bt=A.
    dx = gb = None
    if needs[0]:
        dx, gb = fused_lora(g, weight, None, lora_B, lora_A, scaling, store_xa=needs[3])
    elif needs[3]:
        gb, _ = matmul(g, lora_B, BLOCK_N=dot_tile(r, 128))
    dw = db = da = dB = None
    if needs[1] or needs[2]:  # dW = g^T x, with db = row sums of g^T on the side
        dw, db = matmul(g.t(), x, out_dtype=weight.dtype, row_sums=needs[2])
        dw = dw if needs[1] else None
    if needs[3]:  # dA = s (gB)^T x: a short (r, K) output, r padded to a 16-row tile
        da, _ = matmul(gb.t(), x, scaling, out_dtype=lora_A.dtype, BLOCK_M=dot_tile(r, 128))
    if needs[4]:  # dB = s g^T u
        dB, _ = matmul(g.t(), u, scaling, out_dtype=lora_B.dtype, BLOCK_N=dot_tile(r, 128))
    return dx, dw, db, da, dB


_BACKENDS = {
    "torch": (_forward_torch, _backward_torch),
    "triton": (_forward_triton, _backward_triton),
}


class LoRALinearFunction(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T with the hand-derived backward of the module docstring.

    ``backend`` is "torch" (the reference autograd Function, checked by gradcheck) or
    "triton" (the fused kernels). x must be 2-D here; :func:`lora_linear` flattens.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling, backend="torch"):
        args = (x, weight, bias, lora_A, lora_B, scaling)
        forward, _ = _BACKENDS[backend]
        if backend == "triton":  # a failed launch falls back (dispatch.triton_or_reference)
            key = ("lora_linear", x.dtype, lora_A.shape[0], bias is not None)
            y, u = triton_or_reference(key, lambda: forward(*args), lambda: _forward_torch(*args))
        else:
            y, u = forward(*args)
        ctx.save_for_backward(x, weight, lora_A, lora_B, u)
        ctx.scaling, ctx.backend = scaling, backend
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, lora_A, lora_B, u = ctx.saved_tensors
        args = (g.contiguous(), x, weight, lora_A, lora_B, u, ctx.scaling, ctx.needs_input_grad[:5])
        _, backward = _BACKENDS[ctx.backend]
        if ctx.backend == "triton":
            key = ("lora_linear backward", x.dtype, lora_A.shape[0], ctx.needs_input_grad[:5])
            grads = triton_or_reference(
                key, lambda: backward(*args), lambda: _backward_torch(*args)
            )
        else:
            grads = backward(*args)
        return (*grads, None, None)


def _check(x, weight, bias, lora_A, lora_B) -> None:
    n, k = weight.shape
    r = lora_A.shape[0]
    if x.shape[-1] != k:
        raise ValueError(
            f"x has {x.shape[-1]} features but weight expects {k} (weight {tuple(weight.shape)})"
        )
    if lora_A.shape != (r, k):
        raise ValueError(f"lora_A must be (r, in_features) = (r, {k}), got {tuple(lora_A.shape)}")
    if lora_B.shape != (n, r):
        raise ValueError(
            f"lora_B must be (out_features, r) = ({n}, {r}), got {tuple(lora_B.shape)}"
        )
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be (out_features,) = ({n},), got {tuple(bias.shape)}")
    dtypes = {t.dtype for t in (x, weight, bias, lora_A, lora_B) if t is not None}
    if len(dtypes) > 1 and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f"x, weight, bias, lora_A and lora_B must share one dtype, got {dtypes}")


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """LoRA linear layer y = x W^T + b + scaling (x A^T) B^T, fused on CUDA.

    x: (..., in_features); weight: (out, in); bias: (out,) or None; lora_A: (r, in);
    lora_B: (out, r). Returns (..., out). Under autocast the inputs are cast to the autocast
    dtype first, as ``F.linear`` would. Runs the Triton kernels or the PyTorch reference
    according to :func:`minift.kernels.dispatch.use_triton` (ranks above 128 take the
    reference); a Triton launch that fails falls back to the reference with a warning.
    """
    _check(x, weight, bias, lora_A, lora_B)
    autocasting = torch.is_autocast_enabled(x.device.type)
    if autocasting:
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight, lora_A, lora_B = (t.to(dtype) for t in (x, weight, lora_A, lora_B))
        bias = bias.to(dtype) if bias is not None else None
    empty = x.numel() == 0  # no programs to launch: the reference handles it
    # Ranks past the kernel's tile take the reference, unless Triton is forced (then the
    # launcher's error names the limit).
    forced = kernel_mode() == "triton"
    fits = (lora_A.shape[0] <= MAX_TRITON_RANK and x.dtype in SUPPORTED_DTYPES) or forced
    triton = use_triton(x, weight, bias, lora_A, lora_B) and not empty and fits
    if triton and x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"the Triton LoRA kernel takes float16, bfloat16 or float32, not {x.dtype} "
            "(MINIFT_KERNELS=reference or unset runs the PyTorch reference)"
        )
    backend = "triton" if triton else "torch"
    # Autocast off inside (the inputs are cast above); entering the context costs a few
    # microseconds a call, so only when it is on.
    with torch.autocast(x.device.type, enabled=False) if autocasting else contextlib.nullcontext():
        y = LoRALinearFunction.apply(x.reshape(-1, x.shape[-1]), weight, bias, lora_A, lora_B,
                                     float(scaling), backend)  # fmt: skip
    return y.reshape(*x.shape[:-1], weight.shape[0])
