"""A linear probe fitted to convergence on frozen features: the baseline of transfer.

With the backbone frozen, a text's pooled features x never change, so the probe is plain
multinomial logistic regression on the fixed (n, C) feature matrix. It is convex: fitted
to its optimum it is the best any linear head on these features can do, and the line a
parameter-efficient method must clear to be worth training anything inside the network
(Alain and Bengio 2016, "Understanding intermediate layers using linear classifier
probes"; Kumar et al. 2022 compare probing with fine-tuning). Trained with a few dozen
SGD steps instead, it stops far short of that line, and comparisons against it flatter
every other method.

The fit, on standardised features z = (x - mu) / sigma (L-BFGS converges in far fewer
iterations on a round problem):

    min_{W, b}  (1/n) sum_i CE(W z_i + b, y_i) + l2 * ||W||^2

solved in float64 by full-batch L-BFGS with a strong-Wolfe line search. The strength l2
is chosen by k-fold cross-validation on the *training* rows (never on the validation
rows the result is reported on). The standardisation is folded back into the head,
W' = W / sigma and b' = b - W' mu, so the model keeps its usual head: logits = W' x + b'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from minift.model.heads import SequenceClassifier
from minift.train.features import fit_linear_head

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@torch.no_grad()
def extract_features(
    model: SequenceClassifier, batches: Iterable[dict]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features (n, C) in float64 and the labels (n,) of every row in ``batches``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for b in batches:
        x = model.features(b["idx"].to(device), attention_mask=b["attention_mask"].to(device))
        feats.append(x.double().cpu())
        labels.append(b["labels"].cpu())
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def fit_logistic_regression(
    X: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (K, C) and bias (K,) minimising the L2-penalised cross-entropy above, in
    the coordinates of X itself: minift.train.features.fit_linear_head, the one fitter the
    probe and the frozen-feature heads of the imbalance and adaptation packages share."""
    return fit_linear_head(X, y, num_labels, l2=l2, max_iter=max_iter)


def cross_validated_l2(
    X: torch.Tensor,
    y: torch.Tensor,
    num_labels: int,
    grid: Sequence[float] = L2_GRID,
    folds: int = 3,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The l2 in ``grid`` with the best mean held-out accuracy over ``folds`` splits of
    the training rows, and each value's accuracy (ties go to the stronger penalty)."""
    if folds < 2 or len(X) < folds:
        raise ValueError(f"need 2 <= folds <= rows, got {folds} folds for {len(X)} rows")
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    parts = order.chunk(folds)
    scores = {}
    for l2 in grid:
        correct = 0
        for k, held in enumerate(parts):
            kept = torch.cat([p for j, p in enumerate(parts) if j != k])
            # a choice between penalties needs the ranking, not the last digits
            W, b = fit_logistic_regression(X[kept], y[kept], num_labels, l2, max_iter=100)
            correct += int(((X[held] @ W.T + b).argmax(-1) == y[held]).sum())
        scores[l2] = correct / len(X)
    best = max(scores.values())
    return max(l2 for l2, s in scores.items() if s == best), scores


@torch.no_grad()
def fit_probe_head(
    model: SequenceClassifier, batches: Iterable[dict], l2: float | None = None
) -> dict:
    """Fit ``model.head`` to convergence on the frozen features of ``batches`` (every
    training row once); l2=None chooses it by cross-validation. Returns what was chosen."""
    if not isinstance(model, SequenceClassifier) or model.num_labels < 2:
        raise ValueError("a linear probe needs a classification model with >= 2 labels")
    X, y = extract_features(model, batches)
    scores = None
    if l2 is None:
        l2, scores = cross_validated_l2(X, y, model.num_labels)
    with torch.enable_grad():
        W, b = fit_logistic_regression(X, y, model.num_labels, l2)
    model.head.weight.copy_(W.to(model.head.weight))
    model.head.bias.copy_(b.to(model.head.bias))
    train_accuracy = ((X @ W.T + b).argmax(-1) == y).double().mean().item()
    return {"l2": l2, "cv_accuracy": scores, "train_accuracy": train_accuracy, "rows": len(y)}
