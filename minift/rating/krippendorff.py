"""Krippendorff's alpha: agreement among any number of raters, with missing ratings, on a
nominal, ordinal or interval scale.

Krippendorff (1970, "Estimating the reliability, systematic error and random error of
interval data"; 2004, *Content Analysis*, ch. 11; 2011, "Computing Krippendorff's
alpha-reliability") defines

    alpha = 1 - D_o / D_e,

observed over expected disagreement, both built from the *coincidence matrix*. In a unit
(item) u rated m_u >= 2 times, every ordered pair of two different ratings (c, k) adds
1 / (m_u - 1) to o_ck; units with fewer than two ratings are not pairable and drop out.
With n_c = sum_k o_ck the number of pairable values c and n = sum_c n_c,

    D_o = (1/n) sum_c sum_k o_ck delta^2(c, k),
    D_e = 1/(n (n - 1)) sum_c sum_k n_c n_k delta^2(c, k),
    alpha = 1 - (n - 1) (sum o_ck delta^2) / (sum n_c n_k delta^2).

The level of measurement is the distance delta^2:

- nominal: 0 when c = k, else 1;
- interval: (c - k)^2;
- ordinal: (sum_{g between c and k, both included} n_g - (n_c + n_k) / 2)^2, the squared
  number of values ranked between c and k: only the order of the categories matters.

alpha = 1 is perfect agreement, 0 agreement at chance; Krippendorff advises relying on
data with alpha >= 0.8 and drawing only tentative conclusions from 0.667 <= alpha < 0.8.
For two raters, nominal data and no missing values it is Scott's pi corrected for small
samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVELS = ("nominal", "ordinal", "interval")


def coincidences(ratings: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(values, o): the sorted values of a raters x units array (NaN = missing) and the
    coincidence matrix o[c, k] over them (module doc)."""
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"ratings must be a raters x units array, got shape {x.shape}")
    values = np.unique(x[~np.isnan(x)])
    # counts[u, c]: how many raters gave unit u the value c
    counts = np.stack([(x == v).sum(0) for v in values], axis=1).astype(float) if values.size else np.zeros((x.shape[1], 0))  # fmt: skip
    m = counts.sum(1)
    pairable = m >= 2
    counts, m = counts[pairable], m[pairable]
    # pairs of different raters in unit u: n_uc n_uk for c != k, n_uc (n_uc - 1) for c = k
    o = np.einsum("uc,uk,u->ck", counts, counts, 1.0 / (m - 1))
    o -= np.diag((counts / (m - 1)[:, None]).sum(0))
    return values, o


def _distances(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    cum = np.cumsum(n_c)  # ordinal: values ranked from c to k, halves at the ends
    lo = np.minimum.outer(np.arange(values.size), np.arange(values.size))
    hi = np.maximum.outer(np.arange(values.size), np.arange(values.size))
    between = cum[hi] - cum[lo] + n_c[lo]
    return (between - (n_c[:, None] + n_c[None, :]) / 2) ** 2


def krippendorff_alpha(ratings: np.ndarray | Sequence[Sequence[float]], level: str = "ordinal") -> float:  # fmt: skip
    """Krippendorff's alpha of a raters x units array of numbers (NaN where a rater did not
    rate a unit) at ``level`` nominal, ordinal or interval. ValueError when fewer than two
    values are pairable or every pairable value is the same (alpha is then 0/0)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    values, o = coincidences(ratings)
    n_c = o.sum(1)
    n = n_c.sum()
    if n < 2:
        raise ValueError("alpha needs at least one unit rated by two raters (no pairable values)")
    d = _distances(values, n_c, level)
    expected = (np.outer(n_c, n_c) * d).sum()
    if expected == 0:
        raise ValueError("alpha is undefined: every pairable rating has the same value")
    return float(1.0 - (n - 1) * (o * d).sum() / expected)
