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
from dataclasses import dataclass, field
from typing import Any

import torch

from minift.cache import build_once
from minift.data.batching import sft_example, sft_padded_batch
from minift.data.encoding import default_encoding
from minift.io import write_json
from minift.model import GPT
from minift.recipes.pretrain import cache_dir as base_cache_dir
from minift.recipes.pretrain import default_recipe, load_base
from minift.recipes.tasks import get_task
from minift.rlhf.preference import encode_prompt
from minift.rlhf.reward import RewardConfig, RewardModel, train_reward_model
from minift.rlhf.reward import train_config as reward_train_config
from minift.rlhf.rollout import sample_responses
from minift.seeding import sample_rows
from minift.tokenizer import eot_id, pad_id
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, minift_home

DEFAULT_TASK = "file-words"


def sft_train_config(**changes: Any) -> TrainConfig:
    """The TrainConfig of SFT: 150 steps at lr 1e-3 with 10 warm-up steps, no weight decay;
    ``changes`` override any of them."""
    defaults = dict(steps=150, lr=1e-3, warmup_steps=10, weight_decay=0.0, progress=False)
    return TrainConfig(**{**defaults, "desc": "sft", **changes})


@dataclass
class SFTConfig:
    batch_size: int = 32
    max_len: int = 48
    train: TrainConfig = field(default_factory=sft_train_config)


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
        idx = sample_rows(len(examples), config.batch_size, config.train.seed, step, micro).tolist()
        return sft_padded_batch([examples[i] for i in idx], pad_id(enc))

    def loss_fn(m, b):
        return m(b["idx"], b["targets"], attention_mask=b["attention_mask"]).loss, {}

    Trainer(model, config.train, batch_fn, loss_fn).fit()
    return model.eval()


def default_sft_config(fast: bool | None = None) -> SFTConfig:
    if fast_mode() if fast is None else fast:
        return SFTConfig(train=sft_train_config(steps=40, lr=3e-3))
    return SFTConfig()


def default_reward_config(fast: bool | None = None) -> RewardConfig:
    if fast_mode() if fast is None else fast:
        return RewardConfig(
            batch_size=16, train=reward_train_config(steps=40, lr=3e-3, eval_every=20)
        )
    return RewardConfig(batch_size=32, train=reward_train_config(steps=150, lr=3e-4, eval_every=50))


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

    def build(tmp: pathlib.Path) -> None:
        if verbose:
            print(f"SFT of the base on {DEFAULT_TASK} demonstrations ({config.train.steps} steps)")
        sft(base, enc, get_task(f"{DEFAULT_TASK}-sft").train, config).save(tmp)

    build_once(path, build, ("config.json", "model.safetensors"))
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

    def build(tmp: pathlib.Path) -> None:
        task = get_task(DEFAULT_TASK)
        if verbose:
            print(f"training the reward model on {len(task.train)} pairs ({config.train.steps} steps)")  # fmt: skip
        result = train_reward_model(policy, enc, task.train, task.val, config)
        samples = reference_samples(policy, enc, task_prompts("train"), 256, 24, 1.0, seed=1)
        norm = result.model.normalize(samples.sequences, samples.attention_mask)
        report = {"val_accuracy": result.accuracy, "seconds": result.seconds, **norm}
        report["history"] = result.history
        result.model.save(tmp)
        write_json(tmp / "report.json", report)

    build_once(path, build, ("model.safetensors", "reward_head.safetensors", "report.json"))
    return RewardModel.load(path), json.loads((path / "report.json").read_text())
