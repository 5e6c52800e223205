"""A skewed version of a balanced classification task, with a known imbalance ratio.

Class c (in label order) keeps

    n_c = round(n_max * ratio ** (-c / (K - 1)))        c = 0 .. K-1

training rows: a geometric ("exponential") profile from n_max rows for the first class
down to n_max / ratio for the last, the long-tail profile Cui et al. (2019) and Cao et al.
(2019) use to build CIFAR-LT. The rows kept are the first n_c of each class in the task's
own (seeded) order. Validation stays balanced, so each class counts equally in it and
accuracy on it equals balanced accuracy; what the skew does to a model shows in its
per-class recall.
"""

from __future__ import annotations

import dataclasses

from minift.data.tasks import Task, register_task, stdlib_package_task
from minift.errors import UserError


def skew_counts(num_classes: int, n_max: int, ratio: float) -> list[int]:
    """Rows per class of the geometric profile above (at least 1 each)."""
    if num_classes < 2:
        raise UserError(f"a skewed task needs >= 2 classes, got {num_classes}")
    if ratio < 1:
        raise UserError(f"the imbalance ratio must be >= 1 (largest : smallest), got {ratio}")
    return [max(1, round(n_max * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def skew_task(task: Task, ratio: float = 20.0, n_max: int | None = None) -> Task:
    """``task`` with its training rows cut to the geometric profile (validation unchanged).
    n_max defaults to the smallest class's count, so every class can be cut to its share."""
    if task.kind != "classification":
        raise UserError(f"only a classification task can be skewed; {task.name} is {task.kind!r}")
    by_class: dict[int, list[dict]] = {c: [] for c in range(task.num_labels)}
    for row in task.train:
        by_class[int(row["label"])].append(row)
    n_max = n_max if n_max is not None else min(len(v) for v in by_class.values())
    counts = skew_counts(task.num_labels, n_max, ratio)
    short = {task.labels[c]: len(by_class[c]) for c, n in enumerate(counts) if len(by_class[c]) < n}
    if short:
        raise UserError(f"{task.name}: too few rows for {n_max} in the largest class: {short}")
    keep = {id(r) for c, n in enumerate(counts) for r in by_class[c][:n]}
    return dataclasses.replace(
        task,
        name=f"{task.name}-skewed",
        train=[r for r in task.train if id(r) in keep],  # the task's order, interleaved
        description=f"{task.description} (training rows skewed {ratio:g}:1, {counts})",
    )


@register_task("stdlib-package-skewed")
def stdlib_package_skewed_task(seed: int = 0, ratio: float = 20.0, n_max: int = 150) -> Task:
    """stdlib-package with 150 training rows of asyncio down to 8 of xml (20:1)."""
    return skew_task(stdlib_package_task(seed=seed, per_class=n_max), ratio, n_max)
