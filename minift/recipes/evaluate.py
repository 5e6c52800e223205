"""Evaluate a saved fine-tuned model: `minift eval --model DIR [--task T | --data F]`.

The evaluation is the one training ran (minift.train.objectives): accuracy and loss for
a classification task, exact match and loss for sft, loss for text. Without --task or
--data it runs on the validation rows of the task the model was trained on (rebuilt from
its name and seed), so it reproduces the metric printed at the end of training; with
--data it runs on every row of a JSONL file of the same kind.

The harness (`minift eval --suite default|TASK[,TASK]`, `--model base`, a TSV/CSV --data
with --text-column/--label-column): run_suite scores any model on the versioned standard
suite of minift.recipes.suite, with 95% intervals and the contamination share, and
write_report writes report.json and report.md.

saved_model_fairness: the fairness report (minift.recipes.fairness) of a saved model on
every row of a user's protected-attribute file (`minift fairness --model DIR --data F`).

record_on_card adds an evaluation to the saved model's card (README.md, written by
`minift finetune --save`): its metrics section alone is rewritten
(minift.recipes.model_card.update_metrics).
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
    count: bool = False,
) -> tuple:
    """(metrics, the model's metadata, the task evaluated) of the model saved in ``path``;
    with ``count``, also the number of examples the main metric was measured on (None for
    language modelling, measured on windows of tokens)."""
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
    metrics = {objective.monitor: metrics.pop(objective.monitor), **metrics}
    if not count:
        return metrics, meta, chosen
    n = None
    if chosen.kind == "classification":
        n = len(chosen.val)  # every validation row is scored
    elif objective.scores_fn is not None:
        n = len(objective.scores_fn(model))
    return metrics, meta, chosen, n


def record_on_card(
    path: str | os.PathLike, metrics: dict[str, float], task: Task, n: int | None, data=None
):
    """Add this evaluation to the model card in ``path`` (replacing an earlier one on the
    same rows); the card's path, or None when the folder has none."""
    from minift.recipes.cards import file_facts
    from minift.recipes.model_card import evaluation, update_metrics

    if data is not None:
        where = f"every row of {data} (sha256 {file_facts(str(data))['sha256']})"
    else:
        where = f"{task.name} validation rows"
    return update_metrics(path, evaluation(where, metrics, n, "minift eval"))


def saved_model_fairness(model_dir: str, path: str, group_field: str = "group", pairs=None, positive: str | None = None) -> dict:  # fmt: skip
    """The fairness report of a model saved by `minift finetune --save` on every row of a
    protected-attribute file whose labels are the model's own."""
    from minift.errors import UserError
    from minift.fairness.data import load_group_rows
    from minift.recipes.fairness import fairness_report, positive_index
    from minift.recipes.saved import read_metadata

    saved = read_metadata(model_dir)["task"]  # before loading anything heavy
    rows = load_group_rows(path, group_field)
    if saved["kind"] != "classification":
        raise UserError(f"{model_dir} is a {saved['kind']} model; fairness measures a classifier")
    labels = saved["labels"]
    index = {**{str(i): i for i in range(len(labels))}, **{n: i for i, n in enumerate(labels)}}
    unknown = sorted({str(r["label"]) for r in rows} - set(index))
    if unknown:
        raise UserError(f"{path}: labels {unknown[:5]} are not the model's labels ({', '.join(labels)})")  # fmt: skip
    pos = positive_index(labels, positive)
    model, enc, meta = load_finetuned(model_dir)
    rows = [dict(r, label=index[str(r["label"])]) for r in rows]
    task = Task(str(path), "classification", rows, rows, labels, template=saved.get("template", ""))
    return fairness_report(model, task, enc, meta["max_len"], pairs, pos)


# ---------------------------------------------------------------- the harness: --suite
def load_subject(ref: str):
    """ "base" (the embedded base), a folder saved by `minift finetune --save`, or a minift
    or Hugging Face GPT-2 model folder, as a minift.recipes.suite.Subject."""
    import pathlib

    from minift.model import GPT
    from minift.recipes.pretrain import load_base
    from minift.recipes.saved import is_finetuned
    from minift.recipes.suite import subject_from

    if ref == "base":
        model, enc = load_base()
        return subject_from(model, enc, "base")
    folder = pathlib.Path(ref)
    if not folder.is_dir():
        raise FileNotFoundError(f"--model {folder}: no such folder (or give --model base)")
    if is_finetuned(folder):
        model, enc, meta = load_finetuned(folder)
        return subject_from(model, enc, f"{folder.name} ({meta['method']})", meta)
    config = (folder / "config.json").read_text() if (folder / "config.json").is_file() else ""
    if '"model_type"' in config:
        from minift.model.hf_tokenizer import encoding_from_hf_folder

        enc = encoding_from_hf_folder(folder)
        return subject_from(GPT.from_pretrained(folder), enc, folder.name)
    from minift.data.encoding import default_encoding
    from minift.tokenizer import load_encoding

    enc = load_encoding(folder / "encoding.json") if (folder / "encoding.json").is_file() else default_encoding()  # fmt: skip
    return subject_from(GPT.load(folder), enc, folder.name)


def file_task(path: str, text_column: str = "text", label_column: str = "label") -> Task:
    """A local file as a task to score: JSONL (any kind), or a TSV/CSV of labelled texts
    whose label names are also the label words a base model is prompted with."""
    from minift.data.tables import is_table, load_table

    if not is_table(path):
        fmt, rows = load_jsonl(path)
    else:
        fmt, rows = "classification", load_table(path, text_column, label_column)
    labels: list[str] = []
    if fmt == "classification":
        labels = sorted({str(r["label"]) for r in rows})
        rows = [dict(r, label=labels.index(str(r["label"]))) for r in rows]
    return Task(str(path), fmt, rows, rows, labels, verbalizer=[" " + x for x in labels])


def suite_items(spec: str, seed: int = 0) -> list:
    """ "default" (SUITES), or comma-separated names: "lm-pydocs" and registered tasks."""
    from minift.recipes.suite import SUITES

    names = SUITES[spec] if spec in SUITES else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--suite {spec!r} names no task; give default or TASK[,TASK]")
    return [n if n == "lm-pydocs" else get_task(n, seed=seed) for n in names]


def run_suite(
    model: str, suite: str | None = "default", data: str | None = None, text_column: str = "text",
    label_column: str = "label", seed: int = 0, check_contamination: bool = True, subject=None,
) -> dict:  # fmt: skip
    """Score one model on a suite (and/or a local file); the report as a dict."""
    from importlib.metadata import PackageNotFoundError, version

    from minift.recipes.suite import SUITE_VERSION, pretraining_index, score

    items = suite_items(suite, seed) if suite else []
    if data is not None:
        items.append(file_task(data, text_column, label_column))
    subject = subject or load_subject(model)
    try:
        minift_version = version("minift")
    except PackageNotFoundError:  # run from a source tree that was never installed
        minift_version = "unknown"
    index = pretraining_index() if check_contamination else None
    scores = []
    for item in items:
        s = score(subject, item, index)
        scores.append(s)
        main = next(iter(s.metrics))
        print(f"  {s.task:<16s} {main} {s.metrics[main]['value']:.3f} ({s.seconds:.1f} s)")
    return {
        "model": subject.name, "parameters": subject.parameters, "suite": suite,
        "suite_version": SUITE_VERSION, "minift_version": minift_version,
        "seed": seed, "tasks": [dict(s.__dict__) for s in scores],
    }  # fmt: skip


def compare_reports(a: dict, b: dict) -> list:
    """Paired comparisons (minift.metrics.compare) of two reports' main metric on every task
    both scored per example on the same rows: is model a better than model b?"""
    from minift.metrics import compare

    if a["suite_version"] != b["suite_version"]:
        raise ValueError(f"suite versions differ ({a['suite_version']} and {b['suite_version']}): the rows are not the same")  # fmt: skip
    theirs = {t["task"]: t for t in b["tasks"]}
    out = []
    for t in a["tasks"]:
        u = theirs.get(t["task"])
        if u and t.get("per_example") and u.get("per_example") and t["n"] == u["n"]:
            out.append(compare(f"{a['model']} {t['task']}", t["per_example"], b["model"], u["per_example"]))  # fmt: skip
    return out


def _cell(m: dict) -> str:
    if "low" in m:
        return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
    return f"{m['value']:.3f}"


def report_markdown(report: dict) -> str:
    """The report as a markdown table: one row per task and metric, with its interval."""
    lines = [
        f"# {report['model']}: suite {report['suite']} v{report['suite_version']}",
        "",
        f"{report['parameters']:,} parameters; 95% bootstrap intervals over examples; "
        "contamination: share of examples sharing an 8-word n-gram with the pretraining corpus.",
        "",
        "| task | kind | mode | n | metric | value [95% CI] | contamination |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        dirty = "" if t["contamination"] is None else f"{t['contamination']:.1%}"
        for name, m in t["metrics"].items():
            lines.append(f"| {t['task']} | {t['kind']} | {t['mode']} | {t['n']} | {name} | {_cell(m)} | {dirty} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str | os.PathLike) -> tuple[str, str]:
    """report.json and report.md in ``out`` (written atomically)."""
    import pathlib

    from minift.io import atomic_path, write_json

    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report)
    with atomic_path(folder / "report.md") as tmp:
        pathlib.Path(tmp).write_text(report_markdown(report), encoding="utf-8")
    return str(folder / "report.json"), str(folder / "report.md")
