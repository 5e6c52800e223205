"""Rank correlation between ratings and an automatic score: Spearman's rho, Kendall's tau-b.

Does a reward model, or perplexity, order outputs the way people do? Ratings are ordinal
(a 4 is better than a 3, not "one unit" better), and automatic scores are on scales of
their own, so the question is about *order*: rank correlations answer it and ignore any
monotone rescaling of either side.

**Spearman's rho** (Spearman 1904, "The proof and measurement of association between two
things") is Pearson's correlation of the ranks. Tied values share the mean of the ranks
they span (1, 2.5, 2.5, 4), which keeps rho exact under ties:

    rho = cov(R(x), R(y)) / (sd(R(x)) sd(R(y))).

**Kendall's tau-b** (Kendall 1938, "A new measure of rank correlation"; the tie correction
in Kendall 1945, "The treatment of ties in ranking problems") counts pairs of items: a pair
is concordant when x and y order it the same way, discordant when they order it oppositely,
and a pair tied in x or in y is neither:

    tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2)),
    n0 = n (n - 1) / 2,  n1 = sum_t t (t - 1) / 2 over groups of t tied x values, n2 likewise in y.

Ratings on a five-point scale tie constantly, so tau-b (not tau-a) is the one to use; it
is what scipy.stats.kendalltau computes by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _paired(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"need two 1-d sequences of the same length, got shapes {x.shape} and {y.shape}")  # fmt: skip
    if x.size < 2:
        raise ValueError(f"a correlation needs at least 2 pairs, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("correlation inputs must be finite numbers (drop unrated items first)")
    return x, y


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    sorted_x = x[order]
    start = 0
    for end in range(1, x.size + 1):
        if end == x.size or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties; ValueError when either side is constant
    (its ranks have no spread, rho is 0/0)."""
    x, y = _paired(x, y)
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    if denom == 0:
        raise ValueError("Spearman's rho is undefined: one of the two sides is constant")
    return float((rx * ry).sum() / denom)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties corrected); ValueError when either side is constant."""
    x, y = _paired(x, y)
    iu = np.triu_indices(x.size, k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    untied_x, untied_y = np.count_nonzero(sx), np.count_nonzero(sy)  # n0 - n1, n0 - n2
    if untied_x == 0 or untied_y == 0:
        raise ValueError("Kendall's tau is undefined: one of the two sides is constant")
    return float((sx * sy).sum() / np.sqrt(float(untied_x) * float(untied_y)))
