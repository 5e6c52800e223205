"""A hybrid pipeline: strategies chained, measured against each ingredient alone.

The guide's last strategy combines the others. Here the chain is:

1. a student initialised from the teacher's own layers (every k-th block: DistilBERT's
   initialisation, :func:`minift.distill.students.every_kth_student`);
2. trained with LoRA adapters only (Hu et al. 2021), base weights frozen;
3. on the teacher's soft targets (Hinton et al. 2015, alpha = 0.5, T = 2) with the labels;
4. then merged (W <- W + s B A), so it serves at the plain student's cost.

Each ingredient alone runs at equal compute (the same student, the same steps and batch):
the student fully fine-tuned on labels, fully fine-tuned on soft targets, and LoRA on
labels. The table says what the combination buys in metric, trainable parameters and
time. (Gradual unfreezing, the guide's other example, is not part of this chain.)
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch

from minift.distill.config import DistillConfig, train_config
from minift.distill.loop import distill
from minift.distill.objectives import task_objective
from minift.distill.students import every_kth_student
from minift.peft import LoRAConfig, apply_lora
from minift.peft.lora import merge_and_unload
from minift.recipes.distill import finetune_teacher
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task

ROWS = ("full, labels", "full, soft targets", "LoRA, labels", "hybrid: LoRA, soft targets, merged")


@dataclass
class HybridJob:
    task: str = "stdlib-package"
    teacher_steps: int = 160
    steps: int = 120  # every row: the same student, steps and batch
    batch_size: int = 32
    k: int = 2  # the student keeps every k-th teacher block
    rank: int = 8
    full_lr: float = 1e-3  # distillation's default rate
    lora_lr: float = 5e-3  # LoRA's tuned rate on this task (lesson 10)
    seed: int = 0


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_hybrid(job: HybridJob, base=None, enc=None) -> dict:
    """{row: {"metric", "trainable", "seconds"}} plus the teacher's metric; see the module."""
    if base is None:
        base, enc = load_base()
    task = get_task(job.task, seed=job.seed)
    teacher, teacher_run = finetune_teacher(task, base, enc, job.teacher_steps, job.seed)
    objective = task_objective(task, enc, job.batch_size, seed=job.seed)
    student = every_kth_student(teacher, job.k)
    kd = DistillConfig(alpha=0.5, temperature=2.0, train=train_config(steps=job.steps, seed=job.seed, eval_every=0, progress=False))  # fmt: skip
    labels_only = replace(kd, alpha=0.0)
    lora = LoRAConfig(r=job.rank, alpha=2 * job.rank, target_modules=["c_attn", "c_fc"])
    out = {"teacher": {"metric": teacher_run.metric, "trainable": trainable(teacher)}}
    for row in ROWS:
        model = copy.deepcopy(student).train()
        lr = job.full_lr
        if "LoRA" in row:
            torch.manual_seed(job.seed)
            model, lr = apply_lora(model, lora), job.lora_lr
        config = kd if "soft" in row else labels_only
        config = replace(config, train=replace(config.train, lr=lr, desc=row))
        n_train = trainable(model)
        t0 = time.perf_counter()
        result = distill(teacher, model, objective, config)
        seconds = time.perf_counter() - t0
        metric = result.metric
        if "merged" in row:
            merged = merge_and_unload(copy.deepcopy(result.student)).eval()
            metric = objective.eval_fn(merged)[result.metric_name]
        out[row] = {"metric": metric, "trainable": n_train, "seconds": seconds, "lr": lr,
                    "before_merge": result.metric}  # fmt: skip
    return out


def format_table(rows: dict) -> str:
    lines = [f"{'run':38s} {'metric':>7s} {'trainable':>10s} {'seconds':>8s}"]
    for name, r in rows.items():
        secs = f"{r['seconds']:8.1f}" if "seconds" in r else f"{'':8s}"
        lines.append(f"{name:38s} {r['metric']:7.3f} {r['trainable']:10,d} {secs}")
    return "\n".join(lines)
