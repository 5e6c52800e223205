"""The PPO loop for a language model, readable top to bottom (Schulman et al. 2017;
Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

    for each iteration:
        rollout   sample one response per prompt (KV cache, temperature T, no top-k/p)
        score     policy log-probs and values, reference log-probs, reward-model score
                  (minus a penalty when the response never produced the end token)
        reward    r_t = -beta KL_t, plus the score at the last token
        advantage GAE(gamma, lambda) over the response tokens, whitened over the batch
        optimise  ppo_epochs passes over the batch in shuffled minibatches (each
                  accumulated over grad_accum micro-batches): clipped policy loss
                  + vf_coef * clipped value loss, gradient clipping, AdamW
        control   update beta (adaptive or fixed KL controller), log everything

The implementation details follow Huang et al. 2024, "The N Implementation Details of
RLHF with PPO": left-padded rollouts with a distinct pad token, log-probabilities
recomputed at the sampling temperature, the score read at the end token, the missing-EOS
penalty, per-token KL, whitened advantages, value clipping, Adam's epsilon of 1e-5, and
no dropout (the model runs in eval mode: dropout would make the log-probabilities of the
same tokens differ between the rollout and the update).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from minift.rlhf import ppo
from minift.rlhf.policy import PolicyWithValue, Reference
from minift.rlhf.rollout import Rollout, check_fits, sample_responses

RewardFn = Callable[[Rollout], torch.Tensor]


@dataclass
class PPOConfig:
    """Defaults are those that work on the embedded default (file-words, the 1.3M-parameter
    base): 50 iterations of 64 rollouts take about a minute and a half of one CPU core."""

    iterations: int = 50
    batch_size: int = 64  # rollouts per iteration
    num_minibatches: int = 4  # per PPO epoch; must divide batch_size
    ppo_epochs: int = 2
    grad_accum: int = 1  # micro-batches per minibatch; must divide the minibatch size
    max_new_tokens: int = 24
    temperature: float = 1.0
    lr: float = 3e-4
    grad_clip: float | None = 1.0
    clip: float = 0.2  # policy ratio clip epsilon
    clip_value: float | None = 0.2  # value clip; None = unclipped value loss
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    kl_coef: float = 0.2  # beta; 0 turns the KL penalty off
    kl_estimator: str = "k1"  # the per-token KL in the reward: "k1" or "k3"
    adaptive_kl: bool = False
    kl_target: float = 6.0  # nats per response, for the adaptive controller
    kl_horizon: int = 10_000
    # Subtracted from the score of a response that never emitted the end token (as TRL
    # does; Huang et al. penalise such responses too). None = off.
    missing_eos_penalty: float | None = 1.0
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if min(self.iterations, self.batch_size, self.num_minibatches, self.grad_accum) < 1:
            raise ValueError(
                "iterations, batch_size, num_minibatches and grad_accum must be >= 1, got "
                f"{self.iterations}, {self.batch_size}, {self.num_minibatches}, {self.grad_accum}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by num_minibatches "
                f"{self.num_minibatches}; choose a batch size that is a multiple of it"
            )
        minibatch = self.batch_size // self.num_minibatches
        if minibatch % self.grad_accum:
            raise ValueError(
                f"the minibatch of {minibatch} rollouts (batch_size {self.batch_size} / "
                f"num_minibatches {self.num_minibatches}) is not divisible by grad_accum "
                f"{self.grad_accum}"
            )
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches


@dataclass
class PPOResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def reward_model_fn(reward_model) -> RewardFn:
    """A RewardModel as a reward function of a rollout (read at each last real token)."""

    @torch.no_grad()
    def score(rollout: Rollout) -> torch.Tensor:
        return reward_model(rollout.sequences, rollout.attention_mask)

    return score


class PPOTrainer:
    """model: the policy with its value function; reference: log-probs to stay close to;
    reward_fn(rollout) -> (B,) scores; prompts: token-id lists to draw each batch from;
    metrics_fn(rollout) -> extra metrics of each batch (e.g. a hidden ground truth)."""

    def __init__(
        self,
        model: PolicyWithValue,
        reference: Reference,
        reward_fn: RewardFn,
        prompts: Sequence[Sequence[int]],
        eos_id: int,
        pad_id: int,
        config: PPOConfig | None = None,
        metrics_fn: Callable[[Rollout], dict[str, float]] | None = None,
    ) -> None:
        self.config = config = config or PPOConfig()
        if not prompts:
            raise ValueError("PPO needs at least one prompt")
        check_fits(
            max(len(p) for p in prompts), config.max_new_tokens, model.policy.config.block_size
        )
        self.model, self.reference, self.reward_fn = model, reference, reward_fn
        self.prompts = [list(p) for p in prompts]
        self.eos_id, self.pad_id = eos_id, pad_id
        self.metrics_fn = metrics_fn
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, eps=1e-5, weight_decay=0.0)
        if config.adaptive_kl:
            self.kl_ctl = ppo.AdaptiveKLController(
                config.kl_coef, config.kl_target, config.kl_horizon
            )
        else:
            self.kl_ctl = ppo.FixedKLController(config.kl_coef)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.device = next(model.parameters()).device

    # ------------------------------------------------------------------ phase 1: experience
    @torch.no_grad()
    def make_experience(self) -> tuple[Rollout, dict[str, torch.Tensor], dict[str, float]]:
        cfg = self.config
        times = {}
        t0 = time.perf_counter()
        picks = torch.randint(0, len(self.prompts), (cfg.batch_size,), generator=self.generator)
        rollout = sample_responses(
            self.model.policy, [self.prompts[i] for i in picks.tolist()], cfg.max_new_tokens,
            self.eos_id, self.pad_id, cfg.temperature, generator=self.generator,
        )  # fmt: skip
        self._sync()
        times["t_generate"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        seq, att, P, mask = (
            rollout.sequences, rollout.attention_mask, rollout.prompt_len, rollout.response_mask,
        )  # fmt: skip
        logp, values, entropy = self.model.evaluate(seq, att, P, cfg.temperature)
        ref_logp = self.reference.logprobs(seq, att, P, cfg.temperature)
        score = self.reward_fn(rollout).float().to(logp.device)
        self._sync()
        times["t_score"] = time.perf_counter() - t0

        raw_score = score.clone()
        if cfg.missing_eos_penalty is not None:
            score = score - cfg.missing_eos_penalty * (~rollout.has_eos).float()
        kl = ppo.kl_estimate(logp, ref_logp, cfg.kl_estimator) * mask
        rewards = ppo.shape_rewards(score, kl, mask, self.kl_ctl.value)
        if cfg.whiten_rewards:
            rewards = ppo.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = ppo.gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = ppo.masked_whiten(advantages, mask)

        k1 = (logp - ref_logp) * mask
        stats = {
            "score": float(raw_score.mean()),
            "reward": float(score.mean() - self.kl_ctl.value * kl.sum(1).mean()),
            "kl": float(k1.sum(1).mean()),
            "kl_k3": float((ppo.kl_estimate(logp, ref_logp, "k3") * mask).sum(1).mean()),
            "entropy": float(ppo.masked_mean(entropy, mask)),
            "eos_rate": float(rollout.has_eos.float().mean()),
            "length": float(mask.sum(1).float().mean()),
            "explained_variance": ppo.explained_variance(values, returns, mask),
            "kl_coef": self.kl_ctl.value,
            **times,
        }
        if self.metrics_fn is not None:
            stats.update(self.metrics_fn(rollout))
        batch = {"logp": logp, "values": values, "advantages": advantages, "returns": returns}
        return rollout, batch, stats

    # ------------------------------------------------------------------ phase 2: learning
    def optimise(self, rollout: Rollout, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        mb, micro = cfg.minibatch_size, cfg.minibatch_size // cfg.grad_accum
        sums: dict[str, float] = {}
        n = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size, generator=self.generator)
            for start in range(0, cfg.batch_size, mb):
                self.optimizer.zero_grad(set_to_none=True)
                for m in range(cfg.grad_accum):
                    rows = order[start + m * micro : start + (m + 1) * micro]
                    stats = self.micro_step(
                        rollout.select(rows), {k: v[rows] for k, v in batch.items()}
                    )
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    n += 1
                if cfg.grad_clip:
                    params = [p for g in self.optimizer.param_groups for p in g["params"]]
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                self.optimizer.step()
        return {k: v / n for k, v in sums.items()}

    def micro_step(self, rollout: Rollout, old: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        mask = rollout.response_mask
        logp, values, entropy = self.model.evaluate(
            rollout.sequences, rollout.attention_mask, rollout.prompt_len, cfg.temperature
        )
        pg_loss, pg_stats = ppo.policy_loss(logp, old["logp"], old["advantages"], mask, cfg.clip)
        vf_loss, vf_stats = ppo.value_loss(
            values, old["values"], old["returns"], mask, cfg.clip_value
        )
        loss = pg_loss + cfg.vf_coef * vf_loss
        (loss / cfg.grad_accum).backward()
        stats = {"policy_loss": float(pg_loss.detach()), "value_loss": float(vf_loss.detach())}
        return {**stats, **pg_stats, **vf_stats}

    # ------------------------------------------------------------------ the loop
    def _sync(self) -> None:
        """Wait for queued GPU work, so that the phase timings are the phases' own."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, iteration: int) -> dict[str, float]:
        self.model.eval()  # no dropout anywhere: see the module docstring
        rollout, batch, stats = self.make_experience()
        t0 = time.perf_counter()
        stats.update(self.optimise(rollout, batch))
        self._sync()
        stats["t_optimise"] = time.perf_counter() - t0
        self.kl_ctl.update(stats["kl"], self.config.batch_size)
        return {"iteration": iteration, **stats}

    def fit(self, on_iteration: Callable[[dict], None] | None = None) -> PPOResult:
        from tqdm.auto import tqdm

        result = PPOResult()
        t0 = time.perf_counter()
        bar = tqdm(range(1, self.config.iterations + 1), desc="ppo", leave=False,
                   disable=None if self.config.progress else True)  # fmt: skip
        for it in bar:
            row = self.step(it)
            result.history.append(row)
            if on_iteration is not None:
                on_iteration(row)
            bar.set_postfix(score=f"{row['score']:.2f}", kl=f"{row['kl']:.2f}", refresh=False)
        result.seconds = time.perf_counter() - t0
        return result
