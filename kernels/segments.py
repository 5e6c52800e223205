"""Rows grouped by adapter, for the multi-LoRA kernels (:mod:`.multi_lora`): a stable sort
of the batch's rows by adapter id, and the cut of each adapter's run of rows into row tiles
that never span two adapters (Punica's segments, Chen et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Segments:
    """Rows grouped by adapter: ``order`` lists every row index sorted by adapter (rows with
    no adapter, id -1, first); the rows of adapter l are order[starts[l]:starts[l + 1]].

    Built and cut into tiles on the rows' device without reading anything back to the host:
    a host round trip per call (``.tolist()``, ``nonzero``) stalls the GPU's queue, and on
    the H100 the kernel's time hardly depended on its work (0.8 ms for a 0.27 GFLOP term).
    """

    order: torch.Tensor  # (M,) int32
    starts: torch.Tensor  # (L + 1,) int32
    _tiles: dict = field(default_factory=dict, repr=False, compare=False)

    def tiles(self, block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(adapter, first, end) of every BLOCK_M-row tile; a tile never spans two adapters.

        The number of tiles depends on the data, so the list has a fixed length that bounds
        it, ceil(M / BLOCK_M) + L (each adapter adds at most one partial tile), and the
        tiles past the real ones are empty (first = end): their programs do nothing.
        """
        if block_m not in self._tiles:
            n_adapters = self.starts.numel() - 1
            starts = self.starts.long()
            per = (starts[1:] - starts[:-1] + block_m - 1) // block_m  # tiles per adapter
            last = torch.cumsum(per, 0)  # one past each adapter's last tile
            bound = -(-self.order.numel() // block_m) + n_adapters
            t = torch.arange(bound, device=self.order.device)
            adapter = torch.searchsorted(last, t, right=True)  # the adapter tile t is in
            real = adapter < n_adapters
            adapter = adapter.clamp(max=max(n_adapters - 1, 0))
            first = starts[adapter] + (t - last[adapter] + per[adapter]) * block_m
            end = torch.minimum(first + block_m, starts[adapter + 1])
            first = torch.where(real, first, end)
            self._tiles[block_m] = tuple(v.to(torch.int32) for v in (adapter, first, end))
        return self._tiles[block_m]


def segments(ids: torch.Tensor, n_adapters: int) -> Segments:
    """Sort rows by adapter (stable, so a segment keeps the batch's row order); adapter l's
    segment starts at the first sorted id >= l."""
    sorted_ids, order = torch.sort(ids, stable=True)
    bounds = torch.arange(n_adapters + 1, device=ids.device, dtype=sorted_ids.dtype)
    starts = torch.searchsorted(sorted_ids, bounds)
    return Segments(order.to(torch.int32), starts.to(torch.int32))
