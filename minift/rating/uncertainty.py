"""What to show a rater next: the item the model is least sure about.

People's time is the scarce resource of human evaluation. When a model already labels
every item (a reward model says which of two responses is better, a classifier which
class an output is), each human rating can either confirm a label the model was sure of
or settle one it was not. Uncertainty sampling (Lewis and Gale 1994, "A sequential
algorithm for training text classifiers"; surveyed by Settles 2009, "Active learning
literature survey") shows the least certain items first:

- a pair, by the reward model's margin: the Bradley-Terry probability of preferring the
  first output is sigmoid(r_1 - r_2), least sure at |r_1 - r_2| = 0;
- a class, by confidence: the largest predicted probability, least sure when lowest.

:func:`labelling_curve` measures what the order buys: after k ratings, the k items rated
take the people's label and the rest keep the model's, and the share of labels that agree
with the truth is recorded for k = 0..N. A good order climbs faster than a random one;
both end at the same point, when everything is rated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def margin_order(margins: Sequence[float]) -> np.ndarray:
    """Indices from the smallest |margin| (least sure) to the largest; ties keep input order."""
    m = np.asarray(margins, dtype=float)
    if m.ndim != 1 or not np.isfinite(m).all():
        raise ValueError("margins must be a 1-d sequence of finite numbers")
    return np.argsort(np.abs(m), kind="stable")


def confidence_order(probs: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Indices from the least confident prediction (lowest top probability) to the most;
    ``probs`` is items x classes, each row a distribution."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or not np.allclose(p.sum(1), 1.0) or (p < 0).any():
        raise ValueError("probs must be an items x classes array of distributions (rows summing to 1)")  # fmt: skip
    return np.argsort(p.max(1), kind="stable")


def labelling_curve(
    order: Sequence[int],
    model_labels: Sequence[int],
    human_labels: Sequence[int],
    truth: Sequence[int],
) -> np.ndarray:
    """acc[k] for k = 0..N: the share of the N labels that equal ``truth`` when the first k
    items of ``order`` carry the human label and the others the model's."""
    model, human, true = (np.asarray(v) for v in (model_labels, human_labels, truth))
    order = np.asarray(order)
    n = true.size
    if not (model.shape == human.shape == true.shape == (n,)) or sorted(order.tolist()) != list(range(n)):  # fmt: skip
        raise ValueError("order must be a permutation of the N items and every label array of length N")  # fmt: skip
    # rating item i changes its correctness by (human right) - (model right)
    gain = (human == true).astype(float) - (model == true).astype(float)
    start = (model == true).mean()
    return np.concatenate([[start], start + np.cumsum(gain[order]) / n])


def ratings_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The fewest ratings k with curve[k] >= target (None: never reached)."""
    hits = np.flatnonzero(np.asarray(curve) >= target - 1e-12)
    return int(hits[0]) if hits.size else None
