"""Pooled features of a frozen classifier, computed once for methods that train on them.

A classification model (minift.model.heads.SequenceClassifier) maps a text to one pooled
vector before its head. With the backbone frozen that vector never changes, so techniques
that work on features (SMOTE, mixup, a domain classifier, a head fitted in closed form)
compute it once for every row and train on the (n, C) matrix instead of the texts;
:func:`fit_linear_head` fits a linear head on that matrix to convergence, with any loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run small matrix products (a head on a few hundred rows) on one thread: a second
    thread buys nothing there, and on a loaded machine the threads' synchronisation can
    make the same fit many times slower (the probe saw 25x, minift.peft.probe)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def pooled_features(
    model: torch.nn.Module, batches: Iterable[dict], dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pooled features (n, C) of every row of ``batches`` (dicts with ``idx`` and
    ``attention_mask``, as minift.data.batching.classification_batch makes them) and their
    labels (n,), or None when the batches carry none. The model's mode is restored."""
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no pooled features; use a SequenceClassifier")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for b in batches:
        x = model.features(b["idx"].to(device), attention_mask=b["attention_mask"].to(device))
        feats.append(x.to(dtype).cpu())
        if "labels" in b:
            labels.append(b["labels"].cpu())
    model.train(was_training)
    if not feats:
        raise ValueError("no batches to extract features from")
    return torch.cat(feats), (torch.cat(labels) if labels else None)


def fit_linear_head(
    X: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float = 1e-3,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """W (K, C) and b (K,) minimising  loss(W z + b, y) + l2 ||W||^2  on standardised
    features z = (x - mu) / sigma (a round problem, which L-BFGS solves in few steps),
    folded back so that the head applies to x itself: W' = W / sigma, b' = b - W' mu.
    Full-batch L-BFGS in float64; ``loss`` defaults to cross-entropy. The bias is not
    penalised, so a constant shift of the logits (a change of priors) costs nothing."""
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"need features (n, C) and n labels, got {tuple(X.shape)} and {len(y)}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    loss = loss or F.cross_entropy
    X, y = X.double(), torch.as_tensor(y, dtype=torch.long)
    mu, sigma = X.mean(0), X.std(0, unbiased=False).clamp_min(1e-8)
    Z = (X - mu) / sigma
    W = torch.zeros(num_classes, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        value = loss(Z @ W.T + b, y) + l2 * W.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad(), single_thread():
        opt.step(closure)
    W, b = W.detach() / sigma, b.detach()
    return W, b - W @ mu
