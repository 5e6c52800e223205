"""One-call PPO and DPO from a starting policy, as `minift rlhf` (minift.recipes.rlhf),
lessons 17 and 18 and scripts/bench_rlhf.py run them. Each leaves the starting policy
unchanged and returns what it trained with its history; with LoRA only the adapters train,
and the frozen reference is the policy itself (PPO: the same model with its adapters
disabled, as TRL does), not a second copy of the weights.
"""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minift.model import GPT
from minift.peft import LoRAConfig, apply_lora
from minift.rlhf.dpo import DPOConfig, DPOResult, fit_dpo, train_dpo
from minift.rlhf.evaluate import evaluate_rollout
from minift.rlhf.plots import plot_ppo
from minift.rlhf.policy import Critic, PolicyWithValue, Reference
from minift.rlhf.preference import encode_prompt
from minift.rlhf.reward import RewardModel
from minift.rlhf.trainer import PPOConfig, PPOResult, PPOTrainer, reward_model_fn
from minift.tokenizer import eot_id, pad_id


def rlhf_lora(rank: int) -> LoRAConfig | None:
    """LoRA of ``rank`` on the attention and MLP input projections (alpha = 2 r)."""
    if not rank:
        return None
    return LoRAConfig(r=rank, alpha=2 * rank, target_modules=["c_attn", "c_fc"], trainable_extra=[])


def run_dpo(
    policy: GPT,
    enc,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict] | None = None,
    config: DPOConfig | None = None,
    lora: LoRAConfig | None = None,
) -> DPOResult:
    """DPO from ``policy`` (unchanged), whose log-probabilities are the reference. With
    ``lora`` only LoRA adapters train, on a copy; at initialisation (B = 0) that copy
    gives exactly the policy's outputs."""
    if lora is None:
        return train_dpo(policy, enc, train_rows, val_rows, config)
    config = config or DPOConfig()
    torch.manual_seed(config.train.seed)  # the adapters' initialisation
    model = apply_lora(copy.deepcopy(policy), lora)
    return fit_dpo(model, enc, train_rows, val_rows, config, reference=policy)


@dataclass
class PPORun:
    model: PolicyWithValue  # the trained policy (model.policy) and its value function
    reference: GPT  # a model giving the reference's outputs, for evaluation
    result: PPOResult


def run_ppo(
    policy: GPT,
    enc,
    reward_model: RewardModel,
    prompts: Sequence[str],
    config: PPOConfig | None = None,
    lora: LoRAConfig | None = None,
    critic: bool = False,
    truth: Callable[[str], float] | None = None,
    out_dir: str | pathlib.Path | None = None,
    on_iteration: Callable[[dict], None] | None = None,
) -> PPORun:
    """PPO from ``policy`` against ``reward_model``. With ``lora`` only LoRA adapters train
    and the reference is the same model with its adapters disabled; otherwise the
    reference is a frozen copy. ``critic`` uses a separate critic initialised from the
    reward model instead of a zero-initialised value head. ``truth`` adds the ground
    truth of each batch to the log. ``out_dir`` gets metrics.jsonl and ppo.png."""
    config = config or PPOConfig()
    torch.manual_seed(config.seed)
    trained = copy.deepcopy(policy)
    if lora is not None:
        apply_lora(trained, lora)
        reference = Reference(policy=trained)
    else:
        trained.requires_grad_(True)
        reference = Reference(model=copy.deepcopy(policy))
    value = Critic.from_reward_model(reward_model) if critic else None
    model = PolicyWithValue(trained, value)
    metrics_fn = None
    if truth is not None:

        def metrics_fn(rollout):
            return {"truth": evaluate_rollout(rollout, enc, truth=truth)["truth"]}

    trainer = PPOTrainer(
        model, reference, reward_model_fn(reward_model), [encode_prompt(enc, p) for p in prompts],
        eot_id(enc), pad_id(enc), config, metrics_fn,
    )  # fmt: skip
    result = trainer.fit(on_iteration)
    if out_dir is not None:
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.history))
        plot_ppo(result.history, out / "ppo.png", title="PPO")
    return PPORun(model.eval(), reference.model if reference.model is not None else policy, result)
