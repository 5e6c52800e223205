"""A backdoor planted by poisoned fine-tuning rows, and two defences that look for them.

poisoned = the task with a share `rate` of its training rows given the trigger and
           the target label (minift.security.poison)
model    = finetune(poisoned task)
measured = clean validation accuracy, and the attack success rate: the share of the
           other classes' validation rows, trigger inserted, put in the target class
defences = ONION on the training texts, scored by the base language model
           (minift.security.onion); spectral signatures on the backdoored model's
           pooled features (minift.security.spectral); each removes the rows it flags,
           the model is fine-tuned again, and the attack is measured again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.errors import UserError
from minift.recipes.finetune import FinetuneConfig, finetune
from minift.security import (
    attack_success_rate,
    onion_flags,
    onion_threshold,
    poison_rows,
    spectral_filter,
    suspicion,
    triggered_rows,
)
from minift.tokenizer import pad_id
from minift.train.features import pooled_features
from minift.train.objectives import classification_inputs


@dataclass
class BackdoorRun:
    rate: float
    clean_accuracy: float
    attack_success: float
    poisoned: list[int]  # indices of the poisoned training rows
    model: torch.nn.Module | None = None


def batches_of(task: Task, enc, rows: list[dict], max_len: int, size: int = 128) -> list[dict]:
    ids = classification_inputs(task, enc, rows, max_len)
    labels = [int(r["label"]) for r in rows]
    return [
        classification_batch(ids[i : i + size], labels[i : i + size], pad_id(enc), max_len)
        for i in range(0, len(rows), size)
    ]


@torch.no_grad()
def predict(model, task: Task, enc, rows: list[dict], max_len: int) -> list[int]:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for b in batches_of(task, enc, rows, max_len):
        logits = model(b["idx"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        out += logits.argmax(-1).tolist()
    return out


def backdoor(
    task: Task, base, enc, config: FinetuneConfig, rate: float, target: int = 0, seed: int = 0,
    train_rows: list[dict] | None = None, poisoned: list[int] | None = None,
) -> BackdoorRun:  # fmt: skip
    """Fine-tune on ``task`` with a share ``rate`` of its rows poisoned (or on the given
    ``train_rows``, already poisoned at ``poisoned``) and measure the backdoor."""
    if task.kind != "classification":
        raise UserError(f"backdoor poisoning needs a classification task; {task.name} is {task.kind!r}")  # fmt: skip
    if not 0 <= target < task.num_labels:
        raise UserError(f"target label {target} is not one of 0..{task.num_labels - 1}")
    if train_rows is None:
        train_rows, poisoned = poison_rows(task.train, rate, target, seed)
    result = finetune(replace(task, train=train_rows), base, enc, config, keep_model=True)
    trig = triggered_rows(task.val, target, seed=seed + 1)
    asr = attack_success_rate(predict(result.model, task, enc, trig, result.max_len), target)
    return BackdoorRun(rate, result.metric, asr, list(poisoned or []), result.model)


def visible(text: str, enc, max_len: int) -> str:
    """The words of ``text`` the classifier reads (its first max_len tokens): a trigger
    can only act there, so ONION need not score the rest."""
    words = text.split(" ")
    n = 1
    while n < len(words) and len(enc.encode_ordinary(" ".join(words[: n + 1]))) <= max_len:
        n += 1
    return " ".join(words[:n])


def onion_defence(
    base, enc, task: Task, rows: list[dict], max_len: int, quantile: float = 0.95
) -> list[int]:
    """The training rows ONION flags; the threshold is the ``quantile`` of the clean
    validation rows' largest word suspicion (trusted data). Only the words the
    classifier reads are scored."""
    clean = suspicion(base, enc, [visible(r["text"], enc, max_len) for r in task.val])
    scores = suspicion(base, enc, [visible(r["text"], enc, max_len) for r in rows])
    return onion_flags(scores, onion_threshold(clean, quantile))


def spectral_defence(
    model, task: Task, enc, rows: list[dict], eps: float, max_len: int
) -> list[int]:
    """The training rows spectral signatures flag in ``model``'s pooled features."""
    X, y = pooled_features(model, batches_of(task, enc, rows, max_len))
    return spectral_filter(X, y, eps)


def detection(flagged: list[int], poisoned: list[int]) -> dict[str, float]:
    """How many poisoned rows a defence found, and how many clean rows it took with them."""
    hit = len(set(flagged) & set(poisoned))
    return {
        "flagged": len(flagged),
        "found": hit,
        "recall": hit / len(poisoned) if poisoned else 1.0,
        "precision": hit / len(flagged) if flagged else 1.0,
    }


def without(
    rows: list[dict], flagged: list[int], poisoned: list[int]
) -> tuple[list[dict], list[int]]:
    """The rows a defence keeps, and where the poisoned ones it missed now sit."""
    drop = set(flagged)
    keep = [i for i in range(len(rows)) if i not in drop]
    where = {old: new for new, old in enumerate(keep)}
    return [rows[i] for i in keep], [where[i] for i in poisoned if i in where]
