"""The course's report card: `minift report`.

For the base model and each fine-tuning method of the demo (each fine-tuned on the
default task at its registered learning rate, the demo's steps), one row: the standard
suite's main metric per task (minift.recipes.suite, with its version), the cost of the
fine-tuning (wall time, training FLOPs, peak memory) and the parameters (trainable and
total). nanochat's report card did the same for its stages; here the stages are
methods. FLOPs are minift.train.flops.flops_per_step per optimizer step (6 W per token
for full training, 4 W + 6 A when only A added weights train, Kaplan et al. 2020), times
the steps; a probe fitted in closed form counts one forward pass over its training rows.
The base row has no fine-tuning cost: its columns say "-".
"""

from __future__ import annotations

import pathlib
import time

from minift.io import atomic_path, write_json
from minift.recipes.demo import DEFAULT_METHODS
from minift.recipes.evaluate import run_suite
from minift.recipes.finetune import finetune
from minift.recipes.pretrain import load_base
from minift.recipes.suite import SUITE_VERSION, subject_from
from minift.recipes.tasks import get_task
from minift.train.flops import added_trainable, flops_per_step

REPORT_METHODS = DEFAULT_METHODS  # the demo's twelve strategies, scratch included


def fine_tuning_flops(model, gpt_config, result, n_train: int, batch_size: int) -> float:
    """Training FLOPs of a finished run (see the module doc)."""
    steps = result.train.steps if result.train is not None else 0
    if steps == 0:  # fitted in closed form: the features of the training rows, once
        return flops_per_step(gpt_config, n_train, result.max_len, training=False)
    trainable = added_trainable(model)
    return steps * flops_per_step(gpt_config, batch_size, result.max_len, trainable=trainable)


def report_card(
    methods=REPORT_METHODS, task_name: str | None = None, steps: int | None = None,
    suite: str = "default", seed: int = 0, out: str | None = None,
) -> dict:  # fmt: skip
    """Fine-tune each method, score base and methods on the suite; write JSON + markdown."""
    from minift.recipes.demo import DEFAULT_HEAD, DEFAULT_STEPS, FAST_STEPS, demo_config
    from minift.utils import fast_mode

    steps = steps or (FAST_STEPS if fast_mode() else DEFAULT_STEPS)
    base, enc = load_base(progress=False)
    task = get_task(task_name or "stdlib-package", seed=seed)
    rows = []
    print(f"report card: base + {', '.join(methods)} on {task.name}, {steps} steps; suite {suite} v{SUITE_VERSION}")  # fmt: skip
    t0 = time.perf_counter()
    scored = run_suite("base", suite, seed=seed)
    rows.append({"model": "base", "trainable": 0, "total": scored["parameters"], "seconds": None,
                 "flops": None, "peak_mb": None, "eval_seconds": time.perf_counter() - t0,
                 "tasks": scored["tasks"]})  # fmt: skip
    for m in methods:
        config = demo_config(m, steps=steps, seed=seed, progress=False, eval_every=steps, eval_at_start=False)  # fmt: skip
        result = finetune(task, base, enc, config, keep_model=True)
        meta = {"task": {"name": task.name, "kind": task.kind, "labels": task.labels}, "max_len": result.max_len}  # fmt: skip
        t1 = time.perf_counter()
        subject = subject_from(result.model, enc, m, meta)
        scored = run_suite(m, suite, seed=seed, subject=subject)
        flops = fine_tuning_flops(
            result.model, base.config, result, len(task.train), config.batch_size
        )
        rows.append({"model": m, "trainable": result.trainable, "total": result.total,
                     "seconds": result.seconds, "flops": flops, "peak_mb": result.peak_mb,
                     "eval_seconds": time.perf_counter() - t1, "tasks": scored["tasks"]})  # fmt: skip
    card = {"task": task.name, "steps": steps, "head": DEFAULT_HEAD, "suite": suite, "suite_version": SUITE_VERSION, "rows": rows}  # fmt: skip
    if out:
        folder = pathlib.Path(out)
        write_json(folder / "report_card.json", card)
        with atomic_path(folder / "report_card.md") as tmp:
            tmp.write_text(card_markdown(card), encoding="utf-8")
        print("wrote", folder / "report_card.json", "and", folder / "report_card.md")
    return card


def _main_metric(t: dict) -> tuple[str, dict]:
    name = next(iter(t["metrics"]))
    return name, t["metrics"][name]


def card_markdown(card: dict) -> str:
    """One row per model: the suite's main metric per task (with its mode: head or prompt
    for classification), then parameters and the fine-tuning cost."""
    tasks = card["rows"][0]["tasks"]
    heads = [f"{t['task']} ({_main_metric(t)[0].replace('_', ' ')})" for t in tasks]
    lines = [
        f"Report card: fine-tuned on {card['task']} for {card['steps']} steps"
        + (
            ", every head started at the converged probe (LP-FT)"
            if card.get("head") == "probe"
            else ""
        )
        + "; suite "
        f"{card['suite']} v{card['suite_version']} (95% bootstrap intervals in report_card.json; "
        "* = answered by the task's own head, otherwise zero-shot through the LM head).",
        "",
        "| model | "
        + " | ".join(heads)
        + " | trainable / total params | time (s) | FLOPs | peak MB |",
        "|---|" + "---|" * (len(heads) + 4),
    ]
    for row in card["rows"]:
        cells = []
        for t in row["tasks"]:
            value = _main_metric(t)[1]["value"]
            cells.append(f"{value:.3f}{'*' if t['mode'] == 'head' else ''}")
        cost = ["-", "-", "-"] if row["seconds"] is None else [f"{row['seconds']:.1f}", f"{row['flops']:.2e}", f"{row['peak_mb']:.0f}"]  # fmt: skip
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['trainable']:,} / {row['total']:,} | " + " | ".join(cost) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"
