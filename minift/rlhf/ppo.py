"""The arithmetic of PPO for language models: rewards, advantages, losses, KL control.

Everything here is a pure function of tensors (or a two-line controller), so each piece
is tested against its formula. The loop that uses them is minift.rlhf.trainer.

A response is an episode: state = prompt + tokens so far, action = the next token. All
tensors are (B, R) over the R response columns, with ``mask`` 1 on real response tokens
(up to and including the end token) and 0 on the padding after it.

Reward (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022): a KL penalty at
every token and the reward model's score at the last one,

    r_t = -beta * KL_t  (+ score on the last real token)

KL estimators of KL(pi || ref) from one sample x ~ pi, with log-ratio l = log pi(x) -
log ref(x) (Schulman 2020, "Approximating KL divergence"):

    k1 = l                       unbiased, can be negative for one sample
    k3 = (e^{-l} - 1) + l        unbiased, never negative, lower variance

Generalised advantage estimation (Schulman et al. 2016):

    delta_t = r_t + gamma V_{t+1} - V_t,    A_t = delta_t + gamma lambda A_{t+1},
    returns_t = A_t + V_t                   (V after the last token is 0)

Clipped surrogate objectives (Schulman et al. 2017), ratio rho = exp(logp - logp_old):

    L_pi = E[ max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) ]
    L_V  = 1/2 E[ max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2) ]

Adaptive KL coefficient (Ziegler et al. 2019): e = clip(KL / KL_target - 1, -0.2, 0.2),
beta <- beta (1 + e n / horizon), with n the number of samples in the batch.

Implementation choices follow Huang et al. 2024, "The N Implementation Details of RLHF
with PPO": per-token KL, reward at the last token, gamma = 1, whitened advantages, value
clipping, masked statistics over real tokens only.
"""

from __future__ import annotations

import torch


# ---------------------------------------------------------------------------- masked stats
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is 1 (over all of them, or along dim)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over the masked positions (Bessel-corrected when unbiased)."""
    mean = masked_mean(x, mask)
    n = mask.to(x.dtype).sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / std over the masked positions; shift_mean=False keeps the mean (scales
    only, as Huang et al. do for rewards). Masked-out positions come back as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ---------------------------------------------------------------------------- KL and rewards
def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from sampled tokens' log-probabilities."""
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"KL estimator must be 'k1' or 'k3', got {estimator!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a (B, T) mask (0 for an all-zero row)."""
    positions = torch.arange(mask.size(1), device=mask.device)
    return (mask.long() * positions).argmax(dim=1)


def shape_rewards(
    score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * KL_t everywhere, plus ``score`` (B,) at the last real
    token of each response."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    last = last_token_index(mask)
    rewards[torch.arange(rewards.size(0), device=rewards.device), last] += score.to(rewards.dtype)
    return rewards


# ---------------------------------------------------------------------------- advantages
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by generalised advantage estimation, backwards over time.
    Rewards and values past a response's end count as 0, so the last real token's
    advantage is r_T - V_T."""
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        next_value = values[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * m
    return advantages, (advantages + values) * m


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns]: 1 is a perfect critic, 0 no better than a
    constant, negative worse."""
    var = masked_var(returns, mask)
    if var <= 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask) / var)


# ---------------------------------------------------------------------------- losses
def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, averaged over real tokens; also the clip fraction and the
    approximate KL between the new and the old policy (k3, as a diagnostic)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": float(masked_mean((clipped > unclipped).float(), mask)),
            "approx_kl": float(masked_mean(torch.expm1(-log_ratio) + log_ratio, mask)),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Half the squared error to the returns, clipped around the old values (clip=None
    turns clipping off); also the fraction of tokens where the clipped term won."""
    err = (values - returns) ** 2
    if clip is None:
        return 0.5 * masked_mean(err, mask), {"vf_clipfrac": 0.0}
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    return loss, {"vf_clipfrac": float(masked_mean((err_clipped > err).float(), mask))}


# ---------------------------------------------------------------------------- KL control
class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019: move beta so that the measured KL tracks ``target``, by at most
    20% of the way per horizon's worth of samples (a proportional controller)."""

    def __init__(self, init: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"KL target and horizon must be > 0, got {target}, {horizon}")
        self.value, self.target, self.horizon = float(init), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
