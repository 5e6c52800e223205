"""One-call recipes: PPO, DPO and best-of-n from a starting policy, as the CLI, the lessons
and the benchmark run them. Each leaves the starting policy unchanged and returns what it
trained with its history; evaluation is minift.rlhf.evaluate."""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minift.model import GPT
from minift.peft import LoRAConfig, apply_lora
from minift.rlhf.best_of_n import best_of_n, best_of_n_kl_bound
from minift.rlhf.evaluate import evaluate_rollout
from minift.rlhf.plots import plot_ppo
from minift.rlhf.policy import Critic, PolicyWithValue, Reference
from minift.rlhf.preference import encode_prompt
from minift.rlhf.reward import RewardModel
from minift.rlhf.trainer import PPOConfig, PPOResult, PPOTrainer, reward_model_fn
from minift.tokenizer import eot_id, pad_id


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


@torch.no_grad()
def evaluate_best_of_n(
    policy: GPT,
    enc,
    reward_model: RewardModel,
    prompts: Sequence[str],
    n: int,
    samples: int = 128,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    seed: int = 1234,
    truth: Callable[[str], float] | None = None,
) -> dict:
    """Best-of-n under the reward model for ``samples`` prompts drawn (seeded) from
    ``prompts``: truth, reward-model score and the analytic KL bound."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(prompts), (samples,), generator=g).tolist()
    ids = [encode_prompt(enc, prompts[i]) for i in picks]
    out = best_of_n(
        policy, reward_model_fn(reward_model), ids, n, max_new_tokens, eot_id(enc), pad_id(enc),
        temperature, g,
    )  # fmt: skip
    metrics = evaluate_rollout(out.rollout, enc, reward_model=None, truth=truth)
    metrics["rm_score"] = float(out.scores.mean())
    metrics["kl"] = best_of_n_kl_bound(n)
    metrics["samples"] = [
        f"{enc.decode(p)}|{t}" for p, t in zip(ids[:8], out.rollout.texts(enc)[:8])
    ]
    return metrics
