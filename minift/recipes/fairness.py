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


def fairness_report(model, task: Task, enc, max_len: int, pairs=GENDER_PAIRS) -> dict:
    y = [int(r["label"]) for r in task.val]
    groups = [r["group"] for r in task.val]
    probs = probabilities(model, task, enc, [r["text"] for r in task.val], max_len)
    swapped = probabilities(model, task, enc, [swap_attribute(r["text"], pairs) for r in task.val], max_len)  # fmt: skip
    pred = probs.argmax(-1).tolist()
    return {
        "accuracy": sum(p == t for p, t in zip(pred, y)) / len(y),
        "group_accuracy": group_rates(y, pred, groups)["accuracy"],
        "accuracy_gap": accuracy_gap(y, pred, groups),
        "demographic_parity": demographic_parity_difference(y, pred, groups),
        "equalized_odds": equalized_odds_difference(y, pred, groups),
        **counterfactual_change(probs, swapped),
        "correct": [float(p == t) for p, t in zip(pred, y)],
    }


def run_fairness(task: Task, base, enc, config: FinetuneConfig, mitigations=MITIGATIONS) -> dict:
    """The fairness report of a fine-tune under each mitigation."""
    from minift.recipes.fairness_adversary import adversarial_removal

    out = {}
    for how in mitigations:
        t0 = time.perf_counter()
        if how == "adversary":
            model = adversarial_removal(mitigate(task, how), base, enc, config)
        else:
            model = finetune(mitigate(task, how), base, enc, config, keep_model=True).model
        out[how] = fairness_report(model, task, enc, config.max_len)
        out[how]["seconds"] = time.perf_counter() - t0
    return out
