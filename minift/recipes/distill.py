"""`minift distill`: distil a teacher into a smaller, faster student, and report both.

    teacher = the base fully fine-tuned on the task (a classifier), or the base itself
              for ``pydocs`` (language modelling: TinyBERT's general distillation)
    student = cut from the teacher within a parameter budget (minift.distill.shape)
    runs    = the student trained against the teacher (minift.distill.loop), and with
              ``baseline`` the same initial student on the labels alone
    report  = both models' parameters, tokens per second and metric, the validation
              curves (report.json, curves.png)

    run_distill(DistillJob(task="stdlib-package", baseline=True, transfer=32))

``finetune_teacher`` and ``task_calibration`` are also what lesson 15 and
scripts/bench_distill.py build their teachers and slicing batches with.
"""

from __future__ import annotations

import copy
import pathlib
from dataclasses import dataclass, field, replace

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import DEFAULT_TASK, Task
from minift.distill.config import DistillConfig, train_config
from minift.distill.loop import DistillResult, distill
from minift.distill.objectives import (
    Objective,
    lm_objective,
    pydocs_summaries,
    task_objective,
    transfer_objective,
)
from minift.distill.onpolicy import OnPolicyBatches
from minift.distill.report import format_speed_table, plot_validation_curves, speed_table
from minift.distill.shape import INITS, StudentShape, lm_calibration, make_student, student_shape
from minift.io import write_json
from minift.model import GPT
from minift.model.heads import SequenceClassifier
from minift.recipes.cards import distill_card
from minift.recipes.finetune import (
    FinetuneConfig,
    FinetuneResult,
    classification_inputs,
    finetune,
)
from minift.recipes.finetune import train_config as finetune_train_config
from minift.recipes.model_card import write_card
from minift.recipes.pretrain import load_base
from minift.recipes.saved import base_reference, save_finetuned
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.utils import fast_mode, output_dir


@dataclass
class DistillJob:
    task: str = DEFAULT_TASK  # a task name, a .jsonl path, or "pydocs" (language modelling)
    teacher_steps: int = 240  # full fine-tuning of the teacher on the task
    init: str = "slice"  # how the student starts: one of INITS
    budget: float = 0.25  # student parameters / teacher parameters
    layers: int | None = None  # student blocks (default: half the teacher's)
    heads: int | None = None  # student heads (default: half the teacher's)
    batch_size: int = 32  # rows per step (pydocs: half as many windows of 64 tokens)
    transfer: int = 0  # unlabelled texts added to each batch (a classification task)
    on_policy: float = 0.0  # fraction of each batch the student samples itself (pydocs)
    prompt_len: int = 16  # prompt tokens of those samples
    baseline: bool = False  # also train the student on the labels alone
    speed_repeats: int = 10  # timed passes of the speed table
    out: str | None = None  # report folder (default runs/distill)
    save: str | None = None  # save the student's backbone here
    distill: DistillConfig = field(
        default_factory=lambda: DistillConfig(train=train_config(steps=240, eval_every=40))
    )

    def __post_init__(self) -> None:
        lm = self.task == "pydocs"
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {self.budget}")
        small = {k: getattr(self, k) for k in ("teacher_steps", "batch_size", "prompt_len")}
        small["steps"] = self.distill.train.steps
        small["speed_repeats"] = self.speed_repeats
        if min(small.values()) < 1:
            raise ValueError(f"these must be >= 1: {small}")
        if self.transfer < 0 or not 0 <= self.on_policy <= 1:
            raise ValueError("transfer must be >= 0 and on_policy in [0, 1]")
        if self.transfer and lm:
            raise ValueError(
                "transfer adds unlabelled texts to a classification task, not to pydocs"
            )
        if self.on_policy and not lm:
            raise ValueError("on_policy samples text from the student: use it with task='pydocs'")


def finetune_teacher(task: Task, base: GPT, enc, steps: int, seed: int = 0):
    """The teacher: the base fully fine-tuned on the task (a SequenceClassifier for a
    classification task), and its FinetuneResult."""
    train = finetune_train_config(steps=steps, seed=seed, progress=False)
    result = finetune(task, base, enc, FinetuneConfig(method="full", train=train), keep_model=True)
    return result.model.eval(), result


def task_calibration(task: Task, enc, max_len: int = 24, batch_size: int = 64) -> list:
    """The task's training texts as (idx, attention_mask) batches, for the slicing."""
    ids = classification_inputs(task, enc, task.train, max_len)
    out = []
    for i in range(0, len(ids), batch_size):
        b = classification_batch(ids[i : i + batch_size], None, pad_id(enc), max_len)
        out.append((b["idx"], b["attention_mask"]))
    return out


def run_distill(job: DistillJob) -> dict:
    """Run the job; return its report (also written to ``job.out``/report.json)."""
    out = pathlib.Path(job.out) if job.out else output_dir("distill")
    out.mkdir(parents=True, exist_ok=True)
    base, enc = load_base()
    teacher, objective, labelled, calibration = teacher_and_objectives(job, base, enc)
    shape = student_shape(teacher, job.budget, job.layers, job.heads)
    student, info = make_student(teacher, job.init, shape, calibration, job.distill.train.seed)
    print(f"student: {shape}")
    runs = train_students(job, teacher, student, info, objective, labelled)
    report = write_report(job, teacher, shape, runs, objective, out)
    if job.save:
        save_student(job, runs["distilled"], report, base, enc)
    return report


