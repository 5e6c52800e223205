"""Domain-adversarial training (DANN) on frozen pooled features.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand and Lempitsky (2016),
"Domain-adversarial training of neural networks". Three parts:

    f = G_f(x)                  a feature extractor
    y_hat = G_y(f)              the task's classifier, trained on labelled source rows
    d_hat = G_d(R_lambda(f))    a domain classifier (source 0, target 1) behind a
                                gradient-reversal layer (minift.model.grad_reverse)

trained on  L = CE(y_hat, y) on source rows  +  BCE(d_hat, d) on source and target rows.
G_d learns to tell the domains apart; the reversal hands G_f -lambda times that gradient,
so G_f learns features from which the domain *cannot* be read while the task still can:
the term the domain-adaptation bound (Ben-David et al. 2010) says a target error pays.
lambda follows DANN's ramp from 0 (minift.model.grad_reverse.dann_lambda).

Here x is the frozen backbone's pooled feature, computed once, and G_f a one-layer MLP on
it, so a run takes seconds on a CPU. Its baseline is the same network trained with
lambda = 0 (the domain classifier trains, its gradient never reaches G_f): the same
capacity, steps and learning rate, only the adversary switched off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.errors import UserError
from minift.model.grad_reverse import GradientReversal, dann_lambda
from minift.train.features import single_thread


class DANN(nn.Module):
    """G_f (Linear + ReLU), G_y (Linear) and G_d (an MLP behind gradient reversal); the
    inputs are standardised with the mean and scale of both domains' rows together."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("sigma", torch.ones(in_dim))
        self.features = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)
        self.reverse = GradientReversal(0.0)
        self.domain = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x.to(self.mu) - self.mu) / self.sigma)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.embed(x)
        return self.classifier(f), self.domain(self.reverse(f)).squeeze(-1)


@dataclass
class DANNConfig:
    hidden: int = 64
    steps: int = 600
    lr: float = 1e-3
    batch_size: int = 64  # rows of each domain per step
    lambd: float = 1.0  # the final reversal weight; 0 trains the source-only baseline
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.hidden < 1 or not self.lr > 0:
            raise UserError(
                f"DANN needs steps, batch_size, hidden >= 1 and lr > 0, got {self.steps}, "
                f"{self.batch_size}, {self.hidden}, {self.lr}"
            )
        if self.lambd < 0:
            raise UserError(f"the reversal weight lambda must be >= 0, got {self.lambd}")


def train_dann(
    X_source: torch.Tensor,
    y_source: torch.Tensor,
    X_target: torch.Tensor,
    num_classes: int,
    config: DANNConfig | None = None,
) -> DANN:
    """Train a DANN on labelled source features and unlabelled target features; its
    losses every 50 steps are in ``model.history``."""
    config = config or DANNConfig()
    if len(X_source) != len(y_source) or not len(X_source) or not len(X_target):
        raise UserError(f"need labelled source rows and target rows, got {len(X_source)} / {len(y_source)} / {len(X_target)}")  # fmt: skip
    torch.manual_seed(config.seed)
    model = DANN(X_source.shape[1], num_classes, config.hidden)
    both = torch.cat([X_source, X_target]).float()
    model.mu.copy_(both.mean(0))
    model.sigma.copy_(both.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(config.seed)
    Xs, Xt, ys = X_source.float(), X_target.float(), torch.as_tensor(y_source).long()
    model.train()
    history = []
    with single_thread():
        _train(model, opt, Xs, ys, Xt, config, g, history)
    model.history = history
    return model.eval()


def _train(model, opt, Xs, ys, Xt, config: DANNConfig, g: torch.Generator, history: list) -> None:
    """The loop: one source and one target batch a step, lambda on DANN's ramp."""
    B = config.batch_size
    for step in range(config.steps):
        model.reverse.lambd = dann_lambda(step / max(1, config.steps - 1), config.lambd)
        i = torch.randint(0, len(Xs), (B,), generator=g)
        j = torch.randint(0, len(Xt), (B,), generator=g)
        logits, d_source = model(Xs[i])
        _, d_target = model(Xt[j])
        task_loss = F.cross_entropy(logits, ys[i])
        domain_loss = F.binary_cross_entropy_with_logits(
            torch.cat([d_source, d_target]), torch.cat([torch.zeros(B), torch.ones(B)])
        )
        opt.zero_grad(set_to_none=True)
        (task_loss + domain_loss).backward()
        opt.step()
        if step % 50 == 0 or step == config.steps - 1:
            history.append({"step": step, "task_loss": task_loss.item(), "domain_loss": domain_loss.item(), "lambda": model.reverse.lambd})  # fmt: skip


@torch.no_grad()
def dann_predict(model: DANN, X: torch.Tensor) -> torch.Tensor:
    """The task's predicted class of each row."""
    return model(X.float())[0].argmax(-1)


@torch.no_grad()
def dann_features(model: DANN, X: torch.Tensor) -> torch.Tensor:
    """G_f's features of each row (what the A-distance of the adapted model reads)."""
    return model.embed(X.float()).double()
