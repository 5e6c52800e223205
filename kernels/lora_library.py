"""The LoRA linear forward through the library's matmuls (cuBLAS on a GPU), in place.

    y = x w_t + bias + s (x a_t) b_t,   u = x a_t

``addmm`` writes x w_t (+ bias) into y, and ``addmm_`` adds s u b_t into it: no (M, N)
temporary for the low-rank term, which eager LoRA writes and reads back. It is the PyTorch
backend of :class:`minift.kernels.lora.LoRALinearFunction` and the ``unfused`` route the
tuner times beside the Triton kernels (:func:`minift.kernels.lora_triton.fused_lora`).
Operands as the kernels take them: any strides, so transposed views cost nothing.
"""

from __future__ import annotations

import torch


def lora_forward_library(
    x: torch.Tensor,
    w_t: torch.Tensor,
    bias: torch.Tensor | None,
    a_t: torch.Tensor,
    b_t: torch.Tensor,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, u) for x (M, K), w_t (K, N), bias (N,) or None, a_t (K, R), b_t (R, N)."""
    u = torch.mm(x, a_t)
    y = torch.mm(x, w_t) if bias is None else torch.addmm(bias, x, w_t)
    return y.addmm_(u, b_t, alpha=scaling), u
