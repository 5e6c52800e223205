"""Fine-tune a base model on a task: the glue between tasks, methods and the trainer.

    model     = a copy of the base (+ a classification head for labelled tasks)
    head      = where that head starts: the label words' output embeddings, or (head=
                "probe", LP-FT: Kumar et al. 2022) the linear probe fitted to convergence
                on the prepared model's features, so the gradient steps start from the
                probe's optimum and what they add is what training inside the network adds
    method    = which parameters train, and how (minift.peft.methods: full, lora, ...)
    objective = the task's batches, loss and evaluation (minift.train.objectives)
    loop      = minift.train.Trainer, configured by config.train
    report    = the validation metric, trainable parameters, time and the curves

Saving, loading and evaluating the result: minift.recipes.saved.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from minift.data.tasks import Task
from minift.errors import UserError
from minift.model import GPT
from minift.model.heads import SequenceClassifier
from minift.model.params import count_parameters, find_gpt
from minift.peft.methods import METHODS, Preparation, RunContext, get_method, register_method
from minift.peft.probe import fit_probe_head
from minift.train import TrainConfig, Trainer
from minift.train import distributed as D
from minift.train.cost import CostMeter
from minift.train.flops import added_trainable, flops_per_step
from minift.train.fsdp import gather_full_model, shard_model
from minift.train.objectives import (
    OBJECTIVES,
    classification_inputs,
    task_objective,
    verbalizer_ids,
)
from minift.utils import peak_memory_mb, reset_peak_memory

# Also importable from here (their homes are peft.methods, train.objectives, model.params):
__all__ = [
    "METHODS", "FinetuneConfig", "FinetuneResult", "Preparation", "build_model",
    "classification_inputs", "count_parameters", "finetune", "register_method", "train_config",
]  # fmt: skip


def train_config(**changes: Any) -> TrainConfig:
    """The TrainConfig of a fine-tuning run: 60 steps, 5 warm-up steps, no weight decay, an
    evaluation every 20 steps and one before the first (curves start from the common
    point); lr=None takes the method's default learning rate."""
    defaults = dict(steps=60, lr=None, warmup_steps=5, weight_decay=0.0, eval_every=20)
    return TrainConfig(**{**defaults, "eval_at_start": True, **changes})


HEAD_STARTS = ("words", "probe")


@dataclass
class FinetuneConfig:
    method: str = "full"
    options: dict[str, Any] = field(default_factory=dict)  # the method's options (r, ...)
    batch_size: int = 32
    max_len: int = 24  # tokens per example (classification: text start + template)
    pooling: str = "last"  # the classification head's pooling: "last" or "mean"
    # Where the classification head starts: "words", the label words' output embeddings;
    # "probe", the converged linear probe on the starting model's features (LP-FT).
    head: str = "words"
    balance: str = "none"  # a remedy for skewed classes (minift.recipes.balance)
    adversarial: Any = None  # a minift.robust.AdversarialConfig: adversarial training
    train: TrainConfig = field(default_factory=train_config)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_len < 1:
            raise ValueError(
                f"batch_size and max_len must be >= 1, got {self.batch_size} and {self.max_len}"
            )
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {self.pooling!r}")
        if self.head not in HEAD_STARTS:
            raise ValueError(f"head must be one of {HEAD_STARTS}, got {self.head!r}")


@dataclass
class FinetuneResult:
    method: str
    task: str
    metric_name: str
    metric: float
    val_loss: float
    trainable: int
    total: int
    seconds: float
    peak_mb: float
    history: list[dict]
    options: dict[str, Any] = field(default_factory=dict)  # the method's options, all of them
    val_scores: list[float] | None = None  # the metric per validation example, at the end
    fit: dict | None = None  # what a closed-form fit chose (the probe's l2, ...)
    max_len: int = 24  # the tokens per example it trained with
    train: TrainConfig | None = None  # as the trainer ran it (the method's lr filled in)
    model: torch.nn.Module | None = None
    cost: dict[str, Any] | None = None  # minift.train.cost.CostReport of the gradient steps
    head_fit: dict | None = None  # head="probe": what the starting probe chose (its l2, ...)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / max(1, self.total)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("model", "history", "train", "val_scores"):
            d.pop(key)
        d["trainable_percent"] = self.trainable_percent
        return d


def build_model(base: GPT, task: Task, enc, config: FinetuneConfig) -> torch.nn.Module:
    """A copy of the base; for a classification task, inside a SequenceClassifier whose
    head starts from the label words' output embeddings (when the task has them)."""
    model = copy.deepcopy(base)
    if task.kind == "classification":
        torch.manual_seed(config.train.seed)
        model = SequenceClassifier(model, task.num_labels, pooling=config.pooling)
        ids = verbalizer_ids(task, enc)
        if ids is not None and len(set(ids)) == len(ids):
            model.init_head(ids)
    return model


