"""Group fairness of a classifier's predictions, and its counterfactual consistency.

With y the true labels, p the predictions and a the protected attribute (one group per
row), for groups g:

- selection rate      s_g = P(p = 1 | a = g)
- demographic parity  difference max_g s_g - min_g s_g (0: every group is selected at
  the same rate; Calders et al. 2009, Dwork et al. 2012)
- equalized odds      the larger of the spreads across groups of the true-positive rate
  P(p = 1 | y = 1, a = g) and the false-positive rate P(p = 1 | y = 0, a = g) (Hardt,
  Price and Srebro 2016); 0 when errors fall on every group alike
- per-group accuracy  P(p = y | a = g), and the gap between the best and worst group
- counterfactual      swap the attribute in each text (he <-> she, a name of one group for
  consistency         one of the other) and compare: the share of rows whose prediction
                      flips, and the mean absolute change of the positive-class
                      probability (Huang et al. 2020; Garg et al. 2019)

The binary metrics take the positive class ``pos_label`` (1 by default), as fairlearn's do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minift.errors import UserError


def _arrays(y_true, y_pred, groups) -> tuple[list, list, list]:
    y_true, y_pred, groups = list(y_true), list(y_pred), list(groups)
    if not (len(y_true) == len(y_pred) == len(groups)):
        raise ValueError(
            f"y_true, y_pred and groups must have one entry per row, got "
            f"{len(y_true)}, {len(y_pred)} and {len(groups)}"
        )
    if len(set(groups)) < 2:
        raise UserError(
            f"fairness needs at least two groups of the protected attribute, got {sorted(set(groups))}"
        )
    return y_true, y_pred, groups


def _rate(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else float("nan")


def selection_rates(y_pred: Sequence, groups: Sequence, pos_label=1) -> dict:
    """s_g = the share of group g's rows predicted ``pos_label``."""
    _, y_pred, groups = _arrays(y_pred, y_pred, groups)
    return {g: _rate([p == pos_label for p, h in zip(y_pred, groups) if h == g]) for g in sorted(set(groups))}  # fmt: skip


def demographic_parity_difference(y_true, y_pred, groups, pos_label=1) -> float:
    """max_g s_g - min_g s_g."""
    _arrays(y_true, y_pred, groups)
    rates = selection_rates(y_pred, groups, pos_label).values()
    return max(rates) - min(rates)


def group_rates(y_true, y_pred, groups, pos_label=1) -> dict[str, dict]:
    """Per group: true-positive rate, false-positive rate and accuracy."""
    y_true, y_pred, groups = _arrays(y_true, y_pred, groups)
    out: dict[str, dict] = {"tpr": {}, "fpr": {}, "accuracy": {}}
    for g in sorted(set(groups)):
        rows = [(t, p) for t, p, h in zip(y_true, y_pred, groups) if h == g]
        out["tpr"][g] = _rate([p == pos_label for t, p in rows if t == pos_label])
        out["fpr"][g] = _rate([p == pos_label for t, p in rows if t != pos_label])
        out["accuracy"][g] = _rate([p == t for t, p in rows])
    return out


def _spread(values) -> float:
    vals = [v for v in values if v == v]  # a group with no positives has no TPR
    return max(vals) - min(vals) if vals else 0.0


def equalized_odds_difference(y_true, y_pred, groups, pos_label=1) -> float:
    """max(spread of TPR across groups, spread of FPR across groups)."""
    r = group_rates(y_true, y_pred, groups, pos_label)
    return max(_spread(r["tpr"].values()), _spread(r["fpr"].values()))


def accuracy_gap(y_true, y_pred, groups) -> float:
    """The best group's accuracy minus the worst's."""
    return _spread(group_rates(y_true, y_pred, groups)["accuracy"].values())


def counterfactual_change(probs: torch.Tensor, probs_swapped: torch.Tensor) -> dict[str, float]:
    """How predictions move when the protected attribute in the text is swapped:
    probs and probs_swapped (n, K) are the class probabilities before and after."""
    if probs.shape != probs_swapped.shape or probs.dim() != 2:
        raise ValueError(
            f"probs must be two (n, K) tensors of one shape, got {tuple(probs.shape)} and {tuple(probs_swapped.shape)}"
        )
    flips = (probs.argmax(-1) != probs_swapped.argmax(-1)).double().mean()
    change = (probs - probs_swapped).abs().sum(-1).double().mean() / 2  # total variation
    return {"flip_rate": float(flips), "mean_change": float(change)}
