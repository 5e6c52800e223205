"""One name per remedy, and a linear head fitted on frozen features with any of them.

    none          plain cross-entropy on the skewed rows (the floor)
    weights       class-weighted cross-entropy, w_c = n / (K n_c)
    focal         focal loss, gamma = 2, alpha-balanced with alpha_c = w_c (Lin et al. 2017);
                  without alpha it reweights easy against hard rows, not the classes, and
                  leaves the prior's pull on overlapping classes in place
    oversample    minority rows repeated until every class matches the largest
    undersample   majority rows dropped until every class matches the smallest
    smote         synthetic minority features (Chawla et al. 2002), then cross-entropy
    logit-adjust  the logit-adjusted loss CE(z + log pi, y) (Menon et al. 2021)

``fit_head`` fits W, b of  z = W x + b  on fixed features x to convergence
(minift.train.features.fit_linear_head: full-batch L-BFGS in float64, an L2 penalty
l2 ||W||^2), so the remedies differ only in the data or the loss, never in how far
training got.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minift.errors import UserError
from minift.imbalance.losses import (
    class_priors,
    class_weights,
    focal_loss,
    logit_adjusted_loss,
    weighted_cross_entropy,
)
from minift.imbalance.sampling import random_oversample, undersample_indices
from minift.imbalance.smote import smote
from minift.train.features import fit_linear_head

BALANCES = ("none", "weights", "focal", "oversample", "undersample", "smote", "logit-adjust")
RESAMPLERS = ("oversample", "undersample", "smote")


def check_balance(balance: str) -> str:
    if balance not in BALANCES:
        raise UserError(f"unknown balance method {balance!r}; choose one of {', '.join(BALANCES)}")
    return balance


def balanced_loss(
    balance: str, labels: torch.Tensor, num_classes: int, gamma: float = 2.0, tau: float = 1.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """loss(logits, labels) for ``balance`` given the training labels (for the class
    frequencies); the resampling remedies change the rows and keep cross-entropy."""
    check_balance(balance)
    if balance == "weights":
        w = class_weights(labels, num_classes)
        return lambda z, y: weighted_cross_entropy(z, y, w)
    if balance == "focal":
        w = class_weights(labels, num_classes)
        return lambda z, y: focal_loss(z, y, gamma, alpha=w) / w[y].to(z).mean()
    if balance == "logit-adjust":
        pi = class_priors(labels, num_classes)
        return lambda z, y: logit_adjusted_loss(z, y, pi, tau)
    return lambda z, y: F.cross_entropy(z, y)


def resample(
    X: torch.Tensor, y: torch.Tensor, num_classes: int, balance: str, seed: int = 0, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training features and labels after ``balance``'s resampling (unchanged for the
    remedies that change the loss instead)."""
    g = torch.Generator().manual_seed(seed)
    if check_balance(balance) == "oversample":
        idx = random_oversample(y, num_classes, g)
    elif balance == "undersample":
        idx = undersample_indices(y, num_classes, g)
    elif balance == "smote":
        return smote(X, y, k=k, seed=seed)
    else:
        return X, y
    return X[idx], y[idx]


def fit_head(
    X: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    balance: str = "none",
    l2: float = 1e-3,
    seed: int = 0,
    k: int = 5,
    gamma: float = 2.0,
    max_iter: int = 200,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """W (K, C) and b (K,) of a linear head on features X (n, C), fitted with ``balance``
    (``loss``, a loss(logits, labels) of one's own, replaces the balance's loss)."""
    y = torch.as_tensor(y, dtype=torch.long)
    X_fit, y_fit = resample(X.double(), y, num_classes, balance, seed, k)
    loss_of = loss or balanced_loss(balance, y, num_classes, gamma)
    return fit_linear_head(X_fit, y_fit, num_classes, l2, loss_of, max_iter)
