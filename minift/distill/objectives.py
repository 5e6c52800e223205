"""What the distillation loop trains on: batches, an evaluation, and the metric to follow.

- ``lm_objective``: language modelling on a corpus (pydocs by default): random windows
  of the training stream, validation loss on fixed windows of the validation stream.
  With the base model as teacher this is TinyBERT's *general* distillation.
- ``task_objective``: a registered task (or a JSONL file) exactly as minift.recipes.finetune
  sees it -- the same batches, the same evaluation -- so a distilled student and a
  student fine-tuned without a teacher are compared on equal terms. With a fine-tuned
  teacher this is *task-specific* distillation.
- ``transfer_objective``: the task's labelled batches plus texts without labels, which
  only the teacher can label: Hinton et al.'s (2015) *transfer set*, the reason
  distillation can beat training on the labels alone when labels are few (TinyBERT
  augments its task data for the same reason). For the default task the unlabelled texts
  are the other docstring summaries of pydocs (``pydocs_summaries``), never a
  validation text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from minift.data.batching import window_batches
from minift.data.tasks import Task
from minift.data.tokens import corpus_tokens
from minift.seeding import sample_rows


@dataclass
class Objective:
    name: str
    batch_fn: Callable  # batch_fn(step, micro) -> batch, a pure function of its arguments
    eval_fn: Callable[[torch.nn.Module], dict[str, float]]
    monitor: str  # the metric the report follows
    mode: str  # "min" | "max"


def lm_objective(
    enc,
    batch_size: int = 16,
    seq_len: int = 64,
    seed: int = 0,
    corpus: str = "pydocs",
    eval_batches: int = 8,
) -> Objective:
    """Next-token prediction on ``corpus``; batches are {"idx", "targets"} windows."""
    train = corpus_tokens(corpus, "train", enc)
    val = corpus_tokens(corpus, "val", enc)
    windows = window_batches(train, batch_size, seq_len, seed=seed)
    val_batches = [
        window_batches(val, batch_size, seq_len, seed=10_000 + i)(0, 0) for i in range(eval_batches)
    ]

    def batch_fn(step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        x, y = windows(step, micro)
        return {"idx": x, "targets": y}

    def eval_fn(model) -> dict[str, float]:
        device = next(model.parameters()).device
        losses = [model(x.to(device), y.to(device)).loss.item() for x, y in val_batches]
        return {"val_loss": sum(losses) / len(losses)}

    return Objective(f"lm-{corpus}", batch_fn, eval_fn, "val_loss", "min")


def task_objective(
    task: Task, enc, batch_size: int = 32, max_len: int = 24, seed: int = 0
) -> Objective:
    """The task's batches and evaluation, as minift.recipes.finetune builds them."""
    from minift.train.objectives import OBJECTIVES

    if task.kind not in OBJECTIVES:
        raise ValueError(
            f"task kind {task.kind!r} cannot be distilled here; kinds: {sorted(OBJECTIVES)}"
        )
    built = OBJECTIVES[task.kind](task, enc, max_len, batch_size, seed)
    return Objective(task.name, built.batch_fn, built.eval_fn, built.monitor, built.mode)


def pydocs_summaries(exclude: set[str] | list[str] = (), min_chars: int = 24) -> list[str]:
    """Summary lines of every function and class docstring in pydocs (sorted, unique),
    minus ``exclude``: unlabelled text in the default task's domain."""
    from minift.data.corpus import load_corpus
    from minift.data.tasks import summary_line

    exclude = set(exclude)
    texts = {summary_line(d.text) for d in load_corpus("pydocs", "all") if d.name}
    return sorted(t for t in texts if len(t) >= min_chars and t not in exclude)


def transfer_objective(
    task: Task,
    enc,
    texts: list[str],
    batch_size: int = 32,
    unlabeled_per_batch: int = 32,
    max_len: int = 24,
    seed: int = 0,
) -> Objective:
    """Each batch: the same ``batch_size`` labelled rows task_objective draws, plus
    ``unlabeled_per_batch`` texts marked ``unlabeled`` (teacher terms only). Evaluation is
    the task's. Texts that are validation rows are refused (they would leak)."""
    from minift.data.batching import classification_batch
    from minift.tokenizer import pad_id
    from minift.train.objectives import classification_inputs

    if task.kind != "classification":
        raise ValueError(f"a transfer set needs a classification task, got {task.kind!r}")
    leaked = {r["text"] for r in task.val} & set(texts)
    if leaked:
        raise ValueError(
            f"{len(leaked)} transfer texts are validation rows of {task.name!r} "
            f"(e.g. {sorted(leaked)[0]!r}); exclude them"
        )
    if not texts:
        raise ValueError("the transfer set is empty")
    labelled = task_objective(task, enc, batch_size, max_len, seed)
    ids = classification_inputs(task, enc, [{"text": t} for t in texts], max_len)
    pad = pad_id(enc)

    def batch_fn(step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        batch = labelled.batch_fn(step, micro)
        rows = sample_rows(len(ids), unlabeled_per_batch, seed, step, micro, stream=1).tolist()
        extra = classification_batch([ids[i] for i in rows], None, pad, max_len)
        width = max(batch["idx"].size(1), extra["idx"].size(1))

        def widen(t: torch.Tensor, value: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, width - t.size(1)), value=value)

        n = len(batch["labels"])
        return {
            "idx": torch.cat([widen(batch["idx"], pad), widen(extra["idx"], pad)]),
            "attention_mask": torch.cat(
                [widen(batch["attention_mask"], 0), widen(extra["attention_mask"], 0)]
            ),
            "labels": torch.cat([batch["labels"], torch.zeros(len(rows), dtype=torch.long)]),
            "unlabeled": torch.arange(n + len(rows)) >= n,
        }

    return Objective(
        f"{task.name}+transfer", batch_fn, labelled.eval_fn, labelled.monitor, labelled.mode
    )
