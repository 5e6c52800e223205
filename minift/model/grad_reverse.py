"""The gradient-reversal layer: identity going forward, -lambda times the gradient back.

Ganin and Lempitsky (2015), "Unsupervised domain adaptation by backpropagation"; Ganin
et al. (2016), "Domain-adversarial training of neural networks" (DANN). Put between a
feature extractor F and a classifier D of some nuisance attribute (the domain, or a
protected group), it turns one minimisation into the saddle point

    min_{F, C} max_D   L_task(C(F(x))) - lambda L_D(D(F(x)))

with a single backward pass: D descends L_D as usual, while F receives -lambda times
D's gradient and so moves to make the attribute *harder* to read from its features. The
forward pass is the identity, so the layer changes nothing at inference.

DANN ramps lambda from 0 to its final value as training progresses (their schedule,
lambda_p = 2 / (1 + exp(-10 p)) - 1 for progress p in [0, 1]) so that the domain
classifier's early, noisy gradients do not disturb the features before the task head
has learned anything: :func:`dann_lambda`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)  # a new tensor node: autograd must call backward below

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """x going forward; -lambd * (the incoming gradient) going back."""
    return _GradReverse.apply(x, float(lambd))


class GradientReversal(nn.Module):
    """The layer form of :func:`grad_reverse`, with ``lambd`` settable during training."""

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


def dann_lambda(progress: float, final: float = 1.0, gamma: float = 10.0) -> float:
    """Ganin et al.'s ramp: final * (2 / (1 + exp(-gamma p)) - 1), from 0 at p = 0 towards
    final at p = 1 (0.9999 of it at gamma = 10)."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must lie in [0, 1], got {progress}")
    return final * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)
