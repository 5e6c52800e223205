"""Fairness of a fine-tuned classifier on a task with a protected attribute, and two
mitigations in the data.

    for each mitigation (none, cda, reweight):
        train rows = the task's, changed by the mitigation
        model      = finetune(task with those rows)
        report     = accuracy, per-group accuracy, demographic parity and equalized-odds
                     differences on the validation rows (their ``group`` field), and the
                     counterfactual flip rate with the attribute swapped in each text

- cda (counterfactual data augmentation, Lu et al. 2020): every training row also appears
  with its attribute swapped, same label, so the attribute no longer predicts the label;
- reweight (Kamiran and Calders 2012): each (group, label) cell gets the weight that makes
  group and label independent, P(g) P(y) / P(g, y); applied here by drawing each cell's
  rows that many times as often (whole copies, rounded), which the fixed-batch trainer
  takes without a change to its loss;
- adversary: adversarial removal of the attribute from the pooled features through a
  gradient-reversal layer (minift.recipes.fairness_adversary; full fine-tuning only).

A user's own data: group_file_task makes a task of a protected-attribute file
(minift.fairness.data: text, label and a group field), split into train and validation
rows as any JSONL task is; saved_model_fairness reports on every row of such a file for a
model saved by `minift finetune --save`. The counterfactual test runs only with a swap
rule (``pairs``) that changes some text; otherwise the report says why it was skipped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import torch

from minift.data.tasks import Task
from minift.errors import UserError
from minift.fairness import (
    GENDER_PAIRS,
    accuracy_gap,
    counterfactual_change,
    counterfactual_rows,
    demographic_parity_difference,
    equalized_odds_difference,
    group_rates,
    swap_attribute,
)
from minift.recipes.finetune import FinetuneConfig, finetune
from minift.recipes.security import batches_of

MITIGATIONS = ("none", "cda", "reweight", "adversary")


def reweighted_rows(rows: list[dict]) -> list[dict]:
    """Each (group, label) cell repeated round(w / min w) times, w = P(g) P(y) / P(g, y)."""
    n = len(rows)
    pg = Counter(r["group"] for r in rows)
    py = Counter(int(r["label"]) for r in rows)
    pgy = Counter((r["group"], int(r["label"])) for r in rows)
    w = {k: pg[k[0]] * py[k[1]] / (n * c) for k, c in pgy.items()}
    low = min(w.values())
    return [r for r in rows for _ in range(max(1, round(w[(r["group"], int(r["label"]))] / low)))]


def mitigate(task: Task, how: str, pairs=GENDER_PAIRS) -> Task:
    if how not in MITIGATIONS:
        raise UserError(f"unknown mitigation {how!r}; choices: {', '.join(MITIGATIONS)}")
    if any("group" not in r for r in task.train + task.val):
        raise UserError(f"{task.name}: every row needs a 'group' (the protected attribute)")
    if len({r["group"] for r in task.val}) < 2:
        raise UserError(f"{task.name}: the validation rows hold one group; fairness needs two")
    if how == "cda":
        if pairs is None:
            raise UserError("cda swaps the attribute in every training text: it needs a swap rule (--swap gender or --swap WORD:WORD,...)")  # fmt: skip
        groups = sorted({r["group"] for r in task.train})
        swap = dict(zip(groups, reversed(groups))) if len(groups) == 2 else None
        return replace(task, train=task.train + counterfactual_rows(task.train, pairs, swap))
    if how == "reweight":
        return replace(task, train=reweighted_rows(task.train))
    return task  # none, and adversary (which changes the loss, not the rows)


@torch.no_grad()
def probabilities(model, task: Task, enc, texts: list[str], max_len: int) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    rows = [{"text": t, "label": 0} for t in texts]
    out = [
        model(b["idx"].to(device), attention_mask=b["attention_mask"].to(device)).logits.softmax(-1).cpu()
        for b in batches_of(task, enc, rows, max_len)
    ]  # fmt: skip
    return torch.cat(out).double()


def fairness_report(model, task: Task, enc, max_len: int, pairs=GENDER_PAIRS, pos_label: int = 1) -> dict:  # fmt: skip
    """Accuracy, per-group accuracy, parity and equalized-odds differences (``pos_label``
    is the positive class), and the counterfactual flip rate over the rows whose text the
    swap rule ``pairs`` changes (None: no rule; the report says why it skipped)."""
    y = [int(r["label"]) for r in task.val]
    groups = [r["group"] for r in task.val]
    texts = [r["text"] for r in task.val]
    probs = probabilities(model, task, enc, texts, max_len)
    pred = probs.argmax(-1).tolist()
    report = {
        "n": len(y),
        "positive_label": task.labels[pos_label] if pos_label < len(task.labels) else pos_label,
        "accuracy": sum(p == t for p, t in zip(pred, y)) / len(y),
        "group_accuracy": group_rates(y, pred, groups, pos_label)["accuracy"],
        "accuracy_gap": accuracy_gap(y, pred, groups),
        "demographic_parity": demographic_parity_difference(y, pred, groups, pos_label),
        "equalized_odds": equalized_odds_difference(y, pred, groups, pos_label),
        "flip_rate": None, "mean_change": None,
        "correct": [float(p == t) for p, t in zip(pred, y)],
    }  # fmt: skip
    swapped = [swap_attribute(t, pairs) for t in texts] if pairs is not None else texts
    changed = [i for i, (a, b) in enumerate(zip(texts, swapped)) if a != b]
    if pairs is None:
        report["counterfactual"] = "no swap rule for this attribute (`minift fairness --swap gender` or --swap WORD:WORD,... gives one)"  # fmt: skip
    elif not changed:
        report["counterfactual"] = f"the swap rule changes none of the {len(texts)} texts"
    else:
        after = probabilities(model, task, enc, [swapped[i] for i in changed], max_len)
        report.update(counterfactual_change(probs[changed], after))
        report["counterfactual_rows"] = len(changed)
    return report


def run_fairness(
    task: Task, base, enc, config: FinetuneConfig, mitigations=MITIGATIONS, pairs=GENDER_PAIRS,
    pos_label: int = 1, keep: str | None = None,
) -> dict:  # fmt: skip
    """The fairness report of a fine-tune under each mitigation; the report of the one
    named ``keep`` also holds its FinetuneResult (with the model) under "result"."""
    from minift.recipes.fairness_adversary import adversarial_removal

    if keep == "adversary":
        raise UserError("the adversary mitigation trains outside finetune, so its model cannot be saved; put another mitigation last")  # fmt: skip
    out = {}
    for how in mitigations:
        t0 = time.perf_counter()
        result = None
        if how == "adversary":
            model = adversarial_removal(mitigate(task, how, pairs), base, enc, config)
        else:
            result = finetune(mitigate(task, how, pairs), base, enc, config, keep_model=True)
            model = result.model
        out[how] = fairness_report(model, task, enc, config.max_len, pairs, pos_label)
        out[how]["seconds"] = time.perf_counter() - t0
        if how == keep:
            out[how]["result"] = result
    return out


# ------------------------------------------------------------------ a user's file
def positive_index(labels: list[str], positive: str | None) -> int:
    """The index of the positive label (whose selection rate parity compares): the given
    one, or the second label in sorted order (1 of 0/1, "yes" of no/yes)."""
    if positive is None:
        return 1
    if positive not in labels:
        raise UserError(f"--positive {positive!r} is not a label of the data; labels: {', '.join(labels)}")  # fmt: skip
    return labels.index(positive)


def group_file_task(path: str, group_field: str = "group", seed: int = 0) -> Task:
    """A protected-attribute file as a classification task (labels sorted, rows split by a
    stable hash of the text, 10% held out), both splits holding two groups or more."""
    from minift.data.tasks import split_rows
    from minift.fairness.data import load_group_rows

    rows = load_group_rows(path, group_field)
    labels = sorted({str(r["label"]) for r in rows})
    if len(labels) < 2:
        raise UserError(f"{path}: every row has the label {labels[0]!r}; fairness of a classifier needs two labels or more")  # fmt: skip
    rows = [dict(r, label=labels.index(str(r["label"]))) for r in rows]
    train, val = split_rows(rows, 0.1, seed, "text")
    for name, part in (("training", train), ("validation", val)):
        if len({r["group"] for r in part}) < 2:
            raise UserError(f"{path}: the {name} rows (of {len(rows)}) hold {len({r['group'] for r in part})} group(s); fairness needs two or more in each: add rows")  # fmt: skip
    return Task(name=str(path), kind="classification", train=train, val=val, labels=labels)