def save_student(job: DistillJob, run: DistillResult, report: dict, base: GPT, enc) -> None:
    """A classifier student is saved as `minift finetune --save` saves a fully trained
    model (backbone, head, tokenizer, task), so `minift eval --model DIR` measures it
    again; a language-model student (pydocs) as a minift model folder."""
    task, reference = card_task(job), base_reference(None, base)

    def card(meta=None):
        return distill_card(job, report, task, reference, fast_mode())

    student = run.student
    if isinstance(student, SequenceClassifier):
        trainable = sum(p.numel() for p in student.parameters())
        result = FinetuneResult(
            method="full", task=task.name, metric_name=run.metric_name, metric=run.metric,
            val_loss=run.val_loss, trainable=trainable, total=trainable, seconds=run.seconds,
            peak_mb=0.0, history=run.history, train=job.distill.train, model=student,
        )  # fmt: skip
        save_finetuned(job.save, result, task, enc, reference, task_seed=job.distill.train.seed,
                       card_fn=card)  # fmt: skip
        what = "student (backbone, head and tokenizer)"
    else:
        student.save(job.save)
        write_card(job.save, card())
        what = "student language model"
    write_json(pathlib.Path(job.save) / "distill.json", report["runs"]["distilled"])
    print(f"saved the {what} and its model card to {job.save}")


def card_task(job: DistillJob) -> Task | None:
    """The task the student learned, for its model card (None: pydocs)."""
    return None if job.task == "pydocs" else get_task(job.task, seed=job.distill.train.seed)


def teacher_and_objectives(job: DistillJob, base: GPT, enc):
    """(teacher, what the student trains on, what the baseline trains on: the labels
    alone, calibration batches for the slicing)."""
    seed = job.distill.train.seed
    if job.task == "pydocs":
        objective = lm_objective(enc, batch_size=max(1, job.batch_size // 2), seq_len=64, seed=seed)
        return base, objective, objective, lm_calibration(objective.batch_fn)
    task = get_task(job.task, seed=seed)
    if task.kind != "classification":
        raise ValueError(
            f"minift distill distils a classifier (a task of text + label rows) or the base "
            f"on pydocs (--task pydocs); {job.task} is a {task.kind} task"
        )
    print(task.summary())
    teacher, _ = finetune_teacher(task, base, enc, job.teacher_steps, seed)
    labelled = task_objective(task, enc, job.batch_size, seed=seed)
    calibration = task_calibration(task, enc)
    objective = labelled
    if job.transfer:  # Hinton et al.'s transfer set: texts only the teacher can label
        texts = pydocs_summaries({r["text"] for r in task.val + task.train})
        objective = transfer_objective(task, enc, texts, job.batch_size, job.transfer, seed=seed)
    return teacher, objective, labelled, calibration


def train_students(
    job: DistillJob, teacher, student, info, objective: Objective, labelled: Objective
) -> dict[str, DistillResult]:
    """The distilled run (in place on ``student``) and, with ``job.baseline``, the same
    initial student trained the same steps without a teacher."""
    config = replace(job.distill, train=replace(job.distill.train, desc=f"distill {job.task}"))
    untrained = copy.deepcopy(student)  # one initial student for every compared run
    if job.on_policy:
        batches = OnPolicyBatches(student, objective.batch_fn, job.prompt_len, job.on_policy)
        objective = replace(objective, batch_fn=batches)
    runs = {"distilled": distill(teacher, student, objective, config, info)}
    if job.baseline:
        plain = replace(
            config, alpha=0.0, hidden=0, cosine=0, attention=0, attention_kl=0, value_kl=0,
            train=replace(config.train, desc="baseline"),
        )  # fmt: skip
        runs["no distillation (baseline)"] = distill(teacher, untrained, labelled, plain)
    return runs


def speed_batch(objective: Objective) -> dict[str, torch.Tensor]:
    """One training batch as the models read it (without the transfer set's marks)."""
    batch = objective.batch_fn(0, 0)
    batch = batch if isinstance(batch, dict) else {"idx": batch[0], "targets": batch[1]}
    return {k: v for k, v in batch.items() if k != "unlabeled"}


def write_report(
    job: DistillJob,
    teacher,
    shape: StudentShape,
    runs: dict[str, DistillResult],
    objective: Objective,
    out: pathlib.Path,
) -> dict:
    """Print and write the comparison: sizes, speed, metrics and the curves."""
    teacher_metrics = objective.eval_fn(teacher)
    models = {"teacher": teacher, "student": runs["distilled"].student}
    speed = speed_table(models, speed_batch(objective), job.speed_repeats)
    print(format_speed_table(speed))
    metric = objective.monitor
    print(f"teacher {metric} = {teacher_metrics[metric]:.4f}")
    for name, r in runs.items():
        print(f"{name:28s} {metric} = {r.metric:.4f}  val_loss = {r.val_loss:.4f}")
    plot_validation_curves(
        {k: r.history for k, r in runs.items()},
        metric,
        out / "curves.png",
        title=f"student on {job.task}",
        reference=teacher_metrics[metric] if metric != "val_loss" else None,
    )
    report = {
        "task": job.task,
        "teacher": {
            "params": speed[0]["params"],
            "metrics": teacher_metrics,
            "finetune_steps": 0 if job.task == "pydocs" else job.teacher_steps,
        },
        "student": {"params": speed[1]["params"], "shape": shape.__dict__, "init": job.init},
        "speed": speed,
        "runs": {k: r.row() for k, r in runs.items()},
        "histories": {k: r.history for k, r in runs.items()},
    }
    write_json(out / "report.json", report)
    print(f"report: {out / 'report.json'}, curves: {out / 'curves.png'}")
    return report


__all__ = [
    "DistillJob",
    "finetune_teacher",
    "run_distill",
    "task_calibration",
    "teacher_and_objectives",
    "train_students",
]
