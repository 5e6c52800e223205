"""Fine-tune a base model on a long-document classification task, five ways.

- ``truncated``: the dense model reads the first block_size tokens (the baseline: what a
  model without a long-context method sees);
- ``sparse``: the pretrained model's context is extended (tiled positions) and a sparse
  pattern switched on, so it reads the whole document at once (minift.longctx.context);
- ``han``, ``transformer``, ``gated``: the document is cut into segments of block_size
  that the pretrained model encodes, read by HAN attention, a segment-level transformer,
  or a gated ensemble of segment predictions (minift.longctx.hierarchical).

``truncated`` and ``sparse`` read their one segment (the first block_size tokens, or the
whole document) with the same attention-pooling reader as ``han``, so the comparison is
about what each model can see, not about its classifier head. Every kind fine-tunes all
parameters with minift.train.Trainer, configured by ``config.train`` (the backbone at its
``lr``, the new reader at ``head_lr``), from the same base and seed, on the same rows, and
reports val accuracy.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from minift.data.tasks import Task
from minift.longctx.context import extend_context, set_attention_pattern
from minift.longctx.hierarchical import (
    GatedSegmentEnsemble,
    HANClassifier,
    HierarchicalTransformer,
    segment_batch,
)
from minift.model.gpt import GPT
from minift.model.params import count_parameters
from minift.recipes.finetune import FinetuneResult
from minift.seeding import sample_rows
from minift.tokenizer import pad_id
from minift.train import TrainConfig, Trainer
from minift.utils import peak_memory_mb, reset_peak_memory

KINDS = ("truncated", "sparse", "han", "transformer", "gated")


def train_config(**changes: Any) -> TrainConfig:
    """The TrainConfig of a long-document run: 60 steps at lr 1e-3 (the pretrained
    backbone) with 5 warm-up steps, no weight decay, validation accuracy every 20 steps (the
    best is the highest); ``changes`` override any of them."""
    defaults = dict(steps=60, lr=1e-3, warmup_steps=5, weight_decay=0.0, eval_every=20)
    return TrainConfig(**{**defaults, "monitor": "val_accuracy", "mode": "max", "progress": False, **changes})  # fmt: skip


@dataclass
class LongConfig:
    kind: str = "han"
    batch_size: int = 8
    head_lr: float | None = 3e-2  # the new parts (pooling, segment reader, head); None: train.lr
    max_segments: int = 64  # han / transformer / gated
    segment_len: int | None = None  # han / transformer / gated; None: the base's block_size
    # sparse: SparseConfig's fields; block_size grows to the longest doc
    pattern: dict = field(
        default_factory=lambda: {"pattern": "bigbird", "block_size": 16, "window": 2,
                                 "n_global": 1, "n_random": 1}
    )  # fmt: skip
    train: TrainConfig = field(default_factory=train_config)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def build_long_model(base: GPT, num_labels: int, config: LongConfig, longest: int):
    """A fresh copy of base wrapped for ``config.kind``; longest: tokens of the longest doc."""
    torch.manual_seed(config.train.seed)
    gpt = copy.deepcopy(base)
    if config.kind == "sparse":
        opts = dict(config.pattern)
        block = opts.get("block_size", 64)
        set_attention_pattern(gpt, **opts)  # validated at the base's block_size
        extend_context(gpt, max(gpt.config.block_size, math.ceil(longest / block) * block))
    if config.kind in ("truncated", "sparse", "han"):
        return HANClassifier(gpt, num_labels)
    if config.kind == "transformer":
        return HierarchicalTransformer(gpt, num_labels, max_segments=config.max_segments)
    return GatedSegmentEnsemble(gpt, num_labels)


def long_batch(kind: str, docs, labels, pad: int, block_size: int, max_segments: int) -> dict:
    """Model inputs for ``kind``: segments of block_size, only the first one when truncated
    (and for sparse, whose block_size covers the longest document)."""
    one = kind in ("truncated", "sparse")
    batch = segment_batch(docs, block_size, pad, 1 if one else max_segments)
    batch["labels"] = torch.as_tensor(list(labels), dtype=torch.long)
    return batch


def segment_length(config: LongConfig, base: GPT, model) -> int:
    """Tokens per segment: the base's block_size, the extended context for ``sparse``, or
    ``config.segment_len`` for the hierarchical readers."""
    block = base.config.block_size
    if config.kind == "sparse":
        return model.config.block_size  # the extended context holds the longest document
    if config.kind != "truncated" and config.segment_len:
        if not 0 < config.segment_len <= block:
            raise ValueError(
                f"segment_len must be in [1, block_size={block}], got {config.segment_len}"
            )
        return config.segment_len
    return block


def reader_groups(model, lr: float, head_lr: float | None) -> list[dict]:
    """Two learning rates: the pretrained backbone at ``lr``, the new parts (pooling,
    segment reader, head) at ``head_lr`` (or ``lr``)."""
    backbone = {id(p) for p in model.backbone.parameters()}
    new = [p for p in model.parameters() if id(p) not in backbone]
    return [
        {"params": list(model.backbone.parameters()), "lr": lr},
        {"params": new, "lr": head_lr or lr},
    ]


def accuracy_eval(make, docs: list, labels: list[int], batch_size: int = 16):
    """eval_fn(model) -> val_accuracy and val_loss over every (doc, label), in batches."""

    @torch.no_grad()
    def eval_fn(model) -> dict[str, float]:
        correct, loss_sum = 0, 0.0
        for i in range(0, len(docs), batch_size):
            batch = make(docs[i : i + batch_size], labels[i : i + batch_size])
            out = model(**batch)
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            loss_sum += out.loss.item() * len(batch["labels"])
        return {"val_accuracy": correct / len(docs), "val_loss": loss_sum / len(docs)}

    return eval_fn


def finetune_long(task: Task, base: GPT, enc, config: LongConfig | None = None, keep_model=False):
    """Fine-tune a copy of base on a long classification task; returns a FinetuneResult
    (method = the kind, metric = val_accuracy)."""
    config = config or LongConfig()
    pad = pad_id(enc)
    train_ids = enc.encode_ordinary_batch([r["text"] for r in task.train])
    val_ids = enc.encode_ordinary_batch([r["text"] for r in task.val])
    train_y = [int(r["label"]) for r in task.train]
    longest = max(len(d) for d in train_ids + val_ids)
    model = build_long_model(base, task.num_labels, config, longest)
    block = segment_length(config, base, model)

    def make(docs, ys):
        return long_batch(config.kind, docs, ys, pad, block, config.max_segments)

    def batch_fn(step: int, micro: int) -> dict:
        rows = sample_rows(len(train_ids), config.batch_size, config.train.seed, step, micro)
        rows = rows.tolist()
        return make([train_ids[i] for i in rows], [train_y[i] for i in rows])

    def loss_fn(model, batch):
        return model(**batch).loss, {}

    eval_fn = accuracy_eval(make, val_ids, [int(r["label"]) for r in task.val])
    train = replace(config.train, desc=f"{config.kind} on {task.name}")
    trainable, total = count_parameters(model)
    reset_peak_memory("cpu")
    t0 = time.perf_counter()
    groups = reader_groups(model, train.lr, config.head_lr)
    result = Trainer(model, train, batch_fn, loss_fn, eval_fn, param_groups=groups).fit()
    final = result.history[-1]
    return FinetuneResult(
        method=config.kind, task=task.name, metric_name="val_accuracy",
        metric=final["val_accuracy"], val_loss=final["val_loss"], trainable=trainable,
        total=total, seconds=time.perf_counter() - t0, peak_mb=peak_memory_mb("cpu"),
        history=result.history, model=model.eval() if keep_model else None,
    )  # fmt: skip


__all__ = ["KINDS", "LongConfig", "build_long_model", "finetune_long", "long_batch"]
