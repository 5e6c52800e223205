"""What a run cost, and budgets that stop it: wall time, tokens, FLOPs, peak memory,
energy and money.

    FLOPs   = steps x flops_per_step            (minift.train.flops: 6 W or 4 W + 6 A per token)
    energy  = watts x seconds / 3600            (Wh; watts is a setting: the device's draw)
    money   = price_per_hour x seconds / 3600   (the rental price of the machine)
    MFU     = FLOPs / seconds / peak            (peak measured by a matmul, train.flops)

The energy and money figures are estimates from settings, not measurements: a practitioner
puts in their GPU's typical draw and their cloud's hourly price. Budgets (Strubell et al.
2019 and the Chinchilla line of work argue for reporting compute next to every metric)
stop the run before the step that would overspend: a FLOP budget is known before the run
starts, a time or money budget is checked against the mean step time so far.

:class:`CostMeter` is a trainer ``on_step`` callback; ``meter.report()`` gives the numbers.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch

from minift.errors import UserError


@dataclass
class Budget:
    flops: float | None = None
    seconds: float | None = None
    money: float | None = None  # in the currency of price_per_hour

    def __post_init__(self) -> None:
        for name in ("flops", "seconds", "money"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UserError(f"budget {name} must be > 0 (or None for no limit), got {value}")


@dataclass
class CostReport:
    steps: int
    seconds: float
    tokens: int
    flops: float
    flops_per_s: float
    mfu: float | None
    peak_memory_bytes: int
    memory_kind: str  # "cuda_allocated" or "process_peak_rss"
    energy_wh: float
    money: float
    stopped_by_budget: str | None

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        mfu = f", MFU {self.mfu:.1%}" if self.mfu is not None else ""
        return (
            f"{self.steps} steps, {self.seconds:.1f} s, {self.tokens:,} tokens, "
            f"{self.flops:.3g} FLOPs ({self.flops_per_s:.3g}/s{mfu}), "
            f"peak {self.peak_memory_bytes / 2**20:.0f} MiB, "
            f"{self.energy_wh:.3g} Wh, {self.money:.3g} money"
        )


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_allocated"
    # ru_maxrss is KiB on Linux and bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024), "process_peak_rss"


class CostMeter:
    """Count a run's cost step by step; ask the trainer to stop before a budget is overspent.

    flops_per_step and tokens_per_step describe one optimizer step (all micro-batches)."""

    def __init__(
        self,
        flops_per_step: float,
        tokens_per_step: int,
        budget: Budget | None = None,
        watts: float = 0.0,
        price_per_hour: float = 0.0,
        peak_flops_per_s: float | None = None,
        device: torch.device | str = "cpu",
        clock=time.perf_counter,  # seconds; tests pass a scripted clock
    ) -> None:
        if flops_per_step <= 0 or tokens_per_step <= 0:
            raise ValueError("flops_per_step and tokens_per_step must be > 0")
        if watts < 0 or price_per_hour < 0:
            raise UserError(f"watts and price_per_hour must be >= 0, got {watts}, {price_per_hour}")
        self.budget = budget or Budget()
        if self.budget.flops is not None and self.budget.flops < flops_per_step:
            raise UserError(
                f"the FLOP budget {self.budget.flops:.3g} cannot fit one step "
                f"({flops_per_step:.3g} FLOPs); raise it or use a smaller batch or model"
            )
        if self.budget.money is not None and price_per_hour == 0:
            raise UserError("a money budget needs price_per_hour > 0")
        self.flops_per_step, self.tokens_per_step = float(flops_per_step), tokens_per_step
        self.watts, self.price_per_hour = watts, price_per_hour
        self.peak = peak_flops_per_s
        self.device = torch.device(device)
        self.clock = clock
        self.steps = 0
        self.stopped_by: str | None = None
        self.t0: float | None = None
        self.seconds = 0.0

    def start(self) -> None:
        self.t0 = self.clock()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def money_for(self, seconds: float) -> float:
        return self.price_per_hour * seconds / 3600

    def __call__(self, done: int, trainer=None) -> None:
        """The trainer's on_step: count the step, then stop if the next would overspend."""
        if self.t0 is None:
            raise RuntimeError("call meter.start() just before trainer.fit()")
        self.steps += 1
        self.seconds = self.clock() - self.t0
        per_step = self.seconds / self.steps
        b = self.budget
        over = None
        if b.flops is not None and (self.steps + 1) * self.flops_per_step > b.flops:
            over = "flops"
        elif b.seconds is not None and self.seconds + per_step > b.seconds:
            over = "seconds"
        elif b.money is not None and self.money_for(self.seconds + per_step) > b.money:
            over = "money"
        if over is None:
            return
        if self.steps == 1 and over != "flops" and getattr(b, over) < self.limit_used(over):
            raise UserError(
                f"the {over} budget {getattr(b, over):.3g} cannot fit one step (the first took "
                f"{self.limit_used(over):.3g}); raise the budget"
            )
        self.stopped_by = over
        if trainer is not None:
            trainer.stop_requested = True

    def limit_used(self, kind: str) -> float:
        return self.seconds if kind == "seconds" else self.money_for(self.seconds)

    def report(self) -> CostReport:
        flops = self.steps * self.flops_per_step
        seconds = max(self.seconds, 1e-12)
        memory, kind = peak_memory(self.device)
        return CostReport(
            steps=self.steps,
            seconds=self.seconds,
            tokens=self.steps * self.tokens_per_step,
            flops=flops,
            flops_per_s=flops / seconds,
            mfu=flops / seconds / self.peak if self.peak else None,
            peak_memory_bytes=memory,
            memory_kind=kind,
            energy_wh=self.watts * self.seconds / 3600,
            money=self.money_for(self.seconds),
            stopped_by_budget=self.stopped_by,
        )
