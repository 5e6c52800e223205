"""The agreement table of a ratings file, and its correlation with automatic scores.

One function gathers what `minift agreement` prints, so the command and the lesson report
the same numbers: Cohen's kappa for every pair of raters (unweighted, and linear and
quadratic weighted for scores), Fleiss' kappa over the items every rater rated, and
Krippendorff's alpha over everything (nominal for preferences; nominal, ordinal and
interval for scores). A measure that cannot be computed on the file (one rater, no item
shared, a single category) is reported with the reason instead of a number.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from minift.rating.correlation import kendall_tau, spearman
from minift.rating.kappa import category_counts, cohen_kappa, fleiss_kappa
from minift.rating.krippendorff import krippendorff_alpha
from minift.rating.records import rating_kind, rating_matrix


@dataclass
class Row:
    measure: str
    value: float  # NaN when not computable (see note)
    n: int  # items it is computed on
    note: str = ""


def _try(measure: str, n: int, fn, *args) -> Row:
    """Row(measure, fn(*args)), or a NaN row with the reason when fn raises ValueError."""
    try:
        if n == 0:
            raise ValueError("no item is rated by the raters this measure needs")
        return Row(measure, fn(*args), n)
    except ValueError as err:
        return Row(measure, math.nan, n, str(err))


def agreement_table(rows: Sequence[dict]) -> list[Row]:
    """The agreement measures of ratings-file rows (module doc)."""
    kind = rating_kind(rows)
    raters, items, values = rating_matrix(rows)
    x = np.array(values)
    out = []
    weights = (None, "linear", "quadratic") if kind == "score" else (None,)
    for (i, a), (j, b) in itertools.combinations(enumerate(raters), 2):
        both = ~np.isnan(x[i]) & ~np.isnan(x[j])
        for w in weights:
            name = f"Cohen's kappa{f' ({w})' if w else ''} {a} vs {b}"
            out.append(_try(name, int(both.sum()), cohen_kappa, x[i, both], x[j, both], w))
    complete = ~np.isnan(x).any(0)
    table = category_counts(x[:, complete])[1] if complete.any() else None
    out.append(_try(f"Fleiss' kappa ({len(raters)} raters)", int(complete.sum()), fleiss_kappa, table))  # fmt: skip
    levels = ("nominal", "ordinal", "interval") if kind == "score" else ("nominal",)
    pairable = int(((~np.isnan(x)).sum(0) >= 2).sum())
    for level in levels:
        out.append(_try(f"Krippendorff's alpha ({level})", pairable, krippendorff_alpha, x, level))  # fmt: skip
    return out


def mean_scores(rows: Sequence[dict]) -> dict[str, float]:
    """item -> mean score over the raters who rated it (score ratings only)."""
    if rating_kind(rows) != "score":
        raise ValueError("mean scores need score ratings (one output, 1-5), not preferences")
    _, items, values = rating_matrix(rows)
    means = np.nanmean(np.array(values), axis=0)
    return dict(zip(items, means.tolist()))


def correlations(rows: Sequence[dict], scores: Mapping[str, Mapping[str, float]]) -> list[Row]:
    """Spearman's rho and Kendall's tau-b between each item's mean rating and each automatic
    score (``scores[name][item]``), over the items that have both."""
    means = mean_scores(rows)
    out = []
    for name, by_item in scores.items():
        common = [k for k in means if k in by_item]
        h = [means[k] for k in common]
        a = [by_item[k] for k in common]
        out.append(_try(f"Spearman rho (mean rating, {name})", len(common), spearman, h, a))
        out.append(_try(f"Kendall tau-b (mean rating, {name})", len(common), kendall_tau, h, a))
    return out


def format_table(table: Sequence[Row]) -> str:
    width = max(len(r.measure) for r in table)
    lines = [f"{'measure':{width}s} {'value':>7s} {'items':>6s}"]
    for r in table:
        value = f"{r.value:7.3f}" if math.isfinite(r.value) else f"{'n/a':>7s}"
        lines.append(f"{r.measure:{width}s} {value} {r.n:6d}" + (f"  ({r.note})" if r.note else ""))  # fmt: skip
    return "\n".join(lines)
