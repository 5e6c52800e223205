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
parameters with minift.train.Trainer (the backbone at ``lr``, the new reader at
``head_lr``), from the same base and seed, on the same rows, and reports val accuracy.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

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
from minift.recipes.finetune import FinetuneResult, count_parameters
from minift.seeding import sample_rows
from minift.tokenizer import pad_id
from minift.train import TrainConfig, Trainer
from minift.utils import peak_memory_mb, reset_peak_memory

KINDS = ("truncated", "sparse", "han", "transformer", "gated")


@dataclass
class LongConfig:
    kind: str = "han"
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-3  # the pretrained backbone
    head_lr: float | None = 3e-2  # the new parts (pooling, segment reader, head); None: lr
    warmup_steps: int = 5
    eval_every: int = 20
    max_segments: int = 64  # han / transformer / gated
    segment_len: int | None = None  # han / transformer / gated; None: the base's block_size
    # sparse: GPTConfig attn_* options without the prefix; block_size grows to the longest doc
    pattern: dict = field(
        default_factory=lambda: {"pattern": "bigbird", "block_size": 16, "window": 2,
                                 "global": 1, "random": 1}
    )  # fmt: skip
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")


def build_long_model(base: GPT, num_labels: int, config: LongConfig, longest: int):
    """A fresh copy of base wrapped for ``config.kind``; longest: tokens of the longest doc."""
    torch.manual_seed(config.seed)
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


def finetune_long(task: Task, base: GPT, enc, config: LongConfig | None = None, keep_model=False):
    """Fine-tune a copy of base on a long classification task; returns a FinetuneResult
    (method = the kind, metric = val_accuracy)."""
    config = config or LongConfig()
    pad = pad_id(enc)
    train_ids = enc.encode_ordinary_batch([r["text"] for r in task.train])
    val_ids = enc.encode_ordinary_batch([r["text"] for r in task.val])
    train_y = [int(r["label"]) for r in task.train]
    val_y = [int(r["label"]) for r in task.val]
    longest = max(len(d) for d in train_ids + val_ids)
    model = build_long_model(base, task.num_labels, config, longest)
    block = base.config.block_size
    if config.kind == "sparse":
        block = model.config.block_size  # the extended context holds the longest document
    elif config.kind != "truncated" and config.segment_len:
        if not 0 < config.segment_len <= block:
            raise ValueError(
                f"segment_len must be in [1, block_size={block}], got {config.segment_len}"
            )
        block = config.segment_len

    def make(docs, ys):
        return long_batch(config.kind, docs, ys, pad, block, config.max_segments)

    def batch_fn(step: int, micro: int) -> dict:
        rows = sample_rows(len(train_ids), config.batch_size, config.seed, step, micro).tolist()
        return make([train_ids[i] for i in rows], [train_y[i] for i in rows])

    def loss_fn(model, batch):
        return model(**batch).loss, {}

    def eval_fn(model) -> dict[str, float]:
        correct, loss_sum = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(val_ids), 16):
                batch = make(val_ids[i : i + 16], val_y[i : i + 16])
                out = model(**batch)
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
                loss_sum += out.loss.item() * len(batch["labels"])
        return {"val_accuracy": correct / len(val_ids), "val_loss": loss_sum / len(val_ids)}

    train_config = TrainConfig(
        steps=config.steps, lr=config.lr, warmup_steps=config.warmup_steps, weight_decay=0.0,
        eval_every=config.eval_every, eval_at_start=False, monitor="val_accuracy", mode="max",
        seed=config.seed, progress=config.progress, desc=f"{config.kind} on {task.name}",
    )  # fmt: skip
    trainable, total = count_parameters(model)
    reset_peak_memory("cpu")
    t0 = time.perf_counter()
    backbone = {id(p) for p in model.backbone.parameters()}
    new = [p for p in model.parameters() if id(p) not in backbone]
    groups = [
        {"params": list(model.backbone.parameters()), "lr": config.lr},
        {"params": new, "lr": config.head_lr or config.lr},
    ]
    result = Trainer(model, train_config, batch_fn, loss_fn, eval_fn, param_groups=groups).fit()
    final = result.history[-1]
    return FinetuneResult(
        method=config.kind, task=task.name, metric_name="val_accuracy",
        metric=final["val_accuracy"], val_loss=final["val_loss"], trainable=trainable,
        total=total, seconds=time.perf_counter() - t0, peak_mb=peak_memory_mb("cpu"),
        history=result.history, model=model.eval() if keep_model else None,
    )  # fmt: skip


__all__ = ["KINDS", "LongConfig", "build_long_model", "finetune_long", "long_batch"]
