"""Evaluate a saved fine-tuned model: `minift eval --model DIR [--task T | --data F]`.

The evaluation is the one training ran (minift.train.objectives): accuracy and loss for
a classification task, exact match and loss for sft, loss for text. Without --task or
--data it runs on the validation rows of the task the model was trained on (rebuilt from
its name and seed), so it reproduces the metric printed at the end of training; with
--data it runs on every row of a JSONL file of the same kind.
"""

from __future__ import annotations

import os
from typing import Any

from minift.data.jsonl import load_jsonl
from minift.data.tasks import Task
from minift.recipes.saved import load_finetuned
from minift.recipes.tasks import get_task
from minift.train.objectives import task_objective


def data_task(path: str | os.PathLike, saved: dict[str, Any]) -> Task:
    """Every row of a JSONL file as the validation rows of a task like the saved one."""
    fmt, rows = load_jsonl(path)
    if fmt != saved["kind"]:
        raise ValueError(f"{path} holds {fmt} rows; the model was trained on {saved['kind']} rows")
    labels = saved["labels"]
    if fmt == "classification":
        unknown = sorted({str(r["label"]) for r in rows} - set(labels) - set(map(str, range(len(labels)))))  # fmt: skip
        if unknown:
            raise ValueError(f"{path}: labels {unknown[:5]} are not the model's labels {labels}")
        index = {**{str(i): i for i in range(len(labels))}, **{n: i for i, n in enumerate(labels)}}
        rows = [dict(r, label=index[str(r["label"])]) for r in rows]
    return Task(str(path), fmt, rows, rows, labels, template=saved.get("template", ""))


def evaluate_saved(
    path: str | os.PathLike,
    task: str | None = None,
    data: str | os.PathLike | None = None,
    batch_size: int = 32,
) -> tuple[dict[str, float], dict[str, Any], Task]:
    """(metrics, the model's metadata, the task evaluated) of the model saved in ``path``."""
    if task is not None and data is not None:
        raise ValueError("give --task or --data, not both")
    model, enc, meta = load_finetuned(path)
    saved = meta["task"]
    if data is not None:
        chosen = data_task(data, saved)
    else:
        chosen = get_task(task or saved["name"], seed=saved["seed"])
        if chosen.kind != saved["kind"] or chosen.labels != saved["labels"]:
            raise ValueError(
                f"task {chosen.name!r} ({chosen.kind}, labels {chosen.labels}) is not the kind "
                f"the model was trained on ({saved['kind']}, labels {saved['labels']})"
            )
    objective = task_objective(chosen, enc, meta["max_len"], batch_size, saved["seed"])
    metrics = objective.eval_fn(model)
    return {objective.monitor: metrics.pop(objective.monitor), **metrics}, meta, chosen
