"""Multi-task fine-tuning: several tasks at once on one shared model.

    tasks     = names from the registry (minift.recipes.tasks), each with its objective
    model     = a copy of the base with one head per classification task and the LM head
                for generation ("heads"), or every task through the LM head ("instruction")
    sampler   = which task trains at each step (minift.multitask.sampling)
    weighting = each task's loss weight, fixed or learned (minift.multitask.weighting)
    loop      = the Trainer, one task's batch a step; evaluation of every task at the end

`minift multitask --tasks a,b,c --sampling temperature --temperature 2`.

AdapterFusion (Pfeiffer et al. 2021, ``run_adapter_fusion``): one adapter per source task,
each trained alone, then a fusion layer over them (minift.multitask.fusion) for a target.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from minift.data.tasks import Task
from minift.model import GPT
from minift.multitask import MultiTaskModel, TaskSampler, check_tasks, make_weighting
from minift.multitask.fusion import apply_adapter_fusion, fusion_regularization, fusion_weights
from minift.multitask.instruction import verbalized_objective
from minift.peft.adapters import AdapterConfig, apply_adapters
from minift.peft.core import adapter_layers
from minift.peft.methods import METHODS
from minift.recipes.finetune import FinetuneConfig, build_model, finetune
from minift.recipes.tasks import get_task
from minift.train import TrainConfig, Trainer
from minift.train.objectives import task_objective, verbalizer_ids

STYLES = ("heads", "instruction")
DEFAULT_TASKS = ("stdlib-package", "doc-kind", "doc-returns", "doc-argcount")


def train_config(**changes: Any) -> TrainConfig:
    """A multi-task run's defaults: 120 steps at full fine-tuning's registered rate, no
    weight decay, evaluation at the end only (every task's metric is one pass each)."""
    defaults = dict(steps=120, lr=METHODS["full"].lr, warmup_steps=5, weight_decay=0.0)
    return TrainConfig(**{**defaults, **changes})


@dataclass
class MultitaskConfig:
    sampling: str = "temperature"  # proportional | temperature | equal
    temperature: float = 2.0  # T of temperature sampling (1: proportional, large: equal)
    cap: float = math.inf  # K: a task counts as at most K examples when mixing
    weighting: str = "fixed"  # fixed | uncertainty (Kendall et al. 2018)
    weights: dict[str, float] = field(default_factory=dict)  # fixed weights (default 1)
    style: str = "heads"  # heads: one head per task | instruction: every task via the LM head
    batch_size: int = 32
    max_len: int = 24
    train: TrainConfig = field(default_factory=train_config)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; choose one of {', '.join(STYLES)}")


@dataclass
class MultitaskResult:
    tasks: list[str]
    metrics: dict[str, float]  # each task's validation metric at the end
    metric_names: dict[str, str]
    val_scores: dict[str, list[float]]  # per validation example, for paired comparisons
    rates: list[float]  # the sampler's long-run share of steps per task
    steps_per_task: list[int]  # what the run actually drew
    loss_weights: dict[str, float]
    seconds: float
    history: list[dict]
    model: torch.nn.Module | None = None

    @property
    def mean_metric(self) -> float:
        return sum(self.metrics.values()) / len(self.metrics)


def load_tasks(names: list[str] | tuple[str, ...] | str, seed: int = 0) -> list[Task]:
    """Tasks by name ("a,b,c" or a list); a name given twice is an error, not a silent merge."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise ValueError(f"task listed twice: {', '.join(twice)}; give each task once")
    return [get_task(n, seed=seed) for n in names]


def task_objectives(tasks: list[Task], enc, config: MultitaskConfig) -> dict:
    out = {}
    for t in tasks:
        build = (
            verbalized_objective
            if config.style == "instruction" and t.kind == "classification"
            else task_objective
        )
        out[t.name] = build(t, enc, config.max_len, config.batch_size, config.train.seed)
    return out


def build_multitask_model(base: GPT, tasks: list[Task], enc, style: str = "heads", seed: int = 0):
    """A copy of the base with a head per classification task (started from the label
    words' output embeddings), or, for the instruction style, the copy itself."""
    check_tasks(tasks)
    backbone = copy.deepcopy(base)
    torch.manual_seed(seed)
    if style == "instruction":
        return MultiTaskModel(backbone, [replace(t, kind="sft") for t in tasks])
    ids = {t.name: verbalizer_ids(t, enc) for t in tasks if t.kind == "classification"}
    return MultiTaskModel(backbone, tasks, label_token_ids={k: v for k, v in ids.items() if v})


def run_multitask(
    tasks: list[Task],
    base: GPT,
    enc,
    config: MultitaskConfig | None = None,
    device: str | torch.device = "cpu",
    keep_model: bool = False,
) -> MultitaskResult:
    """Train one copy of ``base`` on all ``tasks`` at once; base is unchanged."""
    config = config or MultitaskConfig()
    check_tasks(tasks)
    names = [t.name for t in tasks]
    sampler = TaskSampler(
        [len(t.train) for t in tasks], config.sampling, config.temperature, config.cap,
        seed=config.train.seed,
    )  # fmt: skip
    objectives = task_objectives(tasks, enc, config)
    model = build_multitask_model(base, tasks, enc, config.style, config.train.seed).to(device)
    model.add_module("weighting", make_weighting(config.weighting, names, config.weights))

    def batch_fn(step: int, micro: int):
        name = names[sampler.task_at(step)]
        return name, objectives[name].batch_fn(step, micro)

    def loss_fn(m, batch):
        name, inner = batch
        loss, _ = objectives[name].loss_fn(m.view(name), inner)
        return m.weighting(name, loss), {f"loss/{name}": loss.item()}

    def eval_fn(m) -> dict[str, float]:
        out = {}
        for name, obj in objectives.items():
            out.update({f"{name}/{k}": v for k, v in obj.eval_fn(m.view(name)).items()})
        out["val_mean"] = sum(out[f"{n}/{objectives[n].monitor}"] for n in names) / len(names)
        return out

    train = replace(config.train, monitor="val_mean", mode="max", desc="multitask")
    t0 = time.perf_counter()
    result = Trainer(model, train, batch_fn, loss_fn, eval_fn).fit()
    final = result.history[-1]
    model.eval()
    return MultitaskResult(
        tasks=names,
        metrics={n: final[f"{n}/{objectives[n].monitor}"] for n in names},
        metric_names={n: objectives[n].monitor for n in names},
        val_scores={n: objectives[n].scores_fn(model.view(n)) for n in names},
        rates=sampler.rates,
        steps_per_task=sampler.counts(train.steps),
        loss_weights=model.weighting.report(),
        seconds=time.perf_counter() - t0,
        history=result.history,
        model=model if keep_model else None,
    )


@dataclass
class FusionResult:
    sources: list[str]
    target: str
    metric_name: str
    metric: float  # the target's validation metric after the fusion stage
    source_metrics: dict[str, float]  # each source adapter's own metric on its task
    weights: dict[str, list[float]]  # per site, the mean attention over the source adapters
    trainable: int  # parameters of the fusion stage (fusion layers + head)
    value_distance: float  # sum over sites of ||I - W_V||^2 at the end (0 at the start)
    seconds: float
    history: list[dict]
    val_scores: list[float]  # the target's metric per validation example, at the end


def run_adapter_fusion(
    sources: list[Task],
    target: Task,
    base: GPT,
    enc,
    train: TrainConfig | None = None,
    source_train: TrainConfig | None = None,
    reduction_factor: int = 16,
    batch_size: int = 32,
    max_len: int = 24,
    fusion_reg: float = 0.0,
    device: str | torch.device = "cpu",
) -> FusionResult:
    """AdapterFusion: a "pfeiffer" adapter per source task on its own copy of ``base``
    (``source_train``), then, on a fresh copy with the target's head, those adapters frozen
    under their task names and a fusion layer over them trained with the head (``train``).
    ``base`` is unchanged; both stages default to the adapters' registered learning rate.
    ``fusion_reg`` > 0 adds fusion_reg * sum ||I - W_V||^2 to the loss (keeps the values
    near the adapters' own outputs, as adapter-transformers does)."""
    names = [t.name for t in sources]
    if not names:
        raise ValueError("AdapterFusion needs at least one source task")
    if fusion_reg < 0:
        raise ValueError(f"fusion_reg must be >= 0, got {fusion_reg}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"task listed twice: {', '.join(twice)}; give each task once")
    lr = METHODS["adapter"].lr
    train = train or train_config(steps=60, lr=lr)
    source_train = source_train or train_config(steps=60, lr=lr)
    t0 = time.perf_counter()

    trained, source_metrics = {}, {}
    for task in sources:
        options = dict(layout="pfeiffer", reduction_factor=reduction_factor, adapter_name=task.name)
        ft = FinetuneConfig(
            method="adapter", options=options, batch_size=batch_size, max_len=max_len,
            train=replace(source_train, eval_every=0, eval_at_start=False),
        )  # fmt: skip
        r = finetune(task, base, enc, ft, device=device, keep_model=True)
        trained[task.name] = [layer.adapter for _, layer in adapter_layers(r.model, task.name)]
        source_metrics[task.name] = r.metric

    ft = FinetuneConfig(batch_size=batch_size, max_len=max_len, train=train)
    model = build_model(base, target, enc, ft).to(device)
    for name, adapters in trained.items():
        apply_adapters(model, AdapterConfig("pfeiffer", reduction_factor, adapter_name=name))
        for src, (_, layer) in zip(adapters, adapter_layers(model, name), strict=True):
            layer.adapter.load_state_dict(src.state_dict())
    apply_adapter_fusion(model, names, seed=train.seed)

    objective = task_objective(target, enc, max_len, batch_size, train.seed)
    run = replace(
        train, monitor=objective.monitor, mode=objective.mode, desc=f"fusion for {target.name}"
    )
    loss_fn = objective.loss_fn
    if fusion_reg > 0:

        def loss_fn(m, batch):
            loss, extra = objective.loss_fn(m, batch)
            reg = fusion_regularization(m)
            return loss + fusion_reg * reg, {**extra, "fusion_reg": reg.item()}

    result = Trainer(model, run, objective.batch_fn, loss_fn, objective.eval_fn).fit()
    model.eval()
    with torch.no_grad():
        objective.eval_fn(model)  # a last pass whose attention fusion_weights reports
        weights = fusion_weights(model)
        scores = objective.scores_fn(model)
    return FusionResult(
        sources=names,
        target=target.name,
        metric_name=objective.monitor,
        metric=result.history[-1][objective.monitor],
        source_metrics=source_metrics,
        weights=weights,
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        value_distance=fusion_regularization(model).item(),
        seconds=time.perf_counter() - t0,
        history=result.history,
        val_scores=scores,
    )
