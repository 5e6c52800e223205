"""Instruction-style multi-task learning: every task a prompt, one language-model head.

The alternative to one head per task (minift.multitask.model): phrase a classification
row as text + the task's template and train the language model to continue it with the
label's word (its verbalizer), as T0 (Sanh et al. 2022) and FLAN (Wei et al. 2022) phrase
every task as text. All tasks then share every parameter, the output layer included, and
a new task needs no new weights. Training is next-token cross-entropy over the whole
vocabulary at the label position; evaluation takes the arg-max over the label words only
(the model may not answer outside them), so its accuracy compares with a head's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.tokenizer import pad_id
from minift.train.objectives import (
    TaskObjective,
    classification_batches,
    classification_rows,
    verbalizer_ids,
)


def _label_position_logits(model, batch) -> torch.Tensor:
    """The next-token logits (B, V) after the last real token of each right-padded row."""
    out = model(batch["idx"], attention_mask=batch["attention_mask"])
    last = batch["attention_mask"].long().sum(dim=1).clamp(min=1) - 1
    return out.logits[torch.arange(len(last), device=last.device), last].float()


def verbalized_objective(
    task: Task, enc, max_len: int, batch_size: int, seed: int
) -> TaskObjective:
    """A classification task through the language-model head (see the module docstring)."""
    ids = verbalizer_ids(task, enc)
    if ids is None or len(set(ids)) != len(ids):
        raise ValueError(
            f"task {task.name!r} needs one distinct label word per class to be phrased as a "
            "prompt (a verbalizer); give it one or train it with a head"
        )
    words = torch.tensor(ids)
    pad = pad_id(enc)
    train_ids, train_labels, val_ids, val_labels = classification_rows(task, enc, max_len)
    batch_fn = classification_batches(train_ids, train_labels, pad, max_len, batch_size, seed)

    def loss_fn(model, batch):
        logits = _label_position_logits(model, batch)
        return F.cross_entropy(logits, words.to(logits.device)[batch["labels"]]), {}

    @torch.no_grad()
    def outputs(model) -> tuple[torch.Tensor, float]:
        correct, loss_sum = [], 0.0
        device = next(model.parameters()).device
        for i in range(0, len(val_ids), 64):
            b = classification_batch(val_ids[i : i + 64], val_labels[i : i + 64], pad, max_len)
            b = {k: v.to(device) for k, v in b.items()}
            logits = _label_position_logits(model, b)
            restricted = logits[:, words.to(device)]
            correct.append((restricted.argmax(-1) == b["labels"]).float().cpu())
            loss_sum += F.cross_entropy(restricted, b["labels"], reduction="sum").item()
        return torch.cat(correct), loss_sum

    def eval_fn(model) -> dict[str, float]:
        correct, loss_sum = outputs(model)
        return {"val_accuracy": correct.mean().item(), "val_loss": loss_sum / len(val_ids)}

    def scores_fn(model) -> list[float]:
        return outputs(model)[0].tolist()

    return TaskObjective(batch_fn, loss_fn, eval_fn, "val_accuracy", "max", scores_fn=scores_fn)
