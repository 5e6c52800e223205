"""Seeds that make a run reproducible and resumable.

A batch is a pure function of (seed, step, micro-step): a run stopped at step k and resumed
draws the same rows as one that never stopped, and grad_accum micro-batches of n rows draw
the same rows whether or not they are split across processes. The step and micro-step are
mixed into the seed with two large odd multipliers so that neighbouring (step, micro) pairs
get unrelated streams; ``stream`` separates independent draws made at the same step.
"""

from __future__ import annotations

import torch


def batch_seed(seed: int, step: int, micro: int = 0, stream: int = 0) -> int:
    return seed * 1_000_003 + step * 1_009 + micro + stream


def batch_generator(seed: int, step: int, micro: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded for this (seed, step, micro-step, stream)."""
    return torch.Generator().manual_seed(batch_seed(seed, step, micro, stream))


def sample_rows(
    n_rows: int, batch_size: int, seed: int, step: int, micro: int = 0, stream: int = 0
) -> torch.Tensor:
    """``batch_size`` row indices drawn uniformly with replacement from ``range(n_rows)``."""
    if n_rows < 1:
        raise ValueError("cannot sample a batch from an empty set of rows")
    g = batch_generator(seed, step, micro, stream)
    return torch.randint(0, n_rows, (batch_size,), generator=g)
