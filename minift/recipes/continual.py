"""Continual adaptation: tasks learned one after another, and what is forgotten.

    for i, task in enumerate(stream):
        train on task i (plus the method's remedy: a penalty, or replayed rows)
        R[i][j] = the metric on every task j of the stream     (the accuracy matrix)
    ACC, BWT, forgetting = minift.multitask.metrics(R)

Methods: naive (sequential fine-tuning, the forgetting baseline), replay (a reservoir
buffer of earlier rows mixed into each batch), ewc (diagonal empirical Fisher), l2sp (L2
towards the pretrained weights), lora-per-task (one LoRA adapter and head per task on the
frozen base: nothing is forgotten, but the task must be known at test time) and joint
(all tasks at once for as many steps in all: the upper bound, no stream).

`minift continual --tasks a,b,c --method ewc`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import Task
from minift.model import GPT
from minift.multitask import EWC, L2SP, ReservoirBuffer, fisher_diagonal, stream_summary
from minift.recipes.finetune import FinetuneConfig, finetune
from minift.recipes.multitask import (
    MultitaskConfig,
    build_multitask_model,
    load_tasks,
    run_multitask,
    task_objectives,
    train_config,
)
from minift.seeding import batch_seed
from minift.tokenizer import pad_id
from minift.train import TrainConfig, Trainer
from minift.train.objectives import classification_inputs

CONTINUAL_METHODS = ("naive", "replay", "ewc", "l2sp", "lora-per-task", "joint")
DEFAULT_STREAM = ("doc-kind", "stdlib-package", "doc-returns")


@dataclass
class ContinualConfig:
    method: str = "naive"
    ewc_lambda: float = 1000.0  # EWC's strength (the Fisher entries are small)
    fisher_examples: int = 64  # rows whose gradients estimate each task's Fisher
    l2sp_alpha: float = 0.05
    replay_size: int = 256  # reservoir capacity (rows of all earlier tasks)
    replay_batch: int = 16  # replayed rows added to each batch
    batch_size: int = 32
    max_len: int = 24
    train: TrainConfig = field(default_factory=lambda: train_config(steps=60))  # per task

    def __post_init__(self) -> None:
        if self.method not in CONTINUAL_METHODS:
            raise ValueError(
                f"unknown continual method {self.method!r}; choose one of "
                f"{', '.join(CONTINUAL_METHODS)}"
            )


@dataclass
class ContinualResult:
    method: str
    tasks: list[str]
    R: list[list[float]]  # R[i][j]: the metric on task j after learning task i
    summary: dict[str, float]  # acc, bwt, forgetting
    final_scores: dict[str, list[float]]  # per validation example at the end of the stream
    seconds: float


def _check_stream(tasks: list[Task]) -> None:
    bad = [f"{t.name} ({t.kind})" for t in tasks if t.kind != "classification"]
    if bad:
        raise ValueError(
            f"a continual stream takes classification tasks (one accuracy matrix); got {', '.join(bad)}"
        )


def run_continual(
    tasks: list[Task], base: GPT, enc, config: ContinualConfig | None = None, device="cpu"
) -> ContinualResult:
    config = config or ContinualConfig()
    _check_stream(tasks)
    t0 = time.perf_counter()
    if config.method == "joint":
        R, scores = _joint(tasks, base, enc, config, device)
    elif config.method == "lora-per-task":
        R, scores = _lora_per_task(tasks, base, enc, config, device)
    else:
        R, scores = _sequential(tasks, base, enc, config, device)
    return ContinualResult(
        config.method, [t.name for t in tasks], R, stream_summary(R), scores,
        time.perf_counter() - t0,
    )  # fmt: skip


def _sequential(tasks, base, enc, config: ContinualConfig, device):
    """naive, replay, ewc, l2sp: one model, one head per task, the tasks in order."""
    mt_config = MultitaskConfig(batch_size=config.batch_size, max_len=config.max_len, train=config.train)  # fmt: skip
    objectives = task_objectives(tasks, enc, mt_config)
    model = build_multitask_model(base, tasks, enc, seed=config.train.seed).to(device)
    ewc = EWC(config.ewc_lambda) if config.method == "ewc" else None
    l2sp = L2SP(model, config.l2sp_alpha, prefix="backbone.") if config.method == "l2sp" else None
    replay = _Replay(tasks, enc, config) if config.method == "replay" else None
    R: list[list[float]] = []
    for i, task in enumerate(tasks):
        obj = objectives[task.name]

        def batch_fn(step: int, micro: int, obj=obj, i=i):
            extra = replay.batches(i, step, micro) if replay is not None else {}
            return obj.batch_fn(step, micro), extra

        def loss_fn(m, batch, name=task.name, obj=obj):
            new, replayed = batch
            loss, _ = obj.loss_fn(m.view(name), new)
            for old, (b, share) in replayed.items():  # each old task through its own head
                loss = loss + share * objectives[old].loss_fn(m.view(old), b)[0]
            if ewc is not None and ewc.anchors:
                loss = loss + ewc.penalty(m)
            if l2sp is not None:
                loss = loss + l2sp.penalty(m)
            return loss, {}

        train = replace(config.train, desc=f"{config.method}: {task.name}", eval_every=0)
        Trainer(model, train, batch_fn, loss_fn).fit()
        model.eval()
        with torch.no_grad():
            R.append(
                [objectives[t.name].eval_fn(model.view(t.name))["val_accuracy"] for t in tasks]
            )
        if ewc is not None and i < len(tasks) - 1:
            ewc.consolidate(model, _fisher(model, task, objectives[task.name], enc, config))
        if replay is not None:
            replay.remember(i, task)
    scores = {t.name: objectives[t.name].scores_fn(model.view(t.name)) for t in tasks}
    return R, scores


class _Replay:
    """Experience replay: the rows of finished tasks stream through a reservoir buffer;
    every batch of the current task gets ``replay_batch`` of them, drawn by a generator
    seeded from (seed, step), so a run is reproducible."""

    def __init__(self, tasks: list[Task], enc, config: ContinualConfig) -> None:
        self.config, self.pad = config, pad_id(enc)
        self.buffer = ReservoirBuffer(config.replay_size, seed=config.train.seed)
        self.rows = {
            t.name: (
                classification_inputs(t, enc, t.train, config.max_len),
                [int(r["label"]) for r in t.train],
            )
            for t in tasks
        }

    def remember(self, i: int, task: Task) -> None:
        order = list(range(len(task.train)))
        random.Random(self.config.train.seed * 7_919 + i).shuffle(order)  # the stream's order
        self.buffer.extend((task.name, k) for k in order)

    def batches(self, i: int, step: int, micro: int) -> dict:
        if not len(self.buffer):
            return {}
        rng = random.Random(batch_seed(self.config.train.seed, step, micro, stream=104_729 + i))
        by_task: dict[str, list[int]] = {}
        for name, k in self.buffer.sample(self.config.replay_batch, rng):
            by_task.setdefault(name, []).append(k)
        out = {}
        for name, ks in sorted(by_task.items()):
            ids, labels = self.rows[name]
            b = classification_batch(
                [ids[k] for k in ks], [labels[k] for k in ks], self.pad, self.config.max_len
            )
            # weighted by its share of the replayed rows, so the replay term is one mean loss
            out[name] = (b, len(ks) / self.config.replay_batch)
        return out


def _fisher(model, task: Task, obj, enc, config: ContinualConfig) -> dict[str, torch.Tensor]:
    """The empirical Fisher of ``task`` at the weights just learned, from
    ``fisher_examples`` training rows taken one at a time."""
    ids = classification_inputs(task, enc, task.train, config.max_len)
    pad = pad_id(enc)
    device = next(model.parameters()).device
    n = min(config.fisher_examples, len(ids))
    order = random.Random(config.train.seed).sample(range(len(ids)), n)
    examples = [
        {
            k: v.to(device)
            for k, v in classification_batch(
                [ids[k]], [int(task.train[k]["label"])], pad, config.max_len
            ).items()
        }
        for k in order
    ]
    return fisher_diagonal(model, lambda m, b: obj.loss_fn(m.view(task.name), b)[0], examples)


def _lora_per_task(tasks, base, enc, config: ContinualConfig, device):
    """One LoRA adapter (and head) per task on the frozen base: task j is always scored
    with its own adapter, trained (j <= i) or not yet (j > i: steps=0, the base with the
    label-word head)."""

    def run(task, steps):
        ft = FinetuneConfig(
            method="lora", batch_size=config.batch_size, max_len=config.max_len,
            train=replace(config.train, steps=steps, lr=None, eval_every=0, eval_at_start=steps == 0),
        )  # fmt: skip
        r = finetune(task, base, enc, ft, device=device)
        return r.metric, r.val_scores

    trained = [run(t, config.train.steps) for t in tasks]
    untrained = [run(t, 0) for t in tasks]
    R = [
        [trained[j][0] if j <= i else untrained[j][0] for j in range(len(tasks))]
        for i in range(len(tasks))
    ]
    return R, {t.name: trained[j][1] for j, t in enumerate(tasks)}


def _joint(tasks, base, enc, config: ContinualConfig, device):
    """All tasks at once, equal mixing, as many steps as the whole stream: the upper
    bound. It has no stream, so every row of R is its final accuracies."""
    mt = MultitaskConfig(
        sampling="equal", batch_size=config.batch_size, max_len=config.max_len,
        train=replace(config.train, steps=config.train.steps * len(tasks), eval_every=0),
    )  # fmt: skip
    r = run_multitask(tasks, base, enc, mt, device=device)
    row = [r.metrics[t.name] for t in tasks]
    return [list(row) for _ in tasks], r.val_scores


def continual_from_names(names, base, enc, config: ContinualConfig | None = None, seed: int = 0):
    return run_continual(load_tasks(names, seed=seed), base, enc, config)
