"""Direct preference optimisation (Rafailov et al. 2023, "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model").

The KL-regularised RL objective max E[r] - beta KL(pi || ref) has the closed-form optimum
pi*(y|x) proportional to ref(y|x) exp(r(x, y) / beta). Turned around, every policy defines
an implicit reward r(x, y) = beta log(pi(y|x) / ref(y|x)) (+ a term of x alone, which
cancels in a comparison). Putting that reward into the Bradley-Terry likelihood gives a
loss on the policy directly, with no reward model and no sampling:

    loss = -log sigmoid(beta [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))])

log pi(y) is the sum of the response tokens' log-probabilities (end token included).
label_smoothing eps assumes each label is flipped with probability eps (conservative DPO,
Mitchell 2023): loss = (1 - eps) * loss(+) + eps * loss(-).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from minift.model import GPT
from minift.rlhf.preference import EncodedPairs, encode_pairs, pair_batch
from minift.rlhf.rollout import token_logprobs
from minift.seeding import sample_rows
from minift.train import TrainConfig, Trainer


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, implicit rewards of chosen, of rejected) from sequence log-probs (B,)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    logits = chosen_reward - rejected_reward
    loss = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return loss.mean(), chosen_reward.detach(), rejected_reward.detach()


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log p(token) over each row's response tokens: (B,)."""
    idx, mask = batch["idx"], batch["response_mask"]
    logits = model(idx, attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = token_logprobs(logits, idx[:, 1:])
    return (logp * mask[:, 1:].to(logp.dtype)).sum(1)


@torch.no_grad()
def pair_logprobs(
    model, pairs: EncodedPairs, enc, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(chosen), log pi(rejected)) of every pair."""
    device = model.lm_head.weight.device
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch):
        rows = range(i, min(i + batch, len(pairs)))
        b = {k: v.to(device) for k, v in pair_batch(pairs, rows, enc).items()}
        lp = sequence_logprobs(model, b).cpu()
        chosen.append(lp[: len(rows)])
        rejected.append(lp[len(rows) :])
    return torch.cat(chosen), torch.cat(rejected)


def train_config(**changes: Any) -> TrainConfig:
    """The TrainConfig of a DPO run: 150 steps at lr 3e-4 with 10 warm-up steps, no weight
    decay, an evaluation every 50 steps and one before the first (when there are
    validation pairs); ``changes`` override any of them."""
    defaults = dict(
        steps=150, lr=3e-4, warmup_steps=10, weight_decay=0.0, eval_every=50, eval_at_start=True,
        progress=False, desc="dpo",
    )  # fmt: skip
    return TrainConfig(**{**defaults, **changes})


@dataclass
class DPOConfig:
    batch_size: int = 32  # pairs per step
    beta: float = 0.1
    label_smoothing: float = 0.0
    train: TrainConfig = field(default_factory=train_config)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.train.steps < 1:
            raise ValueError(
                f"DPO needs batch_size >= 1 and steps >= 1, got {self.batch_size} and "
                f"{self.train.steps}"
            )
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass
class DPOResult:
    model: GPT
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_dpo(
    policy: GPT,
    enc,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict] | None = None,
    config: DPOConfig | None = None,
    reference: GPT | None = None,
) -> DPOResult:
    """DPO on a copy of ``policy`` (all its weights train); the reference defaults to
    ``policy`` itself, frozen. See :func:`fit_dpo`."""
    model = copy.deepcopy(policy).requires_grad_(True)
    reference = reference if reference is not None else policy
    return fit_dpo(model, enc, train_rows, val_rows, config, reference)


def fit_dpo(
    model: torch.nn.Module,
    enc,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict] | None,
    config: DPOConfig | None,
    reference: torch.nn.Module,
) -> DPOResult:
    """DPO on ``model`` in place: the parameters that require a gradient train (all of a
    copied policy, or only its LoRA adapters). The reference log-probabilities are
    computed once, before training. Logged: the loss, the implicit reward accuracy and
    margin, and the policy's own log-likelihood margin log pi(y_c) - log pi(y_r) on the
    validation pairs (``val_margin``)."""
    config = config or DPOConfig()
    block = model.config.block_size
    train = encode_pairs(train_rows, enc, block, "train")
    val = encode_pairs(val_rows, enc, block, "validation") if val_rows else None
    reference.eval()
    ref_c, ref_r = pair_logprobs(reference, train, enc)
    val_ref = pair_logprobs(reference, val, enc) if val else None

    def batch_fn(step: int, micro: int):
        rows = sample_rows(len(train), config.batch_size, config.train.seed, step, micro)
        batch = pair_batch(train, rows.tolist(), enc)
        batch["ref_chosen"], batch["ref_rejected"] = ref_c[rows], ref_r[rows]
        return batch

    def loss_fn(m, batch):
        lp = sequence_logprobs(m, batch)
        n = lp.size(0) // 2
        loss, rc, rr = dpo_loss(
            lp[:n], lp[n:], batch["ref_chosen"], batch["ref_rejected"], config.beta,
            config.label_smoothing,
        )  # fmt: skip
        return loss, {
            "reward_accuracy": float((rc > rr).float().mean()),
            "reward_margin": float((rc - rr).mean()),
        }

    def eval_fn(m) -> dict[str, float]:
        c, r = pair_logprobs(m, val, enc)
        loss, rc, rr = dpo_loss(c, r, val_ref[0], val_ref[1], config.beta)
        return {
            "val_loss": float(loss),
            "val_reward_accuracy": float((rc > rr).float().mean()),
            "val_margin": float((c - r).mean()),
        }

    # Without validation pairs there is nothing to evaluate (the Trainer skips eval_fn=None).
    result = Trainer(model, config.train, batch_fn, loss_fn, eval_fn if val else None).fit()
    return DPOResult(model.eval(), result.history, result.seconds)
