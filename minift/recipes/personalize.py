"""Personalization jobs: one user's LoRA adapter by DPO, a user's soft prompt, and the
per-user comparison of every way to serve a user (minift.personal).

    from minift.recipes.personalize import PersonalizeJob, run_personalize
    run_personalize(PersonalizeJob(user="alice", data="alice.jsonl"))   # -> adapters/alice

Every user starts from the same frozen policy (the SFT'd base of the RLHF lessons, or a
saved minift model); what a user owns is a few thousand adapter weights, saved as a PEFT
adapter folder with a ``personal.json`` naming the user and the policy it adapts.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minift.data.batching import sft_example, sft_padded_batch
from minift.data.jsonl import detect_format, load_jsonl
from minift.errors import UserError
from minift.io import read_json, write_json
from minift.model import GPT
from minift.peft import PromptConfig, apply_lora, apply_prompt_tuning, load_adapter, save_adapter
from minift.personal.context import (
    context_budget,
    examples_context,
    fitting,
    preference_correct,
    profile_context,
)
from minift.personal.users import USERS, get_user, user_pairs
from minift.recipes.cards import personalize_card, policy_facts
from minift.recipes.model_card import write_card
from minift.recipes.rlhf import load_policy
from minift.recipes.rlhf_methods import rlhf_lora, run_dpo
from minift.recipes.rlhf_stages import sft_train_config
from minift.recipes.saved import weights_fingerprint
from minift.rlhf.dpo import DPOConfig, fit_dpo, train_config
from minift.rlhf.preference import encode_prompt, load_preferences, split_preferences
from minift.seeding import sample_rows
from minift.tokenizer import eot_id, pad_id
from minift.train import Trainer
from minift.utils import fast_mode, minift_home

META = "personal.json"
METHODS = ("base", "profile", "examples", "soft-prompt", "own-lora", "shared-lora")


def adapter_dir(name: str) -> pathlib.Path:
    """Where ``minift personalize --user NAME`` saves: $MINIFT_HOME/adapters/NAME."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"user name {name!r} must be a non-empty name without '/' or a leading '.'")
    return minift_home() / "adapters" / name


def user_preferences_path(name: str) -> pathlib.Path:
    """Where ``minift feedback --user NAME`` records: $MINIFT_HOME/users/NAME.jsonl."""
    adapter_dir(name)  # the same naming rules
    return minift_home() / "users" / f"{name}.jsonl"


