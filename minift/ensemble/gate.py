r"""A gating network: weights over the members that depend on the input (conditional
weighting; the mixture of experts of Jacobs, Jordan, Nowlan and Hinton 1991).

A fixed weight per member trusts each member equally on every input. A gate g(x) looks
at the input and weights the members for it:

    p(y | x) = sum_m g_m(x) p_m(y | x),     g(x) = softmax(V h(x) + c),

with h(x) a feature of the input (here the frozen base model's mean hidden state). It is
trained on validation data by the mixture's negative log-likelihood, -log p(y_i | x_i),
whose gradient moves g_m(x) toward the members that gave the truth a high probability on
inputs like x: the gate learns *which member to trust where*. The members stay frozen,
as in LoRAHub (Huang et al. 2023) and MoLE (Wu et al. 2024), which learn such weights over
LoRA adapters.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from minift.ensemble.combine import EPS, check_probs
from minift.errors import UserError


class GatingNetwork(nn.Module):
    """g(h) = softmax(V h + c): (N, F) features -> (N, M) weights summing to 1."""

    def __init__(self, n_features: int, n_members: int) -> None:
        super().__init__()
        if n_features < 1 or n_members < 1:
            raise UserError(f"a gate needs features and members, got {n_features} and {n_members}")  # fmt: skip
        # Each feature standardised by its mean and spread on the gate's training data.
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.linear = nn.Linear(n_features, n_members)
        nn.init.zeros_(self.linear.weight)  # starts as the uniform average
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear((features - self.mean) / self.std), -1)

    @torch.no_grad()
    def pin(self, member: int, strength: float = 1e4) -> GatingNetwork:
        """Send every input to ``member`` (a test of the mixture, and an ablation)."""
        self.linear.weight.zero_()
        self.linear.bias.fill_(0.0)
        self.linear.bias[member] = strength
        return self


def mixture(probs, weights: torch.Tensor) -> torch.Tensor:
    """(N, C): sum_m weights[n, m] p_m(. | x_n), for per-input weights (N, M)."""
    p = check_probs(probs)
    if weights.shape != (p.shape[1], p.shape[0]):
        raise UserError(f"gate weights must be (examples, members) = {(p.shape[1], p.shape[0])}, got {tuple(weights.shape)}")  # fmt: skip
    return torch.einsum("nm,mnc->nc", weights.to(p.dtype), p)


def fit_gate(
    features: torch.Tensor,
    probs,
    labels,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> GatingNetwork:
    """A gate trained by the mixture NLL on (features, member probabilities, labels),
    full-batch Adam in float64 (a few hundred examples: no mini-batches needed)."""
    p = check_probs(probs, labels)
    feats = torch.as_tensor(features, dtype=torch.float64)
    if feats.dim() != 2 or feats.shape[0] != p.shape[1]:
        raise UserError(f"features must be (examples, F) with {p.shape[1]} examples, got {tuple(feats.shape)}")  # fmt: skip
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    picked = p[:, torch.arange(len(y)), y].t()  # (N, M)
    torch.manual_seed(seed)
    gate = GatingNetwork(feats.shape[1], p.shape[0]).double()
    gate.mean.copy_(feats.mean(0))
    gate.std.copy_(feats.std(0).clamp_min(1e-6) if len(feats) > 1 else torch.ones(feats.shape[1]))
    opt = torch.optim.Adam(gate.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = -(gate(feats) * picked).sum(-1).clamp_min(EPS).log().mean()
        loss.backward()
        opt.step()
    return gate.eval()
