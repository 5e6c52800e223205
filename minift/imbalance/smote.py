"""SMOTE: synthetic minority rows by interpolating between minority neighbours.

Chawla, Bowyer, Hall and Kegelmeyer (2002), "SMOTE: synthetic minority over-sampling
technique". Oversampling by repetition makes a classifier's region for the minority
shrink around the few points it has seen; SMOTE fills the space between them instead.
For a class c with rows x_1..x_m and a number of rows to add:

1. find each row's k nearest neighbours within class c (Euclidean, the row itself excluded);
2. for each new row draw a pair (i, j) uniformly from the m * k (row, neighbour) pairs
   and a gap u ~ U[0, 1);
3. add  x_new = x_i + u (x_nbr(i, j) - x_i),  a point on the segment from x_i to that
   neighbour.

Text has no such segments, so SMOTE runs here on the model's *pooled features* (the
frozen backbone's vector per text): the synthetic rows are features, and what trains on
them is the head. That is why it applies only where the backbone is frozen.

The draws follow imbalanced-learn's order (pair index, then gap, per class), so given the
same neighbours and the same random numbers the two produce the same rows; the test
checks exactly that.
"""

from __future__ import annotations

import torch

from minift.errors import UserError


def nearest_neighbours(X: torch.Tensor, k: int) -> torch.Tensor:
    """(m, k) indices of each row's k nearest other rows (Euclidean; ties to the lower index)."""
    m = len(X)
    if k < 1:
        raise UserError(f"SMOTE needs k >= 1 neighbours, got {k}")
    if m <= k:
        raise UserError(f"k={k} neighbours need at least {k + 1} rows of a class, it has {m}")
    X = X.double()
    sq = (X * X).sum(1)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b; the exact distance to oneself is 0, so set it to
    # infinity rather than trust rounding to keep a row from being its own neighbour
    d2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    d2.fill_diagonal_(float("inf"))
    return torch.sort(d2, dim=1, stable=True).indices[:, :k]


def interpolate(
    X: torch.Tensor,
    neighbours: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    gaps: torch.Tensor,
) -> torch.Tensor:
    """x_rows + gaps * (x_{neighbours[rows, cols]} - x_rows), one synthetic row per draw."""
    base = X[rows]
    return base + gaps.to(X)[:, None] * (X[neighbours[rows, cols]] - base)


def draw_pairs(
    m: int, k: int, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n (row, neighbour column, gap) draws: the pair uniform over the m * k pairs, the gap
    uniform on [0, 1), in that order (imbalanced-learn's)."""
    pair = torch.randint(0, m * k, (n,), generator=generator)
    gaps = torch.rand(n, generator=generator, dtype=torch.float64)
    return pair // k, pair % k, gaps


def smote_class(X: torch.Tensor, n_new: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """n_new synthetic rows for one class's rows X (m, C)."""
    if len(X) == 1:
        raise UserError("SMOTE interpolates between two rows of a class; this class has one")
    neighbours = nearest_neighbours(X, k)
    return interpolate(X, neighbours, *draw_pairs(len(X), k, n_new, generator))


def smote(
    X: torch.Tensor,
    y: torch.Tensor,
    k: int = 5,
    targets: dict[int, int] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """X and y with synthetic rows appended, class by class in label order. ``targets``
    maps a class to the number of rows it should end with (default: every class up to the
    largest class's count, imbalanced-learn's "auto"). Each class draws from a generator
    seeded with ``seed`` (as imbalanced-learn reseeds an integer random_state per class)."""
    y = torch.as_tensor(y, dtype=torch.long)
    if X.ndim != 2 or len(X) != len(y):
        raise UserError(f"SMOTE needs features (n, C) and n labels, got {tuple(X.shape)}, {len(y)}")
    counts = torch.bincount(y)
    if targets is None:
        top = int(counts.max())
        targets = {c: top for c in range(len(counts)) if 0 < counts[c] < top}
    new_x, new_y = [X], [y]
    for c in sorted(targets):
        have = int(counts[c]) if c < len(counts) else 0
        if have == 0:
            raise UserError(f"class {c} has no row to interpolate from")
        if targets[c] < have:
            raise UserError(f"class {c} has {have} rows, more than its target {targets[c]}")
        if targets[c] == have:
            continue
        rows = X[y == c]
        if len(rows) <= k and len(rows) > 1:
            raise UserError(
                f"k={k} neighbours need at least {k + 1} rows of class {c}, it has {len(rows)}; "
                f"lower k to {len(rows) - 1} or less"
            )
        made = smote_class(rows, targets[c] - have, k, torch.Generator().manual_seed(seed))
        new_x.append(made)
        new_y.append(torch.full((len(made),), c, dtype=torch.long))
    return torch.cat(new_x), torch.cat(new_y)
