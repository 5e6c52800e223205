"""Losses that stop the majority classes from drowning out the minority ones.

With class priors pi_c (the training frequencies) and logits z for a row of class y:

- **class-weighted cross-entropy**: w_y * CE(z, y) / mean weight, with w_c = n / (K n_c)
  ("inverse frequency", scikit-learn's ``class_weight="balanced"``): every class then
  carries the same total weight, as if the data were balanced.
- **focal loss** (Lin, Goyal, Girshick, He and Dollar 2017, "Focal loss for dense object
  detection"): FL = -alpha_y (1 - p_y)^gamma log p_y. The factor (1 - p_y)^gamma shrinks
  the loss of rows already classified with confidence (mostly the majority's), so the
  gradient goes to the hard ones; gamma = 0 is cross-entropy, the paper uses gamma = 2.
- **logit adjustment** (Menon, Jayasumana, Rawat, Jain, Veit and Kumar 2021, "Long-tail
  learning via logit adjustment"). The Bayes classifier for the *balanced* error is
  argmax_c  p(c | x) / pi_c  =  argmax_c  z_c - log pi_c  (softmax logits). Two ways:
  post hoc, subtract tau log pi from a plainly trained model's logits (threshold moving);
  or train on CE(z + tau log pi, y), the logit-adjusted loss, and predict with z itself.
  tau = 1 is the paper's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minift.errors import UserError


def class_counts(labels: torch.Tensor | list[int], num_classes: int) -> torch.Tensor:
    """Rows per class (num_classes,), as float64; a label out of range is an error."""
    y = torch.as_tensor(labels, dtype=torch.long)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UserError(
            f"labels must lie in [0, {num_classes}), got {int(y.min())}..{int(y.max())}"
        )
    return torch.bincount(y, minlength=num_classes).double()


def class_priors(labels: torch.Tensor | list[int], num_classes: int) -> torch.Tensor:
    """pi_c = n_c / n; every class needs at least one row (log pi must be finite)."""
    counts = class_counts(labels, num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise UserError(f"classes {missing} have no training row; their prior would be 0")
    return counts / counts.sum()


def class_weights(labels: torch.Tensor | list[int], num_classes: int) -> torch.Tensor:
    """w_c = n / (K n_c): inverse frequency, scaled so a balanced set has every w_c = 1."""
    counts = class_counts(labels, num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise UserError(f"classes {missing} have no training row; their weight would be infinite")
    return counts.sum() / (num_classes * counts)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_i w_{y_i} CE_i / sum_i w_{y_i} (PyTorch's ``weight=`` convention)."""
    return F.cross_entropy(logits, labels, weight=weights.to(logits))


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over rows of -alpha_y (1 - p_y)^gamma log p_y (alpha: per-class weights)."""
    if gamma < 0:
        raise UserError(f"focal loss needs gamma >= 0, got {gamma}")
    # With d = logsumexp over the other classes minus z_y:  -log p_y = softplus(d) and
    # 1 - p_y = sigmoid(d). Both stay exact for a confident row (d << 0), where log_softmax
    # rounds log p_y to 0 and 1 - p_y to 0, and would drop the easy rows' small loss.
    z_y = logits.gather(-1, labels[:, None])
    others = logits.scatter(-1, labels[:, None], float("-inf"))
    d = torch.logsumexp(others, dim=-1) - z_y.squeeze(-1)
    loss = torch.sigmoid(d) ** gamma * F.softplus(d)
    if alpha is not None:
        loss = alpha.to(loss)[labels] * loss
    return loss.mean()


def logit_adjusted_loss(
    logits: torch.Tensor, labels: torch.Tensor, priors: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """CE(z + tau log pi, y): trained this way, z itself predicts for balanced error."""
    return F.cross_entropy(logits + tau * priors.to(logits).log(), labels)


def adjust_logits(logits: torch.Tensor, priors: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment: z - tau log pi (threshold moving for a trained model)."""
    return logits - tau * priors.to(logits).log()