def dpo_config(
    steps: int, lr: float, beta: float = 0.1, seed: int = 0, batch: int = 16
) -> DPOConfig:
    train = train_config(steps=steps, lr=lr, warmup_steps=min(10, steps // 5), eval_every=0,
                         eval_at_start=False, seed=seed)  # fmt: skip
    return DPOConfig(batch_size=batch, beta=beta, train=train)


def user_lora(policy: GPT, enc, pairs: Sequence[dict], rank: int, config: DPOConfig) -> GPT:
    """A LoRA adapter (rank ``rank`` on c_attn and c_fc) trained by DPO on ``pairs``."""
    return run_dpo(policy, enc, list(pairs), None, config, rlhf_lora(rank)).model


def user_lora_sft(policy: GPT, enc, rows: Sequence[dict], rank: int, steps: int, lr: float,
                  seed: int = 0) -> GPT:  # fmt: skip
    """A LoRA adapter trained on the user's own prompt/response rows (their data, not
    comparisons) by supervised fine-tuning: cross-entropy on the response tokens."""
    torch.manual_seed(seed)
    model = apply_lora(copy.deepcopy(policy), rlhf_lora(rank))
    eot, block = eot_id(enc), policy.config.block_size
    examples = []
    for r in rows:
        response = enc.encode_ordinary(r["response"])
        if len(response) + 1 < block:
            examples.append(sft_example(encode_prompt(enc, r["prompt"]), response, eot, block))
    if not examples:
        raise UserError(f"no prompt/response row fits the model's {block}-token block")

    def batch_fn(step: int, micro: int):
        picked = sample_rows(len(examples), 16, seed, step, micro).tolist()
        return sft_padded_batch([examples[i] for i in picked], pad_id(enc))

    def loss_fn(m, b):
        return m(b["idx"], b["targets"], attention_mask=b["attention_mask"]).loss, {}

    Trainer(model, sft_train_config(steps=steps, lr=lr, warmup_steps=min(10, steps // 5), seed=seed),
            batch_fn, loss_fn).fit()  # fmt: skip
    return model.eval()


def user_soft_prompt(
    policy: GPT, enc, pairs: Sequence[dict], tokens: int, config: DPOConfig
) -> GPT:
    """A learned user embedding: ``tokens`` soft-prompt vectors (Lester et al. 2021) in front
    of every input, trained by DPO on ``pairs`` against the policy without them."""
    torch.manual_seed(config.train.seed)
    model = apply_prompt_tuning(copy.deepcopy(policy), PromptConfig(tokens, trainable_extra=[]))
    return fit_dpo(model, enc, list(pairs), None, config, reference=policy).model


@dataclass
class CompareConfig:
    users: tuple[str, ...] = tuple(USERS)
    n_train: int = 48  # preference pairs per user
    n_val: int = 64
    rank: int = 4
    lora_steps: int = 60
    lora_lr: float = 3e-3
    prompt_tokens: int = 4
    prompt_steps: int = 60
    prompt_lr: float = 3e-2
    context_tokens: int = 24  # room kept in the block for a profile or examples
    seed: int = 0


def fast_compare_config() -> CompareConfig:
    return CompareConfig(n_train=32, n_val=48, lora_steps=25, prompt_steps=25)


def compare_users(policy: GPT, enc, config: CompareConfig) -> dict:
    """Per user and method, the held-out pairs scored by :func:`preference_correct`.

    Returns {"correct": {user: {method: array}}, "models": {user: own LoRA model},
    "shared": the shared LoRA model}. The shared model is trained on every user's pairs
    together, for as many steps per user as each own adapter gets (equal compute)."""
    pairs = {u: user_pairs(u, "train", config.n_train, config.seed) for u in config.users}
    # Held-out pairs that leave room in the block for a context (profile or examples).
    profiles = max(len(enc.encode_ordinary(profile_context(get_user(u)))) for u in config.users)
    room = policy.config.block_size - max(config.context_tokens, profiles + 2)
    held = {u: fitting(user_pairs(u, "val", 4 * config.n_val, config.seed), enc, room)[: config.n_val]
            for u in config.users}  # fmt: skip
    lora_cfg = dpo_config(config.lora_steps, config.lora_lr, seed=config.seed)
    everyone = [p for u in config.users for p in pairs[u]]
    shared_cfg = dpo_config(config.lora_steps * len(config.users), config.lora_lr, seed=config.seed)
    shared = user_lora(policy, enc, everyone, config.rank, shared_cfg)
    prompt_cfg = dpo_config(config.prompt_steps, config.prompt_lr, seed=config.seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    models = {}
    for u in config.users:
        user, val = get_user(u), held[u]
        budget = context_budget(val, enc, policy.config.block_size)
        own = models[u] = user_lora(policy, enc, pairs[u], config.rank, lora_cfg)
        soft = user_soft_prompt(policy, enc, pairs[u], config.prompt_tokens, prompt_cfg)
        out[u] = {
            "base": preference_correct(policy, enc, val, policy),
            "profile": preference_correct(policy, enc, val, policy, profile_context(user)),
            "examples": preference_correct(
                policy, enc, val, policy, examples_context(pairs[u], enc, budget)
            ),
            "soft-prompt": preference_correct(soft, enc, val, policy),
            "own-lora": preference_correct(own, enc, val, policy),
            "shared-lora": preference_correct(shared, enc, val, policy),
        }
    return {"correct": out, "models": models, "shared": shared}


# ---------------------------------------------------------------------- one user's job
@dataclass
class PersonalizeJob:
    user: str
    data: str | None = None  # preference JSONL; None: $MINIFT_HOME/users/USER.jsonl, or
    # the simulated user of that name
    model: str | None = None  # the policy to adapt (minift model folder); None: SFT'd base
    rank: int = 8
    steps: int = 100
    lr: float = 3e-3
    beta: float = 0.1
    save: str | None = None  # None: $MINIFT_HOME/adapters/USER
    seed: int = 0

    def __post_init__(self) -> None:
        adapter_dir(self.user)
        if self.rank < 1 or self.steps < 1 or not self.lr > 0 or not self.beta > 0:
            raise UserError(
                f"need rank >= 1, steps >= 1, lr > 0, beta > 0; got {self.rank}, {self.steps}, "
                f"{self.lr}, {self.beta}"
            )


def job_pairs(job: PersonalizeJob) -> tuple[list[dict], str]:
    """(rows, where they came from): --data (preference pairs, or the user's own
    prompt/response rows), the user's feedback file, or a simulated user."""
    if job.data:
        if detect_format(job.data) == "sft":
            return load_jsonl(job.data, "sft")[1], job.data
        return load_preferences(job.data), job.data
    recorded = user_preferences_path(job.user)
    if recorded.exists():
        return load_preferences(recorded), str(recorded)
    if job.user in USERS:
        return user_pairs(job.user, "train", 48, job.seed), f"simulated user {job.user!r}"
    raise UserError(
        f"no preferences for user {job.user!r}: give --data FILE, record some with "
        f"`minift feedback --user {job.user}`, or pick a simulated user ({', '.join(USERS)})"
    )


def run_personalize(job: PersonalizeJob) -> dict:
    """Train ``job.user``'s adapter (DPO on preference pairs, SFT on prompt/response rows),
    report held-out accuracy, save the adapter."""
    rows, source = job_pairs(job)
    if not rows:
        raise UserError(f"{source} holds no rows")
    policy, enc = load_policy(job.model)
    if "chosen" not in rows[0]:  # the user's own responses: supervised fine-tuning
        model = user_lora_sft(policy, enc, rows, job.rank, job.steps, job.lr, job.seed)
        train, val = rows, []
    else:
        train, val = split_preferences(rows, job.seed)
        config = dpo_config(job.steps, job.lr, job.beta, job.seed)
        model = user_lora(policy, enc, train, job.rank, config)
    method = "dpo" if "chosen" in rows[0] else "sft"
    report = {"user": job.user, "method": method, "source": source, "train_rows": len(train), "val_pairs": len(val)}  # fmt: skip
    if val:
        report["val_accuracy"] = float(preference_correct(model, enc, val, policy).mean())
    if job.user in USERS:  # a simulated user: score on their own held-out pairs too
        held = user_pairs(job.user, "val", 64, job.seed)
        report["hidden_pairs"] = len(held)
        report["hidden_preference_accuracy"] = float(
            preference_correct(model, enc, held, policy).mean()
        )
    dest = pathlib.Path(job.save) if job.save else adapter_dir(job.user)
    save_adapter(model, dest)
    write_json(dest / META, {**report, "model": job.model, "rank": job.rank, "steps": job.steps})
    facts = policy_facts(job.model, weights_fingerprint(policy))
    write_card(dest, personalize_card(job, report, facts, fast_mode()))
    print(
        ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items())
    )
    print(f"saved {job.user}'s adapter to {dest}")
    return report


def load_user_model(name_or_dir: str) -> tuple[GPT, object]:
    """(policy with the user's adapter, encoding), from a folder or a user's name."""
    path = pathlib.Path(name_or_dir)
    if not (path / META).exists():
        path = adapter_dir(name_or_dir) if "/" not in name_or_dir else path
    if not (path / META).exists():
        known = sorted(
            p.name for p in (minift_home() / "adapters").glob("*") if (p / META).exists()
        )
        raise UserError(
            f"no personal adapter {name_or_dir!r} (neither a folder with {META} nor a user in "
            f"{minift_home() / 'adapters'}; known users: {', '.join(known) or 'none'})"
        )
    meta = read_json(path / META, "personal adapter metadata")
    policy, enc = load_policy(meta.get("model"))
    return load_adapter(policy, path).eval(), enc


def default_compare_config() -> CompareConfig:
    return fast_compare_config() if fast_mode() else CompareConfig()
