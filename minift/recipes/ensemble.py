"""Ensemble jobs: fine-tune several members on one classification task, collect their
probabilities, and combine them (minift.ensemble) or average their weights (a soup).

    from minift.recipes.ensemble import MemberSpec, train_members, member_probs
    members = train_members(task, base, enc, [MemberSpec("lora", 3e-3, 0), ...])

Members are fine-tunes of one base, so LoRA members can also be merged and souped.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.model import GPT
from minift.peft.lora import merge_and_unload
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.tokenizer import pad_id
from minift.train.objectives import classification_inputs


@dataclass(frozen=True)
class MemberSpec:
    method: str  # a fine-tuning method (minift.peft: lora, full, probe, prompt, ...)
    lr: float | None  # None: the method's default
    seed: int = 0

    @property
    def name(self) -> str:
        lr = "default" if self.lr is None else f"{self.lr:g}"
        return f"{self.method} lr={lr} s={self.seed}"


def train_members(
    task: Task, base: GPT, enc, specs: list[MemberSpec], steps: int, max_len: int = 24
):
    """{name: fine-tuned model} for each spec (same task, same steps, its own lr and seed)."""
    members = {}
    for spec in specs:
        train = train_config(steps=steps, lr=spec.lr, seed=spec.seed, eval_every=0, eval_at_start=False)  # fmt: skip
        config = FinetuneConfig(method=spec.method, max_len=max_len, train=train)
        members[spec.name] = finetune(task, base, enc, config, keep_model=True).model
    return members


@torch.no_grad()
def member_probs(model, task: Task, enc, rows: list[dict], max_len: int = 24) -> np.ndarray:
    """(N, C) class probabilities of a classifier on ``rows``."""
    ids = classification_inputs(task, enc, rows, max_len)
    out = []
    for i in range(0, len(ids), 64):
        b = classification_batch(ids[i : i + 64], None, pad_id(enc), max_len)
        out.append(
            torch.softmax(model(b["idx"], attention_mask=b["attention_mask"]).logits.double(), -1)
        )
    return torch.cat(out).numpy()


@torch.no_grad()
def input_features(base: GPT, task: Task, enc, rows: list[dict], max_len: int = 24) -> torch.Tensor:
    """(N, C) the frozen base's last hidden state averaged over each row's real tokens:
    what a gate sees of an input."""
    ids = classification_inputs(task, enc, rows, max_len)
    out = []
    for i in range(0, len(ids), 64):
        b = classification_batch(ids[i : i + 64], None, pad_id(enc), max_len)
        h = base(
            b["idx"], attention_mask=b["attention_mask"], output_hidden_states=True
        ).hidden_states[-1]
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append(((h * m).sum(1) / m.sum(1)).double())
    return torch.cat(out)


def merged_copy(model) -> torch.nn.Module:
    """A copy with every LoRA adapter merged into its weight (no LoRA layers left)."""
    return merge_and_unload(copy.deepcopy(model)).eval()


def seconds_per_call(fn, repeats: int = 3) -> float:
    """The best of ``repeats`` wall-clock timings of fn() (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
