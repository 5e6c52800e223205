"""Distillation on the embedded default: teacher vs student size, speed and metric.

    python scripts/bench_distill.py                 # the full report (tens of minutes on 2 cores)
    python scripts/bench_distill.py --quick         # one seed, short runs, a few minutes
    python scripts/bench_distill.py --only speed    # just the speed table
    python scripts/bench_distill.py --threads 1     # steadier on a CPU shared with other jobs

Three parts, one run:

1. Speed: teacher vs student tokens per second and peak memory, inference (no grad)
   and a training step (forward, loss, backward, AdamW), for the task's classifiers on
   the task's batch and on a large batch, and for the language models (teacher = the base)
   on pydocs windows. CPU, and CUDA when present.
2. The task (stdlib-package): the teacher is the base fully fine-tuned for
   --teacher-steps; every student has the shape minift.distill.shape.student_shape gives
   (at most a quarter of the teacher's parameters) and trains --steps on the same
   batches, over --seeds seeds: without distillation (labels only; from scratch and sliced
   from the teacher), with soft targets, with each feature loss, and with a transfer set.
3. Language modelling on pydocs: the base as teacher, a sliced student, labels only vs
   forward KD vs on-policy reverse KL vs on-policy JSD vs sequence-level KD.

Writes results.json, curves.png (task), lm_curves.png and prints the tables (--out,
default runs/bench_distill/).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch

from minift.data.tasks import DEFAULT_TASK
from minift.distill.config import DistillConfig, train_config
from minift.distill.loop import distill
from minift.distill.objectives import (
    lm_objective,
    pydocs_summaries,
    task_objective,
    transfer_objective,
)
from minift.distill.onpolicy import OnPolicyBatches, sequence_batches, teacher_sequences
from minift.distill.report import format_speed_table, plot_validation_curves, speed_table
from minift.distill.shape import lm_calibration, make_student, student_shape
from minift.recipes.distill import finetune_teacher, task_calibration
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------ 1. speed
def speed_part(teacher, student, lm_teacher, lm_student, task_batch, lm_batch, devices, repeats):
    big = {k: v.repeat(8, *[1] * (v.dim() - 1)) for k, v in task_batch.items()}
    tables = {}
    for device in devices:
        cases = {
            f"classifier, batch {tuple(task_batch['idx'].shape)}": (teacher, student, task_batch),
            f"classifier, batch {tuple(big['idx'].shape)}": (teacher, student, big),
            f"language model, batch {tuple(lm_batch['idx'].shape)}": (lm_teacher, lm_student, lm_batch),
        }  # fmt: skip
        for case, (t, s, batch) in cases.items():
            rows = speed_table(
                {"teacher": t.to(device), "student": s.to(device)}, batch, repeats=repeats
            )
            t.cpu(), s.cpu()
            key = f"{device}: {case}"
            tables[key] = rows
            print(f"\n{key}\n{format_speed_table(rows)}", flush=True)
    return tables


# ------------------------------------------------------------------ 2. the task
def task_runs(base_cfg: DistillConfig) -> dict[str, tuple[str, DistillConfig, bool]]:
    """name -> (init, config, transfer set?)."""
    r = dataclasses.replace
    labels = r(base_cfg, alpha=0.0)
    return {
        "scratch, labels only (no distillation)": ("scratch", labels, False),
        "scratch + KD": ("scratch", base_cfg, False),
        "scratch + KD + transfer set": ("scratch", base_cfg, True),
        "sliced, labels only (no distillation)": ("slice", labels, False),
        "sliced + KD": ("slice", base_cfg, False),
        "sliced + KD + hidden MSE (TinyBERT)": ("slice", r(base_cfg, hidden=0.1), False),
        "sliced + KD + cosine (DistilBERT)": ("slice", r(base_cfg, cosine=1.0), False),
        "sliced + KD + attention MSE (TinyBERT)": ("slice", r(base_cfg, attention=10.0), False),
        "sliced + KD + attention/value KL (MiniLM)": (
            "slice",
            r(base_cfg, attention_kl=1.0, value_kl=1.0),
            False,
        ),
        "sliced + KD + transfer set": ("slice", base_cfg, True),
    }


def mean_curve(histories: list[list[dict]], key: str) -> list[dict]:
    steps = sorted({h["step"] for hist in histories for h in hist if key in h})
    out = []
    for s in steps:
        vals = [h for hist in histories for h in hist if h["step"] == s and key in h]
        out.append({"step": s, **{k: statistics.mean(v[k] for v in vals) for k in (key, "val_loss") if k in vals[0]}})  # fmt: skip
    return out


def task_part(args, base, enc, out: pathlib.Path) -> dict:
    task = get_task(DEFAULT_TASK, seed=0)
    t0 = time.perf_counter()
    teacher, run = finetune_teacher(task, base, enc, args.teacher_steps)
    print(f"\nteacher: {run.total:,} parameters, {args.teacher_steps} steps, val accuracy {run.metric:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
    shape = student_shape(teacher, budget=0.25)
    calibration = task_calibration(task, enc)
    texts = pydocs_summaries({r["text"] for r in task.train + task.val})
    train = train_config(steps=args.steps, eval_every=max(1, args.steps // 12), progress=False)
    base_cfg = DistillConfig(alpha=0.5, temperature=2.0, train=train)
    runs = task_runs(base_cfg)
    if args.runs:
        runs = {k: v for k, v in runs.items() if any(w in k for w in args.runs.split(","))}
    results: dict[str, list] = {}
    students = {}
    for name, (init, config, use_transfer) in runs.items():
        results[name] = []
        for seed in range(args.seeds):
            if (init, seed) not in students:
                students[(init, seed)] = make_student(teacher, init, shape, calibration, seed)
            student, info = students[(init, seed)]
            objective = (
                transfer_objective(task, enc, texts, unlabeled_per_batch=32, seed=seed)
                if use_transfer
                else task_objective(task, enc, seed=seed)
            )
            train = dataclasses.replace(config.train, seed=seed)
            config_seed = dataclasses.replace(config, train=train)
            r = distill(teacher, copy.deepcopy(student), objective, config_seed, info)
            results[name].append(r)
        accs = [r.metric for r in results[name]]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(
            f"{name:44s} val acc {statistics.mean(accs):.4f} +- {sd:.4f} "
            f"({100 * statistics.mean(accs) / run.metric:5.1f}% of teacher)  "
            f"val loss {statistics.mean(r.val_loss for r in results[name]):.4f}  "
            f"{statistics.mean(r.seconds for r in results[name]):.0f}s/run",
            flush=True,
        )
    curves = {k: mean_curve([r.history for r in v], "val_accuracy") for k, v in results.items()}
    plot_validation_curves(
        curves, "val_accuracy", out / "curves.png", reference=run.metric,
        title=f"{shape.n_layer}x{shape.n_embd} student (MLP {shape.n_inner}) on {task.name}, mean of {args.seeds} seed(s)",
    )  # fmt: skip
    return {
        "teacher": {
            "params": run.total,
            "val_accuracy": run.metric,
            "val_loss": run.val_loss,
            "steps": args.teacher_steps,
        },  # fmt: skip
        "student_shape": dataclasses.asdict(shape),
        "student_params": results[next(iter(results))][0].student_params,
        "runs": {
            k: {
                "val_accuracy": [r.metric for r in v],
                "val_loss": [r.val_loss for r in v],
                "seconds": [r.seconds for r in v],
                "curve": curves[k],
            }
            for k, v in results.items()
        },
        "_models": (teacher, results),
    }


# ------------------------------------------------------------------ 3. language modelling
def lm_part(args, base, enc, out: pathlib.Path) -> dict:
    lm = lm_objective(enc, batch_size=16, seq_len=64, seed=0, eval_batches=8)
    shape = student_shape(base)
    student, info = make_student(base, "slice", shape, lm_calibration(lm.batch_fn, 8))
    steps = args.lm_steps
    train = train_config(steps=steps, eval_every=max(1, steps // 8), progress=False)
    cfg = DistillConfig(temperature=1.0, train=train)
    r = dataclasses.replace
    prompts = torch.stack([lm.batch_fn(900 + i, 0)["idx"][0, :16] for i in range(256)])
    seqs = teacher_sequences(base, prompts, 48, temperature=0.0)
    runs = {
        "labels only (no distillation)": (r(cfg, alpha=0.0), None),
        "forward KD": (r(cfg, alpha=1.0), None),
        "forward KD + labels (alpha 0.5)": (r(cfg, alpha=0.5), None),
        "on-policy reverse KL (MiniLLM/GKD)": (r(cfg, alpha=1.0, divergence="reverse"), "policy"),
        "on-policy JSD(0.5) (GKD)": (r(cfg, alpha=1.0, divergence="jsd"), "policy"),
        "sequence-level KD (Kim and Rush)": (r(cfg, alpha=0.0), "sequences"),
    }
    results = {}
    print(f"\nlanguage model: teacher val loss {lm.eval_fn(base)['val_loss']:.4f}; sliced student ({student.num_params():,} params) before training {lm.eval_fn(student)['val_loss']:.4f}", flush=True)  # fmt: skip
    for name, (config, kind) in runs.items():
        s = copy.deepcopy(student)
        batches = lm.batch_fn
        if kind == "policy":
            batches = OnPolicyBatches(s, lm.batch_fn, prompt_len=16, fraction=0.5, seed=0)
        elif kind == "sequences":
            batches = sequence_batches(seqs, prompt_len=16, batch_size=16)
        res = distill(base, s, dataclasses.replace(lm, batch_fn=batches), config, info)
        results[name] = res
        print(f"{name:40s} val loss {res.val_loss:.4f}  {res.seconds:.0f}s", flush=True)
    plot_validation_curves(
        {k: v.history for k, v in results.items()}, "val_loss", out / "lm_curves.png",
        title=f"pydocs: {shape.n_layer}x{shape.n_embd} student of the base",
    )  # fmt: skip
    return {
        "teacher_val_loss": lm.eval_fn(base)["val_loss"],
        "student_params": student.num_params(),
        "teacher_params": base.num_params(),
        "runs": {
            k: {"val_loss": v.val_loss, "seconds": v.seconds, "history": v.history}
            for k, v in results.items()
        },  # fmt: skip
        "_student": results["forward KD"].student,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["speed", "task", "lm"], default=None)
    p.add_argument("--teacher-steps", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lm-steps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--runs", default=None, help="comma-separated words selecting task runs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default="runs/bench_distill")
    args = p.parse_args(argv)
    q = args.quick
    args.teacher_steps = args.teacher_steps or (60 if q else 240)
    args.steps = args.steps or (60 if q else 240)
    args.lm_steps = args.lm_steps or (40 if q else 300)
    args.seeds = args.seeds or (1 if q else 3)
    args.repeats = args.repeats or (5 if q else 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    print(json.dumps(machine))
    base, enc = load_base(fast=False)
    result: dict = {"machine": machine, "args": vars(args)}
    t0 = time.perf_counter()
    if args.only in (None, "task", "speed"):
        if args.only == "speed":
            args.runs = "sliced + KD"
            args.seeds, args.steps = 1, min(args.steps, 20)
        task = task_part(args, base, enc, out)
        teacher, task_results = task.pop("_models")
        if args.only != "speed":
            result["task"] = task
    if args.only in (None, "lm", "speed"):
        if args.only == "speed":
            args.lm_steps = 2
        lm = lm_part(args, base, enc, out)
        lm_student = lm.pop("_student")
        if args.only != "speed":
            result["lm"] = lm
    if args.only in (None, "speed"):
        name = "sliced + KD" if "sliced + KD" in task_results else next(iter(task_results))
        student = task_results[name][0].student
        batch = task_objective(get_task(DEFAULT_TASK), enc).batch_fn(0, 0)
        lm_batch = lm_objective(enc, batch_size=16, seq_len=128).batch_fn(0, 0)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        result["speed"] = speed_part(teacher, student, base, lm_student, batch, lm_batch, devices, args.repeats)  # fmt: skip
    result["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {out / 'results.json'}; plots: {out / 'curves.png'}, {out / 'lm_curves.png'} ({result['seconds']:.0f}s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
