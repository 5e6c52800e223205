"""Block-sparse flash attention: visit only the key blocks a layout allows.

Attention restricted to a block layout (:mod:`minift.kernels.layouts`) costs time in
proportion to the layout's density: a query tile never loads, multiplies or masks a key
block its layout row leaves out. The layout is turned into per-block index lists (:mod:`.sparse_index`).

Queries and keys are indexed by absolute position (queries are the last Tq of the Tk
positions), so the layout is square, (n_heads or 1, nb, nb) with nb = ceil(Tk / block).
"""

from __future__ import annotations

import math

import torch

from .attention import (
    FlashAttentionFunction,
    attention_reference,
    check_qkv,
    triton_takes,
    unit_stride,
)
from .dispatch import kernel_mode
from .layouts import layout_to_mask
from .sparse_index import SparseIndex, block_index, index_lists

__all__ = [
    "SparseIndex",
    "block_index",
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "check_layout",
    "index_lists",
]


def check_layout(layout: torch.Tensor, n_heads: int, tk: int, block_size: int) -> torch.Tensor:
    """Validate a layout against (H, Tk); return it as (1 or H, nb, nb) bool."""
    if layout.dtype != torch.bool:
        raise ValueError(f"layout must be a bool tensor, got {layout.dtype}")
    if layout.dim() == 2:
        layout = layout.unsqueeze(0)
    nb = math.ceil(tk / block_size) if block_size > 0 else -1
    if (
        block_size < 1
        or layout.dim() != 3
        or layout.shape[0] not in (1, n_heads)
        or layout.shape[1:] != (nb, nb)
    ):
        raise ValueError(
            f"layout {tuple(layout.shape)} does not match {tk} keys in blocks of {block_size}: "
            f"expected (1 or {n_heads} heads, {nb}, {nb})"
        )
    return layout


def block_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: torch.Tensor,
    block_size: int,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """The definition: dense attention under the layout's token mask (and causal rule)."""
    layout = check_layout(layout, q.shape[1], k.shape[2], block_size)
    mask = layout_to_mask(layout, block_size, q.shape[2], k.shape[2]).to(q.device)
    return attention_reference(q, k, v, causal=causal, scale=scale, mask=mask)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: torch.Tensor,
    block_size: int,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Flash attention over the key blocks ``layout`` allows, forward and backward.

    q (B, H, Tq, D), k, v (B, H, Tk, D) with Tk >= Tq; ``layout`` bool (H or 1, nb, nb),
    nb = ceil(Tk / block_size), rows and columns indexed by absolute block position.
    ``causal`` additionally applies the end-aligned causal rule of
    :func:`minift.kernels.attention`. Query rows that see no key output zeros. The Triton
    kernel needs block_size a power of two >= 16; the reference takes any (and runs for
    other block sizes unless ``MINIFT_KERNELS=triton``).
    """
    triton = triton_takes(q, k, v)
    check_qkv(q, k, v, triton)
    layout = check_layout(layout, q.shape[1], k.shape[2], block_size).to(q.device)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    pow2 = block_size >= 16 and not block_size & (block_size - 1)
    triton = triton and (pow2 or kernel_mode() == "triton")  # else the reference, unless forced
    if triton and q.numel() > 0:
        if not pow2:
            raise ValueError(
                f"block_size {block_size}: the Triton kernel needs a power of two >= 16"
            )
        index = block_index(layout, block_size, q.shape[2], k.shape[2], causal)
        q, k, v = unit_stride(q), unit_stride(k), unit_stride(v)
        tq, tk = q.shape[2], k.shape[2]
        mask = lambda: layout_to_mask(layout, block_size, tq, tk)  # only if a launch fails
        return FlashAttentionFunction.apply(q, k, v, bool(causal), scale, (mask, index), "triton")
    mask = layout_to_mask(layout, block_size, q.shape[2], k.shape[2])
    return FlashAttentionFunction.apply(q, k, v, bool(causal), scale, (mask, None), "torch")
