"""Which task trains at each step: the task-mixing sampler of multi-task training.

With tasks of n_1, ..., n_k training examples, T5 (Raffel et al. 2020, section 3.5.2)
compares three ways of mixing them into one stream of batches:

- **examples-proportional**: r_i = n_i / sum_j n_j, every example seen about equally often;
  a big task drowns a small one;
- **temperature-scaled**: r_i proportional to min(n_i, K) ** (1 / T). The cap K stops a
  huge task from taking everything; T = 1 is (capped) proportional mixing and T -> inf
  tends to equal mixing, which is what raising every rate to the power 0 gives;
- **equal**: r_i = 1 / k; here as round robin (task ``step % k``), which has the same
  long-run rates and no sampling noise.

The sampler is a pure function of (seed, step), like every batch of the Trainer
(minift.seeding), so a resumed run draws the same tasks.
"""

from __future__ import annotations

import math

import torch

from minift.seeding import batch_generator

SCHEMES = ("proportional", "temperature", "equal")
_TASK_STREAM = 7_919  # a stream of its own, apart from the rows drawn at the same step


def mixing_rates(
    sizes: list[int], scheme: str = "proportional", temperature: float = 1.0, cap: float = math.inf
) -> list[float]:
    """The long-run fraction of steps each task gets (sums to 1)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"every task needs at least one training example, got sizes {sizes}")
    if not temperature > 0 or not cap > 0:
        raise ValueError(f"temperature and cap must be > 0, got {temperature} and {cap}")
    if scheme == "equal":
        return [1.0 / len(sizes)] * len(sizes)
    if scheme == "proportional":
        weights = [float(n) for n in sizes]
    else:
        # In log space: min(n, K) ** (1/T) overflows nothing, and T = inf gives all equal.
        logs = [math.log(min(n, cap)) / temperature for n in sizes]
        top = max(logs)
        weights = [math.exp(x - top) for x in logs]
    total = sum(weights)
    return [w / total for w in weights]


class TaskSampler:
    """task_at(step) -> the index of the task that trains at ``step``."""

    def __init__(
        self,
        sizes: list[int],
        scheme: str = "proportional",
        temperature: float = 1.0,
        cap: float = math.inf,
        seed: int = 0,
    ) -> None:
        self.scheme = scheme
        self.rates = mixing_rates(sizes, scheme, temperature, cap)
        self.seed = seed
        self._probs = torch.tensor(self.rates, dtype=torch.float64)

    def task_at(self, step: int) -> int:
        if self.scheme == "equal":
            return step % len(self.rates)
        g = batch_generator(self.seed, step, stream=_TASK_STREAM)
        return int(torch.multinomial(self._probs, 1, generator=g))

    def counts(self, steps: int, start: int = 0) -> list[int]:
        """How many of the steps start..start+steps-1 each task gets."""
        out = [0] * len(self.rates)
        for step in range(start, start + steps):
            out[self.task_at(step)] += 1
        return out
