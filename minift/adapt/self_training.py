"""Self-training: label the target rows the model is sure of, and train on them too.

Lee (2013), "Pseudo-label"; for domain adaptation, e.g. Zou, Yu, Kumar and Wang (2018),
"Unsupervised domain adaptation for semantic segmentation via class-balanced
self-training". A classifier fitted on labelled source rows predicts the unlabelled
target rows; those predicted with probability at least ``threshold`` join the training
set with their predicted label (a pseudo-label), the classifier is refitted, and the
round repeats. The threshold trades how many target rows join against how many of them
are wrong: a wrong pseudo-label is learned as if it were right, so errors can feed on
themselves ("confirmation bias", Arazo et al. 2020). A class the source model already
favours collects most pseudo-labels, so each class may contribute at most as many rows
as the rarest-class count times ``balance_ratio`` (None: no cap), a simple form of
Zou et al.'s class balancing.

Here the classifier is a linear head on frozen pooled features, refitted to convergence
each round (minift.train.features.fit_linear_head); the same selection drives
self-training with a fine-tuned backbone (minift.recipes.adapt_backbone).
"""

from __future__ import annotations

import torch

from minift.errors import UserError
from minift.train.features import fit_linear_head


def confident_rows(
    probs: torch.Tensor, threshold: float, balance_ratio: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows kept, their labels) from class probabilities (n, K): confidence >= threshold,
    the most confident first within a class, at most balance_ratio x the smallest
    non-empty class's count per class. Any classifier's probabilities will do (a head on
    frozen features here, a fine-tuned transformer in minift.recipes.adapt_backbone)."""
    conf, label = probs.max(-1)
    keep = torch.nonzero(conf >= threshold).flatten()
    if balance_ratio is not None and len(keep):
        counts = torch.bincount(label[keep], minlength=probs.shape[1])
        cap = max(1, int(balance_ratio * int(counts[counts > 0].min())))
        chosen = []
        for c in range(probs.shape[1]):
            rows = keep[label[keep] == c]
            chosen.append(rows[torch.argsort(conf[rows], descending=True)[:cap]])
        keep = torch.sort(torch.cat(chosen)).values
    return keep, label[keep]


def pseudo_labels(
    W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, threshold: float, balance_ratio: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """confident_rows of the linear head (W, b) on the features X."""
    return confident_rows(torch.softmax(X.double() @ W.T + b, -1), threshold, balance_ratio)


def self_train(
    X_source: torch.Tensor,
    y_source: torch.Tensor,
    X_target: torch.Tensor,
    num_classes: int,
    threshold: float = 0.9,
    rounds: int = 3,
    l2: float = 1e-3,
    balance_ratio: float | None = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """W, b after ``rounds`` of pseudo-labelling, and per round the rows pseudo-labelled."""
    if not 0.0 < threshold < 1.0:
        raise UserError(f"the confidence threshold must lie in (0, 1), got {threshold}")
    if rounds < 1:
        raise UserError(f"self-training needs rounds >= 1, got {rounds}")
    y_source = torch.as_tensor(y_source).long()
    W, b = fit_linear_head(X_source, y_source, num_classes, l2=l2)
    history = []
    for r in range(rounds):
        keep, labels = pseudo_labels(W, b, X_target, threshold, balance_ratio)
        history.append({"round": r + 1, "pseudo_labelled": len(keep), "keep": keep, "labels": labels})  # fmt: skip
        X = torch.cat([X_source.double(), X_target[keep].double()])
        W, b = fit_linear_head(X, torch.cat([y_source, labels]), num_classes, l2=l2)
    return W, b, history
