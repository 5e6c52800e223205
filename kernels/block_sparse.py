"""Block-sparse flash attention: visit only the key blocks a layout allows.

Attention restricted to a block layout (:mod:`minift.kernels.layouts`) costs time in
proportion to the layout's density: a query tile never loads, multiplies or masks a key
block its layout row leaves out. The layout is turned into per-block index lists:

- ``cols[h, i, :col_counts[h, i]]``: the key blocks query block i visits (forward, dQ);
- ``rows[h, j, :row_counts[h, j]]``: the query blocks that see key block j (dK, dV), the
  lists of the transposed layout, so the backward needs no atomics either.

They are built by a stable sort on the GPU, with no host synchronisation, in
O(heads x blocks^2) memory: a padded form of CSR that needs no prefix sums.

Queries and keys are indexed by absolute position (queries are the last Tq of the Tk
positions), so the layout is square, (n_heads or 1, nb, nb) with nb = ceil(Tk / block).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .attention import FlashAttentionFunction, attention_reference, check_qkv, unit_stride
from .dispatch import use_triton
from .layouts import layout_to_mask


class SparseIndex(NamedTuple):
    """Per-block lists of a block layout, as the Triton kernels read them."""

    cols: torch.Tensor  # (LH, nb, nb) int32, active key blocks of each query block first
    col_counts: torch.Tensor  # (LH, nb) int32
    rows: torch.Tensor  # (LH, nb, nb) int32, query blocks seeing each key block first
    row_counts: torch.Tensor  # (LH, nb) int32
    block_size: int


def index_lists(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, counts) of the True entries of each row of ``active`` (..., n), int32:
    ``indices[..., :counts]`` lists them in increasing order, the rest is padding."""
    # A stable sort of "not active" moves the active indices to the front, in order.
    order = torch.argsort((~active).to(torch.uint8), dim=-1, stable=True)
    return order.to(torch.int32).contiguous(), active.sum(-1, dtype=torch.int32).contiguous()


def block_index(
    layout: torch.Tensor, block_size: int, tq: int, tk: int, causal: bool
) -> SparseIndex:
    """Index lists of ``layout`` after dropping blocks that could only hold masked pairs:
    blocks above the diagonal (causal) and query blocks before the first query."""
    active = layout.clone()
    nb = active.shape[-1]
    if causal:
        active &= torch.ones(nb, nb, dtype=torch.bool, device=active.device).tril()
    active[:, : (tk - tq) // block_size] = False
    cols, col_counts = index_lists(active)
    rows, row_counts = index_lists(active.transpose(1, 2))
    return SparseIndex(cols, col_counts, rows, row_counts, block_size)


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
    kernel needs block_size a power of two >= 16; the reference takes any.
    """
    triton = use_triton(q, k, v)
    check_qkv(q, k, v, triton)
    layout = check_layout(layout, q.shape[1], k.shape[2], block_size).to(q.device)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if triton and q.numel() > 0:
        if block_size < 16 or block_size & (block_size - 1):
            raise ValueError(
                f"block_size {block_size}: the Triton kernel needs a power of two >= 16"
            )
        index = block_index(layout, block_size, q.shape[2], k.shape[2], causal)
        q, k, v = unit_stride(q), unit_stride(k), unit_stride(v)
        return FlashAttentionFunction.apply(q, k, v, bool(causal), scale, (None, index), "triton")
    mask = layout_to_mask(layout, block_size, q.shape[2], k.shape[2])
    return FlashAttentionFunction.apply(q, k, v, bool(causal), scale, (mask, None), "torch")
