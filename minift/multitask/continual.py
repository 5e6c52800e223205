"""Learning tasks one after another without forgetting the earlier ones.

Fine-tuning on task B moves the weights that task A relied on ("catastrophic forgetting",
McCloskey and Cohen 1989). Three remedies live here; the fourth, one LoRA adapter per
task on a frozen base, forgets nothing by construction and needs no code of its own.

- **EWC**, elastic weight consolidation (Kirkpatrick et al. 2017): after task A, keep its
  weights theta*_A and a diagonal Fisher information F_A, and train B with
      L_B(theta) + (lambda / 2) * sum_j F_A,j * (theta_j - theta*_A,j)^2,
  a quadratic (Laplace) approximation of A's log-posterior: weights A's loss is sharp in
  are held, the rest are free. F is the *empirical* Fisher, the mean over A's examples of
  the squared per-example gradient of the loss at the true label,
      F_j = (1/N) sum_n (d l_n / d theta_j)^2.
  After several tasks the penalties add up (one per task, as in the paper).
- **L2-SP** (Li, Grandvalet and Davoine 2018): (alpha / 2) * ||theta - theta_0||^2 towards
  the *starting* weights theta_0: EWC with F = 1 and one anchor.
- **Experience replay** with a reservoir buffer (Vitter 1985, algorithm R; Chaudhry et al.
  2019, "On tiny episodic memories"): a fixed-size uniform sample of everything seen so
  far, mixed into the new task's batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn


def _named_trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def fisher_diagonal(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    examples: Iterable[object],
) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher: the mean over ``examples`` of the squared gradient
    of ``loss_fn(model, example)``, one example at a time (the square of a batch's mean
    gradient would be a different, smaller number)."""
    params = _named_trainable(model)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it predicts
    n = 0
    for example in examples:
        grads = torch.autograd.grad(
            loss_fn(model, example), list(params.values()), allow_unused=True
        )
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                fisher[name] += g.detach() ** 2
        n += 1
    model.train(was_training)
    if n == 0:
        raise ValueError("the Fisher needs at least one example")
    return {name: f / n for name, f in fisher.items()}


class EWC:
    """Kirkpatrick et al. (2017): penalty(model) = (lam / 2) sum_tasks sum_j F_j (theta_j - theta*_j)^2."""

    def __init__(self, lam: float) -> None:
        if not lam >= 0:
            raise ValueError(f"the EWC strength lambda must be >= 0, got {lam}")
        self.lam = lam
        self.anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    def consolidate(self, model: nn.Module, fisher: dict[str, torch.Tensor]) -> None:
        """Remember the weights just learned and how much each one mattered."""
        params = _named_trainable(model)
        missing = sorted(set(fisher) - set(params))
        if missing:
            raise ValueError(f"Fisher given for parameters the model lacks: {missing[:3]}")
        anchor = {n: params[n].detach().clone() for n in fisher}
        self.anchors.append((anchor, {n: f.detach().clone() for n, f in fisher.items()}))

    def penalty(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = next(iter(params.values())).new_zeros(())
        for anchor, fisher in self.anchors:
            for name, theta_star in anchor.items():
                total = total + (fisher[name] * (params[name] - theta_star) ** 2).sum()
        return 0.5 * self.lam * total


class L2SP:
    """Li et al. (2018): penalty(model) = (alpha / 2) ||theta - theta_0||^2 over the
    parameters present at construction (the starting point, e.g. the pretrained backbone)."""

    def __init__(self, model: nn.Module, alpha: float, prefix: str = "") -> None:
        if not alpha >= 0:
            raise ValueError(f"the L2-SP strength alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.start = {
            n: p.detach().clone()
            for n, p in model.named_parameters()
            if p.requires_grad and n.startswith(prefix)
        }

    def penalty(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = next(iter(params.values())).new_zeros(())
        for name, theta0 in self.start.items():
            total = total + ((params[name] - theta0) ** 2).sum()
        return 0.5 * self.alpha * total


class ReservoirBuffer:
    """A uniform sample of at most ``capacity`` items from a stream of unknown length.

    Algorithm R (Vitter 1985): the n-th item (1-based) replaces a random slot with
    probability capacity / n, so after any number of items each one seen so far is in
    the buffer with the same probability min(1, capacity / n)."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"the replay buffer needs capacity >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list = []
        self.seen = 0
        self.rng = random.Random(seed)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        j = self.rng.randrange(self.seen)
        if j < self.capacity:
            self.items[j] = item

    def extend(self, items: Iterable) -> None:
        for item in items:
            self.add(item)

    def sample(self, k: int, rng: random.Random) -> list:
        """k items drawn with replacement (the buffer may hold fewer than k)."""
        if not self.items:
            raise ValueError("the replay buffer is empty")
        return [self.items[rng.randrange(len(self.items))] for _ in range(k)]

    def __len__(self) -> int:
        return len(self.items)