def finetune(
    task: Task,
    base: GPT,
    enc,
    config: FinetuneConfig | None = None,
    device: str | torch.device = "cpu",
    keep_model: bool = False,
    resume: bool = False,
    fsdp: bool = False,
) -> FinetuneResult:
    """Fine-tune a copy of ``base`` on ``task`` with ``config.method``; base is unchanged.
    resume=True continues the run in ``config.train.out_dir`` from its newest checkpoint.
    fsdp=True (every process of a torchrun launch calls it, minift.train.fsdp) shards the
    model per block over the processes; only rank 0's result holds the (gathered) model."""
    config = config or FinetuneConfig()
    method = get_method(config.method)
    options = method.make_config(config.options)  # a bad option fails before any work
    if task.kind not in OBJECTIVES:
        raise ValueError(
            f"a {task.kind!r} task cannot be fine-tuned here; kinds: {sorted(OBJECTIVES)}"
        )
    lr = method.lr if config.train.lr is None else config.train.lr
    run = RunContext(lr, config.train.steps, config.train.weight_decay, config.train.seed)

    if config.head == "probe" and task.kind != "classification":
        raise ValueError(f"head='probe' starts a classifier's head from a linear probe; a {task.kind!r} task has no head")  # fmt: skip
    if config.head == "probe" and fsdp:
        raise UserError("--fsdp: head='probe' fits the head on the whole model's features before training; run it in one process")  # fmt: skip
    model = build_model(base, task, enc, config).to("cpu" if fsdp else device)
    prepared = method.prepare(model, options, run)
    if not isinstance(prepared, Preparation):  # None, or the model it changed in place
        prepared = Preparation()
    twin = None  # under FSDP, rank 0's unsharded copy that receives the trained weights
    if fsdp:
        if prepared != Preparation():  # its groups and callbacks hold the unsharded parameters
            raise UserError(f"--fsdp: method {config.method!r} sets its own parameter groups, schedule or closed-form fit; use full, lora or another method that only chooses what trains")  # fmt: skip
        twin = copy.deepcopy(model) if keep_model and D.current().is_main else None
        shard_model(model, device)  # each process keeps 1/W of every parameter on its device
    virtual = getattr(find_gpt(model).soft_prompt, "num_tokens", 0)
    max_len = min(config.max_len, base.config.block_size - virtual)  # soft prompts take room
    objective = task_objective(task, enc, max_len, config.batch_size, config.train.seed)
    labelled_rows = objective.train_set  # the task's own rows, whatever balancing adds below
    lp_ft = config.head == "probe" and prepared.fit is None  # the probe method fits it anyway
    if config.balance != "none":
        from minift.recipes.balance import balance_objective

        objective, prepared.fit = balance_objective(
            config.balance, objective, task, enc, max_len, config.batch_size,
            config.train.seed, prepared.fit, config.options,
        )  # fmt: skip
    if config.adversarial is not None:
        from minift.robust import adversarial_objective

        if prepared.fit is not None:
            raise UserError(f"method {config.method!r} is fitted in closed form, not by a loss: adversarial training needs a method that trains by gradient steps")  # fmt: skip

        objective = adversarial_objective(objective, config.adversarial, task.kind)
    train = replace(
        config.train, lr=lr, monitor=objective.monitor, mode=objective.mode,
        desc=f"{config.method} on {task.name}",
    )  # fmt: skip

    trainable, total = count_parameters(model)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    head_fit = fit_probe_head(model, labelled_rows()) if lp_ft else None  # in the run's time
    fit, before = None, []
    if prepared.fit is not None:
        if objective.train_set is None:
            raise ValueError(
                f"method {config.method!r} is fitted on labelled rows; a {task.kind!r} task has none"
            )
        if train.eval_at_start:
            with torch.no_grad():
                before = [{"step": 0, **objective.eval_fn(model.eval())}]
        fit = prepared.fit(model.train(), objective.train_set())
        # At its optimum, no optimizer steps follow; the fit is logged as step 1.
        train = replace(train, steps=0, warmup_steps=0, eval_at_start=True)
    meter = cost_meter(model, config.batch_size * train.grad_accum, max_len, train.steps, device)
    trainer = Trainer(
        model, train, objective.batch_fn, objective.loss_fn, objective.eval_fn,
        param_groups=prepared.param_groups, on_step=_chain(prepared.on_step, meter),
    )  # fmt: skip
    if meter is not None:
        meter.start()
    result = trainer.fit(resume=resume)
    if fit is not None:
        result.history = before + [{**row, "step": 1} for row in result.history]
    final = result.history[-1]
    scores = objective.scores_fn(model) if objective.scores_fn is not None else None
    kept = gather_full_model(model, twin) if fsdp and keep_model else model
    return FinetuneResult(
        method=config.method,
        task=task.name,
        metric_name=objective.monitor,
        metric=final[objective.monitor],
        val_loss=final["val_loss"],
        trainable=trainable,
        total=total,
        seconds=time.perf_counter() - t0,
        peak_mb=peak_memory_mb(device),
        history=result.history,
        options=asdict(options),
        val_scores=scores,
        fit=fit,
        max_len=max_len,
        train=train,
        model=kept.eval() if keep_model and kept is not None else None,
        cost=meter.report().as_dict() if meter is not None and meter.steps else None,
        head_fit=head_fit,
    )


def cost_meter(model, batch_size: int, max_len: int, steps: int, device) -> CostMeter | None:
    """A CostMeter for the run's gradient steps (None for a fit in closed form): FLOPs per
    step from the architecture with the trainable parameters as they are at the start
    (layer-wise unfreezing adds some later), tokens counted at max_len per row."""
    if steps == 0:
        return None
    gpt = find_gpt(model)
    per_step = flops_per_step(gpt.config, batch_size, max_len, trainable=added_trainable(model))
    return CostMeter(per_step, batch_size * max_len, device=device)


def _chain(*callbacks):
    callbacks = [c for c in callbacks if c is not None]
    if not callbacks:
        return None

    def on_step(done, trainer):
        for c in callbacks:
            c(done, trainer)

    return on_step
