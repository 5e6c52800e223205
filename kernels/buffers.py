"""Output buffers for Triton launches, poisonable from tests.

A kernel that forgets to write part of its output (a mask one element too tight, a grid
one program short) returns whatever ``torch.empty`` happened to hold, often zeros, and a
test comparing against a reference whose true value is near zero cannot tell. Every
buffer a minift Triton kernel writes is allocated here, so a test can wrap a call in
``poisoned_outputs()`` and have all of them filled with NaN first: an element the kernel
never wrote then stays NaN and fails the comparison.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_poison = False


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    """Within this block, every kernel output buffer starts filled with NaN."""
    global _poison
    previous, _poison = _poison, True
    try:
        yield
    finally:
        _poison = previous


def output_buffer(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """An uninitialised tensor for a kernel to overwrite completely (NaN when poisoning)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if _poison:
        out.fill_(float("nan"))
    return out
