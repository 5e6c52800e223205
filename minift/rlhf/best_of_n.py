"""Best-of-n sampling (rejection sampling) under a reward model: the baseline every RLHF
method should be compared with (Stiennon et al. 2020; Nakano et al. 2021; Gao et al.
2023, "Scaling Laws for Reward Model Overoptimization").

Sample n responses from the unchanged policy, keep the one the reward model scores
highest. No weights move. The KL of the best-of-n distribution to the policy it samples
from is at most log n - (n - 1) / n (Stiennon et al. 2020, appendix; Beirami et al. 2024),
so n buys optimisation pressure on a known KL budget, at n times the sampling cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minift.rlhf.rollout import Rollout, sample_responses


def best_of_n_kl_bound(n: int) -> float:
    """The analytic KL(best-of-n || policy) bound: log n - (n - 1) / n nats."""
    return math.log(n) - (n - 1) / n


@dataclass
class BestOfN:
    rollout: Rollout  # the chosen response for each prompt
    scores: torch.Tensor  # (B,) its score
    all_scores: torch.Tensor  # (B, n) the scores of every sample


@torch.no_grad()
def best_of_n(
    policy,
    score_fn: Callable[[Rollout], torch.Tensor],
    prompts: Sequence[Sequence[int]],
    n: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> BestOfN:
    """For each prompt, the highest-scoring of n sampled responses (ties: the first)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    B = len(prompts)
    repeated = [list(p) for p in prompts for _ in range(n)]  # prompt i -> rows i*n .. i*n+n-1
    rollout = sample_responses(
        policy, repeated, max_new_tokens, eos_id, pad_id, temperature, generator
    )
    scores = score_fn(rollout).float().view(B, n)
    best = scores.argmax(dim=1)
    rows = torch.arange(B, device=best.device) * n + best
    return BestOfN(rollout.select(rows.to(rollout.sequences.device)), scores.max(1).values, scores)
