"""Per-task loss weights: fixed, or learned from each task's homoscedastic uncertainty.

Kendall, Gal and Cipolla (2018), "Multi-task learning using uncertainty to weigh losses
for scene geometry and semantics": model task i's output as noisy with a learned scale
sigma_i; maximising the likelihood gives (their eq. 7, with s_i = log sigma_i^2 learned
instead of sigma_i for stability)

    L = sum_i  0.5 * exp(-s_i) * L_i  +  0.5 * s_i

A noisy task (a large L_i it cannot bring down) raises its s_i and so lowers its own
weight exp(-s_i) / 2; the 0.5 * s_i term stops every s_i from running to infinity. For a
fixed L_i the optimum is exp(s_i) = L_i: the learned variance is the task's loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class FixedWeighting(nn.Module):
    """L = sum_i w_i L_i with given weights (default 1 each)."""

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        weights = weights or {}
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            raise ValueError(f"loss weights given for tasks not trained: {unknown}; tasks: {tasks}")
        self.tasks = list(tasks)
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.weights[task] * loss

    def report(self) -> dict[str, float]:
        return dict(self.weights)


class UncertaintyWeighting(nn.Module):
    """Kendall et al. (2018): 0.5 * exp(-s_task) * L_task + 0.5 * s_task, s learned."""

    def __init__(self, tasks: list[str], init: float = 0.0) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.full((len(tasks),), float(init)))

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[self.tasks.index(task)]
        return 0.5 * torch.exp(-s) * loss + 0.5 * s

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed loss of several tasks at once (every task in one step)."""
        return sum(self(task, loss) for task, loss in losses.items())

    def report(self) -> dict[str, float]:
        """Each task's effective weight 0.5 * exp(-s_i)."""
        return {t: 0.5 * float(torch.exp(-s)) for t, s in zip(self.tasks, self.log_vars.detach())}


WEIGHTINGS = ("fixed", "uncertainty")


def make_weighting(
    kind: str, tasks: list[str], weights: dict[str, float] | None = None
) -> nn.Module:
    if kind == "fixed":
        return FixedWeighting(tasks, weights)
    if kind == "uncertainty":
        if weights:
            raise ValueError("uncertainty weighting learns its weights; give no fixed weights")
        return UncertaintyWeighting(tasks)
    raise ValueError(f"unknown loss weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")
