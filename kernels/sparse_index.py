"""Per-block index lists of a block layout: what the sparse Triton kernels read.

- ``cols[h, i, :col_counts[h, i]]``: the key blocks query block i visits (forward, dQ);
- ``rows[h, j, :row_counts[h, j]]``: the query blocks that see key block j (dK, dV), the
  lists of the transposed layout, so the backward needs no atomics either.

They are built by a stable sort on the GPU, with no host synchronisation, in
O(heads x blocks^2) memory: a padded form of CSR that needs no prefix sums. This module
sits below both :mod:`.block_sparse` (which builds the lists) and :mod:`.flash_triton`
(which launches the kernels on them), so neither imports the other.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


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
