"""Bias and fairness of fine-tuned classifiers: group metrics and counterfactual tests."""

from minift.fairness.counterfactual import GENDER_PAIRS, counterfactual_rows, swap_attribute
from minift.fairness.metrics import (
    accuracy_gap,
    counterfactual_change,
    demographic_parity_difference,
    equalized_odds_difference,
    group_rates,
    selection_rates,
)

__all__ = [
    "GENDER_PAIRS", "counterfactual_rows", "swap_attribute",
    "accuracy_gap", "counterfactual_change", "demographic_parity_difference",
    "equalized_odds_difference", "group_rates", "selection_rates",
]  # fmt: skip
