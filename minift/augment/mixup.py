"""Mixup on pooled features: train on convex combinations of pairs of rows.

Zhang, Cisse, Dauphin and Lopez-Paz (2018), "mixup: beyond empirical risk minimization";
for text, where inputs are discrete, the mixing happens on embeddings or on the sentence
vector (Guo, Mao and Zhang 2019, "Augmenting data with mixup for sentence
classification"): here on the frozen backbone's pooled features. For each batch, with
lambda ~ Beta(alpha, alpha) and a random pairing j of its rows,

    x~ = lambda x_i + (1 - lambda) x_j,    y~ = lambda e_{y_i} + (1 - lambda) e_{y_j}

and the head trains on the cross-entropy with the soft target y~. It asks the classifier
to change linearly between training rows, which smooths its boundary where data is
scarce. alpha -> 0 puts lambda at 0 or 1: plain training (the baseline, below, uses the
same loop with mixing off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minift.errors import UserError
from minift.train.features import single_thread


def mix_batch(
    X: torch.Tensor, y_onehot: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mixed rows, mixed soft labels, lambda) for one batch."""
    if alpha <= 0:
        raise UserError(f"mixup needs alpha > 0, got {alpha} (no mixing: train without it)")
    # Beta(a, a) from two Gammas, drawn with the generator so that a seed reproduces it
    g1 = torch._standard_gamma(torch.full((1,), float(alpha), dtype=torch.float64), generator=generator)  # fmt: skip
    g2 = torch._standard_gamma(torch.full((1,), float(alpha), dtype=torch.float64), generator=generator)  # fmt: skip
    lam = float(g1 / (g1 + g2))
    perm = torch.randperm(len(X), generator=generator)
    return lam * X + (1 - lam) * X[perm], lam * y_onehot + (1 - lam) * y_onehot[perm], lam


def train_head(
    X: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    alpha: float | None = None,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """W, b of a linear head on standardised features trained by AdamW on mini-batches,
    with mixup (alpha > 0) or without (alpha None); folded back to apply to X itself."""
    if steps < 1 or batch_size < 1:
        raise UserError(f"need steps and batch_size >= 1, got {steps} and {batch_size}")
    g = torch.Generator().manual_seed(seed)
    X = X.double()
    mu, sigma = X.mean(0), X.std(0, unbiased=False).clamp_min(1e-8)
    Z = (X - mu) / sigma
    Y = F.one_hot(torch.as_tensor(y).long(), num_classes).double()
    head = torch.nn.Linear(X.shape[1], num_classes).double()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    with single_thread():
        _train(head, opt, Z, Y, alpha, steps, batch_size, g)
    W = head.weight.detach() / sigma
    return W, head.bias.detach() - W @ mu


def _train(head, opt, Z, Y, alpha, steps: int, batch_size: int, g: torch.Generator) -> None:
    for _ in range(steps):
        idx = torch.randint(0, len(Z), (batch_size,), generator=g)
        xb, yb = Z[idx], Y[idx]
        if alpha is not None:
            xb, yb, _ = mix_batch(xb, yb, alpha, g)
        loss = -(yb * F.log_softmax(head(xb), -1)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
