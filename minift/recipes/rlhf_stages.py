"""The stages before RL: a supervised (SFT) reference policy and a reward model, cached.

InstructGPT's recipe (Ouyang et al. 2022) has three stages: supervised fine-tuning on
demonstrations, a reward model trained on comparisons, then PPO against that reward
model with a KL penalty to the SFT policy. The first two are ordinary training; they are
built here once for the embedded default (the ``file-words`` task on the cached base
model) and cached under $MINIFT_HOME/rlhf, keyed by everything that decides their weights,
so that lessons, tests and the CLI share them.

The SFT stage teaches the base model the shape of a response (a docstring summary line
that ends with the end token); it is trained on every demonstration, the good and the
bad, so the reference policy mentions storage words only as often as real lines do.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from minift.cache import file_lock
from minift.data.batching import sft_example, sft_padded_batch
from minift.data.encoding import default_encoding
from minift.io import write_json
from minift.model import GPT
from minift.recipes.pretrain import cache_dir as base_cache_dir
from minift.recipes.pretrain import default_recipe, load_base
from minift.recipes.tasks import get_task
from minift.rlhf.preference import encode_prompt
from minift.rlhf.reward import RewardConfig, RewardModel, train_reward_model
from minift.rlhf.rollout import sample_responses
from minift.seeding import sample_rows
from minift.tokenizer import eot_id, pad_id
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, minift_home

DEFAULT_TASK = "file-words"


@dataclass
class SFTConfig:
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    max_len: int = 48
    warmup_steps: int = 10
    seed: int = 0
    progress: bool = False


def sft(base: GPT, enc, rows: Sequence[dict], config: SFTConfig | None = None) -> GPT:
    """A copy of ``base`` fine-tuned on ``prompt -> response <|endoftext|>`` rows (the loss
    counts the response and the end token only)."""
    config = config or SFTConfig()
    eot = eot_id(enc)
    max_len = min(config.max_len, base.config.block_size)
    examples = [
        sft_example(
            encode_prompt(enc, r["prompt"]), enc.encode_ordinary(r["response"]), eot, max_len
        )
        for r in rows
        if len(enc.encode_ordinary(r["response"])) < max_len
    ]
    if not examples:
        raise ValueError(f"no demonstration fits max_len {max_len}")
    model = copy.deepcopy(base)
    model.requires_grad_(True)

    def batch_fn(step: int, micro: int):
        idx = sample_rows(len(examples), config.batch_size, config.seed, step, micro).tolist()
        return sft_padded_batch([examples[i] for i in idx], pad_id(enc))

    def loss_fn(m, b):
        return m(b["idx"], b["targets"], attention_mask=b["attention_mask"]).loss, {}

    train_config = TrainConfig(
        steps=config.steps, lr=config.lr, warmup_steps=config.warmup_steps, weight_decay=0.0,
        seed=config.seed, progress=config.progress, desc="sft",
    )  # fmt: skip
    Trainer(model, train_config, batch_fn, loss_fn).fit()
    return model.eval()


def default_sft_config(fast: bool | None = None) -> SFTConfig:
    return SFTConfig(steps=40, lr=3e-3) if (fast_mode() if fast is None else fast) else SFTConfig()


def default_reward_config(fast: bool | None = None) -> RewardConfig:
    if fast_mode() if fast is None else fast:
        return RewardConfig(steps=40, batch_size=16, lr=3e-3, eval_every=20)
    return RewardConfig(steps=150, batch_size=32, lr=3e-4, eval_every=50)


def task_prompts(split: str = "train", seed: int = 0) -> list[str]:
    """The prompts of the default task's demonstrations (one per line, so common openings
    such as "Return" come up as often as they do in the docstrings)."""
    from minift.rlhf.tasks import demonstrations

    return [r["prompt"] for r in demonstrations(split, seed)]


def _stage_dir(stage: str, fast: bool | None, extra: dict) -> pathlib.Path:
    base_dir = base_cache_dir(default_recipe(fast), default_encoding(fast))
    from minift.rlhf.tasks import TASK_VERSION

    key = json.dumps(
        {"base": base_dir.name, "stage": stage, "task_version": TASK_VERSION, **extra},
        sort_keys=True,
    )
    return minift_home() / "rlhf" / f"{stage}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def default_policy(fast: bool | None = None, verbose: bool = True) -> tuple[GPT, object]:
    """The reference policy of the embedded default: the base model after SFT on the
    ``file-words`` demonstrations. Built once (seconds to a minute), then cached."""
    base, enc = load_base(fast, verbose=verbose)
    config = default_sft_config(fast)
    path = _stage_dir("sft", fast, {"config": dataclasses.asdict(config), "task": DEFAULT_TASK})
    with file_lock(path):
        if not (path / "model.safetensors").exists():
            if verbose:
                print(f"SFT of the base on {DEFAULT_TASK} demonstrations ({config.steps} steps)")
            policy = sft(base, enc, get_task(f"{DEFAULT_TASK}-sft").train, config)
            policy.save(path)
    return GPT.load(path).eval(), enc


def reference_samples(
    policy: GPT,
    enc,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
):
    """n responses of ``policy`` to prompts drawn (seeded) from ``prompts``."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(prompts), (n,), generator=g).tolist()
    ids = [encode_prompt(enc, prompts[i]) for i in picks]
    return sample_responses(
        policy, ids, max_new_tokens, eot_id(enc), pad_id(enc), temperature, generator=g
    )


def default_reward_model(
    fast: bool | None = None, verbose: bool = True
) -> tuple[RewardModel, dict]:
    """The reward model of the embedded default: the SFT policy's backbone with a scalar
    head, trained by Bradley-Terry on ``file-words`` and normalised on 256 samples of the
    SFT policy (temperature 1, 24 new tokens). Returns it and its report (held-out
    accuracy, normalisation)."""
    policy, enc = default_policy(fast, verbose)
    config = default_reward_config(fast)
    path = _stage_dir("reward", fast, {"config": dataclasses.asdict(config), "task": DEFAULT_TASK})
    with file_lock(path):
        if not (path / "reward_head.safetensors").exists():
            task = get_task(DEFAULT_TASK)
            if verbose:
                print(
                    f"training the reward model on {len(task.train)} pairs ({config.steps} steps)"
                )
            result = train_reward_model(policy, enc, task.train, task.val, config)
            samples = reference_samples(policy, enc, task_prompts("train"), 256, 24, 1.0, seed=1)
            norm = result.model.normalize(samples.sequences, samples.attention_mask)
            report = {"val_accuracy": result.accuracy, "seconds": result.seconds, **norm}
            report["history"] = result.history
            result.model.save(path)
            write_json(path / "report.json", report)
    return RewardModel.load(path), json.loads((path / "report.json").read_text())
