"""Chance-corrected agreement between raters: Cohen's kappa (two raters, optionally
weighted) and Fleiss' kappa (any fixed number of raters per item).

Raw agreement flatters: two raters who both answer "3" to nine items in ten agree 82% of
the time by chance alone. Kappa reports the agreement beyond what chance would give,

    kappa = (p_o - p_e) / (1 - p_e),

1 for perfect agreement, 0 for what independent raters with the same habits would reach,
negative for systematic disagreement.

**Cohen's kappa** (Cohen 1960, "A coefficient of agreement for nominal scales"): for two
raters over N items, p_o is the fraction of items on which they agree and
p_e = sum_c p_1(c) p_2(c), each rater's own category frequencies (marginals) multiplied.

**Weighted kappa** (Cohen 1968, "Weighted kappa"): on an ordered scale, a 4 against a 5 is
a smaller disagreement than a 1 against a 5. With the observed confusion matrix O (counts
of rater 1's category i against rater 2's j), the expected one E_ij = row_i * col_j / N and
disagreement weights w_ij,

    kappa_w = 1 - (sum_ij w_ij O_ij) / (sum_ij w_ij E_ij),

linear weights w_ij = |i - j|, quadratic w_ij = (i - j)^2, where i and j are the ranks of
the categories among those observed (the convention of scikit-learn); with w_ij = [i != j]
it is Cohen's kappa. Quadratic-weighted kappa approaches the intraclass correlation
(Fleiss and Cohen 1973).

**Fleiss' kappa** (Fleiss 1971, "Measuring nominal scale agreement among many raters"):
N items, each rated by the same number n of raters (not necessarily the same people), with
n_ic raters putting item i in category c. The agreement on item i is the fraction of
agreeing rater pairs, and chance uses the pooled category frequencies p_c:

    P_i = (sum_c n_ic^2 - n) / (n (n - 1)),    P_bar = mean_i P_i,
    p_c = sum_i n_ic / (N n),                  P_e = sum_c p_c^2,
    kappa = (P_bar - P_e) / (1 - P_e).

With two raters it is Scott's pi (Scott 1955), not Cohen's kappa: chance pools the raters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WEIGHTS = (None, "linear", "quadratic")


def _as_pairs(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-d sequences of the same length, got shapes {a.shape} and {b.shape}")  # fmt: skip
    if a.size == 0:
        raise ValueError("no items: kappa needs at least one item rated by both raters")
    return a, b


def confusion(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(categories, O): the sorted categories of both raters and the count matrix
    O[i, j] = items rater a put in category i and rater b in category j."""
    a, b = _as_pairs(a, b)
    cats = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(cats, a), np.searchsorted(cats, b)
    counts = np.zeros((cats.size, cats.size))
    np.add.at(counts, (ia, ib), 1.0)
    return cats, counts


def cohen_kappa(a: Sequence, b: Sequence, weights: str | None = None) -> float:
    """Cohen's kappa of two raters' labels of the same items (module doc), unweighted or
    with ``weights`` "linear" or "quadratic". ValueError when chance agreement is total
    (both raters always give one and the same category): kappa is then 0/0."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    _, observed = confusion(a, b)
    k = observed.shape[0]
    expected_counts = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    rank = np.arange(k)
    if weights is None:
        W = (rank[:, None] != rank[None, :]).astype(float)
    elif weights == "linear":
        W = np.abs(rank[:, None] - rank[None, :]).astype(float)
    else:
        W = ((rank[:, None] - rank[None, :]) ** 2).astype(float)
    expected = (W * expected_counts).sum()
    if expected == 0:
        raise ValueError("kappa is undefined: both raters gave one and the same category to every item")  # fmt: skip
    return float(1.0 - (W * observed).sum() / expected)


def category_counts(ratings: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(categories, table) from a raters x items array (NaN = not rated): table[i, c] is
    how many raters put item i in category c, the input of :func:`fleiss_kappa`."""
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"ratings must be a raters x items array, got shape {x.shape}")
    cats = np.unique(x[~np.isnan(x)])
    if cats.size == 0:
        raise ValueError("no ratings: every entry is missing (NaN)")
    table = np.stack([(x == c).sum(0) for c in cats], axis=1).astype(float)
    return cats, table


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Fleiss' kappa from an items x categories count table whose every row sums to the
    same number n >= 2 of raters (module doc). Items rated by different numbers of raters
    need Krippendorff's alpha (minift.rating.krippendorff) instead."""
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"table must be an items x categories array of counts, got shape {t.shape}")  # fmt: skip
    if (t < 0).any():
        raise ValueError("table holds counts of raters: they must be >= 0")
    per_item = t.sum(1)
    n = per_item[0]
    if not np.all(per_item == n):
        raise ValueError(
            f"every item needs the same number of ratings for Fleiss' kappa, got {sorted(set(per_item.tolist()))}; "
            "use Krippendorff's alpha for missing ratings"
        )  # fmt: skip
    if n < 2:
        raise ValueError(f"Fleiss' kappa needs at least 2 ratings per item, got {n:g}")
    N = t.shape[0]
    P_i = ((t**2).sum(1) - n) / (n * (n - 1))
    p_c = t.sum(0) / (N * n)
    P_e = (p_c**2).sum()
    if P_e == 1:
        raise ValueError("Fleiss' kappa is undefined: every rating is the same category")
    return float((P_i.mean() - P_e) / (1 - P_e))
