"""Human evaluation: ratings files, agreement between raters, correlation with automatic
scores, a simulated panel of raters, and the choice of what to rate next.

- records:      the ratings JSONL (rater, item, outputs, score or preferred): read, append, resume
- kappa:        Cohen's kappa (Cohen 1960; weighted, Cohen 1968), Fleiss' kappa (Fleiss 1971)
- krippendorff: Krippendorff's alpha, nominal / ordinal / interval, missing ratings allowed
- correlation:  Spearman's rho and Kendall's tau-b, ties handled
- panel:        simulated raters, noisy copies of a hidden judge
- uncertainty:  least-sure-first ordering and the labelling curve it buys
- report:       the agreement table of a file (what `minift agreement` prints)

The terminal loop that asks a person is minift.ask (shared with `minift feedback`); the
job that samples outputs and asks is minift.recipes.rate.
"""

from minift.rating.correlation import average_ranks, kendall_tau, spearman
from minift.rating.kappa import category_counts, cohen_kappa, confusion, fleiss_kappa
from minift.rating.krippendorff import coincidences, krippendorff_alpha
from minift.rating.panel import Item, SimulatedRater, panel, simulate_ratings
from minift.rating.records import (
    SCALE,
    append_ratings,
    check_rating,
    item_id,
    rated_items,
    rating_kind,
    rating_matrix,
    read_ratings,
    read_scores,
)
from minift.rating.report import agreement_table, correlations, format_table, mean_scores
from minift.rating.uncertainty import (
    confidence_order,
    labelling_curve,
    margin_order,
    ratings_to_reach,
)

__all__ = [
    "SCALE", "Item", "SimulatedRater", "agreement_table", "append_ratings", "average_ranks",
    "category_counts", "check_rating", "cohen_kappa", "coincidences", "confidence_order",
    "confusion", "correlations", "fleiss_kappa", "format_table", "item_id", "kendall_tau",
    "krippendorff_alpha", "labelling_curve", "margin_order", "mean_scores", "panel",
    "rated_items", "ratings_to_reach", "rating_kind", "rating_matrix", "read_ratings", "read_scores",
    "simulate_ratings", "spearman",
]  # fmt: skip
