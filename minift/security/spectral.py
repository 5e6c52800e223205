"""Spectral signatures (Tran, Li and Madry 2018): poisoned rows stand out along one direction.

Within a class, the learned representations of the poisoned rows differ from the clean
rows' in a consistent way (they carry the trigger, the clean ones do not). When the
poisoned share is large enough for that difference to dominate the class's covariance,
it shows up as the top singular direction of the centred features:

    R = X_c - mean(X_c)          (the class's pooled features, one row per example)
    v = the top right singular vector of R
    score_i = (R_i . v)^2         (the outlier score)

and the rows with the largest scores, 1.5 * eps * n_c of them in each class for eps an
upper bound on the poisoned share of a class, are removed before training again.
"""

from __future__ import annotations

import torch


def spectral_scores(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The outlier score (R_i . v)^2 of every row, computed within its own class."""
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError(
            f"features must be (n, d) with one label per row, got {tuple(features.shape)} "
            f"and {len(labels)} labels"
        )
    scores = torch.zeros(len(features), dtype=features.dtype)
    for c in labels.unique():
        rows = (labels == c).nonzero().flatten()
        R = features[rows] - features[rows].mean(0)
        if len(rows) < 2:
            continue  # one row has no spread
        v = torch.linalg.svd(R, full_matrices=False).Vh[0]
        scores[rows] = (R @ v) ** 2
    return scores


def spectral_filter(
    features: torch.Tensor, labels: torch.Tensor, eps: float, factor: float = 1.5
) -> list[int]:
    """The rows to remove: in each class the round(factor * eps * n_c) highest scores."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps, the expected poison share, must be in [0, 1], got {eps}")
    scores = spectral_scores(features, labels)
    flagged: list[int] = []
    for c in labels.unique():
        rows = (labels == c).nonzero().flatten()
        k = min(len(rows), round(factor * eps * len(rows)))
        if k:
            flagged += rows[scores[rows].topk(k).indices].tolist()
    return sorted(flagged)
