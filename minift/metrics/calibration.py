"""Calibration: does a model's confidence match how often it is right?

A classifier that says 0.9 should be right 9 times in 10 among the examples it says 0.9
about. Group the examples into M equal-width bins of confidence,
B_m = {i : conf_i in ((m-1)/M, m/M]} (a confidence of exactly 0 joins the first bin), and
compare each bin's accuracy with its mean confidence:

    acc(B_m) = (1/|B_m|) sum_{i in B_m} [y_hat_i = y_i]
    conf(B_m) = (1/|B_m|) sum_{i in B_m} conf_i
    ECE = sum_m (|B_m| / n) |acc(B_m) - conf(B_m)|        (expected calibration error)
    MCE = max_m |acc(B_m) - conf(B_m)|                      (maximum, over non-empty bins)

The reliability diagram plots acc(B_m) against conf(B_m): a calibrated model lies on the
diagonal; below it is over-confident. (Naeini, Cooper and Hauskrecht, "Obtaining well
calibrated probabilities using Bayesian binning", AAAI 2015; Guo, Pleiss, Sun and
Weinberger, "On calibration of modern neural networks", ICML 2017, whose 15 bins are the
default.) The Brier score (Brier 1950), mean_i sum_k (p_ik - [y_i = k])^2, is a proper
scoring rule that needs no bins.

Inputs: ``confidences`` (the probability of the predicted class) with ``correct`` (1/0),
or with :func:`calibration_from_probs`, the (n, K) probabilities and the true labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _array(values: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: calibration needs at least one example")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


@dataclass(frozen=True)
class Reliability:
    """Per bin: its edges, the examples in it, their mean confidence and accuracy (NaN for
    an empty bin); and the ECE and MCE they give."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float
    mce: float

    def rows(self) -> list[dict]:
        """The non-empty bins as dicts (for JSON and printing)."""
        return [
            {
                "bin": f"({lo:.2f}, {hi:.2f}]",
                "count": int(c),
                "confidence": float(m),
                "accuracy": float(a),
            }  # fmt: skip
            for lo, hi, c, m, a in zip(
                self.lower, self.upper, self.count, self.confidence, self.accuracy
            )  # fmt: skip
            if c > 0
        ]


def reliability(confidences: Any, correct: Any, n_bins: int = 15) -> Reliability:
    """The reliability diagram's data and the ECE / MCE (see the module doc)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    conf = _array(confidences, "confidences", 1)
    hit = _array(correct, "correct", 1)
    if len(conf) != len(hit):
        raise ValueError(
            f"confidences and correct have different lengths ({len(conf)} and {len(hit)})"
        )
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must lie in [0, 1] (probabilities, not logits)")
    if not np.isin(hit, (0.0, 1.0)).all():
        raise ValueError("correct must hold 1 (right) or 0 (wrong) per example")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin m holds (edges[m], edges[m+1]]: the first edge >= conf is edges[m+1]. Searching
    # the edges the bins are reported with (not ceil(conf * M)) keeps a confidence equal to
    # an edge in the bin that edge closes: 0.1 * 3 == edges[3] but ceil(0.1 * 3 * 10) = 4.
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=hit, minlength=n_bins) / count
    gap = np.abs(accuracy - mean_conf)
    filled = count > 0
    ece = float(np.sum(count[filled] / len(conf) * gap[filled]))
    mce = float(np.max(gap[filled]))
    return Reliability(edges[:-1], edges[1:], count, mean_conf, accuracy, ece, mce)


def _probs_and_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _array(probs, "probs", 2)
    y = _array(labels, "labels", 1)
    if len(p) != len(y):
        raise ValueError(f"probs and labels have different lengths ({len(p)} and {len(y)})")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of probs must be a distribution (>= 0, summing to 1): softmax the logits first")  # fmt: skip
    if (y != np.round(y)).any() or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be class indices in 0..{p.shape[1] - 1}")
    return p, y.astype(np.int64)


def calibration_from_probs(probs: Any, labels: Any, n_bins: int = 15) -> Reliability:
    """:func:`reliability` of the top-class confidence max_k p_ik and its correctness."""
    p, y = _probs_and_labels(probs, labels)
    return reliability(p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64), n_bins)


def expected_calibration_error(confidences: Any, correct: Any, n_bins: int = 15) -> float:
    """ECE = sum_m (|B_m| / n) |acc(B_m) - conf(B_m)| over M equal-width bins."""
    return reliability(confidences, correct, n_bins).ece


def brier_score(probs: Any, labels: Any) -> float:
    """mean_i sum_k (p_ik - [y_i = k])^2: 0 is perfect, 2 the worst (multiclass form)."""
    p, y = _probs_and_labels(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
