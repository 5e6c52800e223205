"""Prompting as a job, and prompting against fine-tuning by the labelled examples used.

- :func:`run_prompt` (`minift prompt --task T --shots 8 --select similar`): classify a
  task's validation rows with k-shot prompts, print the accuracy with its standard error,
  the largest k that fits, and the same prompt with contextual calibration.
- :func:`label_efficiency`: the comparison a practitioner needs before labelling data:
  accuracy against the number of labelled examples N (a class-balanced subset of the
  training rows, the same for every method) for prompting (k = min(N, what fits) similar
  demonstrations, and zero-shot), the converged linear probe, LoRA and full fine-tuning,
  each at its registered learning rate and the same steps and batch size.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from minift.data.tasks import Task
from minift.errors import UserError
from minift.metrics import accuracy_se
from minift.prompting import classify, max_shots
from minift.recipes.finetune import FinetuneConfig, finetune, train_config


def run_prompt(
    task: Task, model, enc, shots: int = 8, select: str = "similar", seed: int = 0
) -> dict:
    """Accuracy of k-shot prompting on ``task``'s validation rows, plain and calibrated."""
    budget = max_shots(enc, task, model.config.block_size)
    print(task.summary())
    print(budget)
    if shots > budget.max_shots:
        print(f"note: {shots} shots exceed what fits; the earliest demonstrations are cut")
    out = {"task": task.name, "shots": shots, "select": select, "max_shots": budget.max_shots}
    for calibrated in (False, True):
        t0 = time.perf_counter()
        r = classify(model.eval(), enc, task, shots, select, calibrated=calibrated, seed=seed)
        se = accuracy_se(r.accuracy, len(r.labels))
        name = "calibrated" if calibrated else "plain"
        print(
            f"{shots}-shot ({select}, {name}): accuracy {r.accuracy:.3f} ± {se:.3f} on "
            f"{len(r.labels)} rows, {r.truncated} prompts cut, {time.perf_counter() - t0:.1f} s"
        )
        out[name] = {"accuracy": r.accuracy, "se": se, "truncated": r.truncated}
    print(f"chance: {1 / task.num_labels:.3f} ({task.num_labels} classes)")
    return out


def balanced_subset(rows: list[dict], n: int, seed: int) -> list[dict]:
    """n rows, as equal per class as the classes allow, chosen by a seeded shuffle."""
    by_class: dict[int, list[dict]] = {}
    for r in rows:
        by_class.setdefault(int(r["label"]), []).append(r)
    if n > len(rows):
        raise UserError(f"n={n} labelled examples asked, the training set has {len(rows)}")
    rng = random.Random(seed)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_class.items())]
    chosen: list[dict] = []
    while len(chosen) < n:
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    rng.shuffle(chosen)
    return chosen


@dataclass
class LabelEfficiency:
    sizes: list[int]
    methods: list[str]
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[str, list[list[float]]] = field(default_factory=dict)  # per example
    zero_shot: float = 0.0
    zero_shot_scores: list[float] = field(default_factory=list)
    max_shots: int = 0
    n_val: int = 0
    steps: int = 0


def label_efficiency(
    task: Task,
    base,
    enc,
    sizes: list[int],
    methods: tuple[str, ...] = ("prompt", "probe", "lora", "full"),
    steps: int = 60,
    seed: int = 0,
) -> LabelEfficiency:
    """Accuracy per method and per number of labelled examples (see the module doc)."""
    budget = max_shots(enc, task, base.config.block_size)
    zero = classify(base.eval(), enc, task, 0)
    out = LabelEfficiency(list(sizes), list(methods), max_shots=budget.max_shots, n_val=len(task.val), steps=steps)  # fmt: skip
    out.zero_shot, out.zero_shot_scores = zero.accuracy, zero.correct
    for n in sizes:
        subset = balanced_subset(task.train, n, seed)
        small = Task(f"{task.name}[{n}]", task.kind, subset, task.val, task.labels,
                     template=task.template, verbalizer=task.verbalizer)  # fmt: skip
        for m in methods:
            if m == "prompt":
                k = min(n, max(1, budget.max_shots))
                r = classify(base.eval(), enc, small, k, "similar", seed=seed)
                acc, scores = r.accuracy, r.correct
            else:
                config = FinetuneConfig(method=m, train=train_config(steps=steps, seed=seed, progress=False, eval_every=steps, eval_at_start=False))  # fmt: skip
                r = finetune(small, base, enc, config)
                acc, scores = r.metric, r.val_scores
            out.accuracy.setdefault(m, []).append(acc)
            out.scores.setdefault(m, []).append(scores)
            print(f"N={n:<4d} {m:<7s} accuracy {acc:.3f} ± {accuracy_se(acc, len(scores)):.3f}")
    return out
