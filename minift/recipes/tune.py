"""Hyperparameter search over fine-tuning runs: which method, learning rate, rank.

    space     = method ~ Choice(methods), lr ~ LogUniform, r ~ IntRange (LoRA, DoRA),
                alpha / r ~ Choice(1, 2, 4), reduction_factor ~ Choice(4, 8, 16, 32) (adapters)
    evaluate  = finetune(task, base, method, options, lr, steps) -> validation metric
    scheduler = random search, successive halving or ASHA (minift.automl)
    budget    = at most `trials` trials; stop launching work after `time_budget` seconds

Every evaluation is a fresh fine-tuning run from the base for the rung's steps, so the cost
column (steps, FLOPs from minift.train.flops, seconds) counts everything trained. The
best trial is chosen on the validation metric it was searched on: its number is optimistic
for unseen data, as any tuned number is.

`minift tune --methods lora,dora,adapter --time-budget 10m --trials 30`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from minift.automl import (
    SCHEDULERS,
    Choice,
    IntRange,
    LogUniform,
    SearchSpace,
    asha,
    random_search,
    successive_halving,
)
from minift.data.tasks import DEFAULT_TASK
from minift.errors import UserError
from minift.peft.methods import get_method
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.tasks import get_task
from minift.train.flops import flops_per_step


@dataclass
class TuneConfig:
    task: str = DEFAULT_TASK
    methods: tuple[str, ...] = ("lora", "dora", "adapter")
    scheduler: str = "asha"  # random | halving | asha
    trials: int = 30
    min_steps: int = 10  # rung 0 of halving and ASHA
    max_steps: int = 90  # every random-search trial; the top rung
    eta: int = 3
    lr: tuple[float, float] = (1e-4, 3e-2)  # log-uniform
    rank: tuple[int, int] = (2, 16)
    time_budget: float | None = None  # seconds; None: no limit
    batch_size: int = 32
    seed: int = 0  # the search's sampling and every trial's training seed

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")  # fmt: skip
        if not self.methods:
            raise UserError("--methods needs at least one method")
        for m in self.methods:
            get_method(m)  # an unknown name fails here, listing the known ones
        if self.time_budget is not None and self.time_budget <= 0:
            raise UserError(f"time budget must be > 0 seconds, got {self.time_budget}")

    def space(self) -> SearchSpace:
        return SearchSpace(
            {
                "method": Choice(tuple(self.methods)),
                "lr": LogUniform(*self.lr),
                "r": IntRange(*self.rank),
                "alpha_over_r": Choice((1, 2, 4)),
                "reduction_factor": Choice((4, 8, 16, 32)),
            }
        )


@dataclass
class TuneResult:
    config: TuneConfig
    trials: list[dict[str, Any]]  # one row per evaluation
    best: dict[str, Any]
    total_steps: int
    total_flops: float
    seconds: float
    history: list[tuple[int, int, int, float]] = field(default_factory=list)
    metric_name: str = ""


def method_options(config: dict[str, Any]) -> dict[str, Any]:
    """The sampled values that the method's own config has fields for."""
    fields = {f.name for f in dataclasses.fields(get_method(config["method"]).config)}
    options = {}
    if "r" in fields:
        options["r"] = config["r"]
        options["alpha"] = float(config["r"] * config["alpha_over_r"])
    if "reduction_factor" in fields:
        options["reduction_factor"] = config["reduction_factor"]
    return options


def run_tune(config: TuneConfig, base, enc, out: list | None = None) -> TuneResult:
    task = get_task(config.task, seed=config.seed)
    rows: list[dict[str, Any]] = [] if out is None else out
    metric_name = [""]
    t0 = time.perf_counter()

    def evaluate(sample: dict[str, Any], steps: int) -> float:
        options = method_options(sample)
        train = train_config(
            steps=steps, lr=sample["lr"], warmup_steps=min(5, steps // 5), eval_every=0,
            eval_at_start=False, progress=False, seed=config.seed,
        )  # fmt: skip
        ft = FinetuneConfig(method=sample["method"], options=options,
                            batch_size=config.batch_size, train=train)  # fmt: skip
        r = finetune(task, base, enc, ft)
        metric_name[0] = r.metric_name
        trainable = None if r.trainable == r.total else r.trainable
        flops = steps * flops_per_step(base.config, config.batch_size, ft.max_len, trainable)
        rows.append(dict(method=sample["method"], lr=sample["lr"], **options, steps=steps,
                         metric=r.metric, seconds=r.seconds, flops=flops))  # fmt: skip
        return r.metric

    budget = None
    if config.time_budget is not None:
        budget = lambda: time.perf_counter() - t0 > config.time_budget  # noqa: E731
    space, common = config.space(), dict(seed=config.seed, mode="max", budget=budget)
    if config.scheduler == "random":
        result = random_search(evaluate, space, config.trials, config.max_steps, **common)
    elif config.scheduler == "halving":
        result = successive_halving(evaluate, space, config.trials, config.min_steps,
                                    config.max_steps, config.eta, **common)  # fmt: skip
    else:
        result = asha(evaluate, space, config.trials, config.min_steps, config.max_steps,
                      config.eta, **common)  # fmt: skip
    for row, (_, trial_id, _, _) in zip(rows, result.history):
        row["trial"] = trial_id
    if not rows:
        raise UserError("the time budget ran out before the first trial finished; raise it")
    best = result.best()
    best_row = next(r for r in reversed(rows) if r["trial"] == best.id and r["steps"] == best.steps)
    return TuneResult(
        config=config, trials=rows, best=best_row, total_steps=result.total_steps,
        total_flops=sum(r["flops"] for r in rows), seconds=time.perf_counter() - t0,
        history=result.history, metric_name=metric_name[0],
    )  # fmt: skip


def plot_tune(result: TuneResult, path) -> None:
    """Each evaluation's metric against the cumulative steps trained, coloured by rung,
    with the best full-budget metric so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = sorted({h[2] for h in result.history})
    for s in steps:
        pts = [(h[0], h[3]) for h in result.history if h[2] == s]
        ax.scatter(*zip(*pts), s=18, label=f"{s} steps")
    top = max(steps)
    curve, best = [], None
    for cum, _, s, v in result.history:
        if s == top and (best is None or v > best):
            best = v
        if best is not None:
            curve.append((cum, best))
    if curve:
        ax.step(*zip(*curve), where="post", color="black", label="best at full budget")
    ax.set(xlabel="steps trained (cumulative)", ylabel=result.metric_name or "metric",
           title=f"{result.config.scheduler}: {len({r['trial'] for r in result.trials})} trials")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
