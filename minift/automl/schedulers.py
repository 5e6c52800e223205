"""Three ways to spend a training budget on trials: random search, successive halving, ASHA.

A trial is a configuration sampled from the search space; ``evaluate(config, steps)``
trains it for ``steps`` steps and returns the validation metric. Rung r of the halving
methods trains for min_steps * eta^r steps (up to max_steps at the top rung); a promoted
trial is trained again from the start for the longer budget, and every step it is trained
counts in the cost (so the accounting is conservative: resuming from the rung's
checkpoint would cost less).

Random search (Bergstra and Bengio 2012): n trials, each for max_steps.

Successive halving (Jamieson and Talwalkar 2016; Karnin et al. 2013): all n trials at
rung 0, keep the best floor(n / eta) (at least one), train those at rung 1, ... until the
top rung. It must wait for a whole rung before promoting anyone.

ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning"), whenever a
worker is free:

    for rung k from the second-highest down to 0:
        candidates = the trials in the top floor(|rung k| / eta) of rung k not yet promoted
        if any: promote the best of them to rung k + 1 and train it there
    else: start a new trial at rung 0

so promotions never wait for a rung to fill, and a rung's top 1/eta is judged on the
results so far. This module runs one worker (trials in sequence); the rule is the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minift.automl.space import SearchSpace
from minift.errors import UserError


@dataclass
class Trial:
    id: int
    config: dict[str, Any]
    results: dict[int, float] = field(default_factory=dict)  # steps -> metric

    @property
    def steps(self) -> int:
        return max(self.results, default=0)

    @property
    def value(self) -> float | None:
        return self.results[self.steps] if self.results else None


@dataclass
class SearchResult:
    trials: list[Trial]
    mode: str
    total_steps: int = 0
    # (cumulative steps trained, trial id, steps, metric) after each evaluation
    history: list[tuple[int, int, int, float]] = field(default_factory=list)

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def best(self, at_steps: int | None = None) -> Trial:
        """The best trial among those evaluated at ``at_steps`` (default: the most steps
        any trial reached), so short-budget scores never win against full ones."""
        top = at_steps if at_steps is not None else max(t.steps for t in self.trials)
        pool = [t for t in self.trials if top in t.results]
        best = pool[0]
        for t in pool[1:]:
            if self.better(t.results[top], best.results[top]):
                best = t
        return best

    def best_curve(self, at_steps: int) -> list[tuple[int, float]]:
        """Best full-budget metric so far against cumulative steps (for the plots)."""
        curve, best = [], None
        for cum, _, steps, value in self.history:
            if steps == at_steps and (best is None or self.better(value, best)):
                best = value
            if best is not None:
                curve.append((cum, best))
        return curve


Evaluate = Callable[[dict[str, Any], int], float]


def _check(mode: str, n_trials: int) -> None:
    if mode not in ("min", "max"):
        raise UserError(f"mode must be 'min' or 'max', got {mode!r}")
    if n_trials < 1:
        raise UserError(f"n_trials must be >= 1, got {n_trials}")


def rungs(min_steps: int, max_steps: int, eta: int) -> list[int]:
    """min_steps * eta^r for r = 0, 1, ... while below max_steps, then max_steps."""
    if eta < 2:
        raise UserError(f"eta must be >= 2, got {eta}")
    if not 1 <= min_steps <= max_steps:
        raise UserError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    out = [min_steps]
    while out[-1] * eta < max_steps:
        out.append(out[-1] * eta)
    if out[-1] != max_steps:
        out.append(max_steps)
    return out


class _Runner:
    def __init__(self, evaluate: Evaluate, mode: str, budget: Callable[[], bool] | None):
        self.evaluate, self.result = evaluate, SearchResult([], mode)
        self.out_of_budget = budget or (lambda: False)

    def new(self, config: dict) -> Trial:
        trial = Trial(len(self.result.trials), config)
        self.result.trials.append(trial)
        return trial

    def run(self, trial: Trial, steps: int) -> float:
        value = float(self.evaluate(dict(trial.config), steps))
        trial.results[steps] = value
        self.result.total_steps += steps
        self.result.history.append((self.result.total_steps, trial.id, steps, value))
        return value


def random_search(evaluate: Evaluate, space: SearchSpace, n_trials: int, steps: int,
                  seed: int = 0, mode: str = "max", budget=None) -> SearchResult:  # fmt: skip
    _check(mode, n_trials)
    rng, runner = random.Random(seed), _Runner(evaluate, mode, budget)
    for _ in range(n_trials):
        if runner.out_of_budget():
            break
        runner.run(runner.new(space.sample(rng)), steps)
    return runner.result


def successive_halving(evaluate: Evaluate, space: SearchSpace, n_trials: int, min_steps: int,
                       max_steps: int, eta: int = 3, seed: int = 0, mode: str = "max",
                       budget=None) -> SearchResult:  # fmt: skip
    _check(mode, n_trials)
    rng, runner = random.Random(seed), _Runner(evaluate, mode, budget)
    alive = [runner.new(space.sample(rng)) for _ in range(n_trials)]
    for k, steps in enumerate(rung_steps := rungs(min_steps, max_steps, eta)):
        for trial in alive:
            if runner.out_of_budget():
                return runner.result
            runner.run(trial, steps)
        if k == len(rung_steps) - 1:
            break
        ranked = sorted(alive, key=lambda t: t.results[steps], reverse=mode == "max")
        alive = ranked[: max(1, len(alive) // eta)]
    return runner.result


class ASHA:
    """The promotion rule, apart from any training: ``next_job()`` says what to run,
    ``report()`` records its result (tests drive it with scripted results)."""

    def __init__(self, rung_steps: list[int], eta: int, mode: str = "max") -> None:
        self.rung_steps, self.eta, self.mode = rung_steps, eta, mode
        self.rungs: list[dict[int, float]] = [{} for _ in rung_steps]  # trial id -> metric
        self.promoted: list[set[int]] = [set() for _ in rung_steps]

    def next_job(self) -> tuple[int | None, int]:
        """(trial id, rung) to run next; (None, 0) means: start a new trial at rung 0."""
        for k in range(len(self.rung_steps) - 2, -1, -1):
            rung = self.rungs[k]
            ranked = sorted(rung, key=rung.get, reverse=self.mode == "max")
            top = ranked[: len(rung) // self.eta]
            candidates = [t for t in top if t not in self.promoted[k]]
            if candidates:
                self.promoted[k].add(candidates[0])
                return candidates[0], k + 1
        return None, 0

    def report(self, trial_id: int, rung: int, value: float) -> None:
        self.rungs[rung][trial_id] = value


def asha(evaluate: Evaluate, space: SearchSpace, n_trials: int, min_steps: int, max_steps: int,
         eta: int = 3, seed: int = 0, mode: str = "max", budget=None) -> SearchResult:  # fmt: skip
    """ASHA with one worker: at most n_trials new trials; it ends when no trial can be
    promoted and no new one may start (or when the budget says so)."""
    _check(mode, n_trials)
    rng, runner = random.Random(seed), _Runner(evaluate, mode, budget)
    scheduler = ASHA(rungs(min_steps, max_steps, eta), eta, mode)
    started = 0
    while not runner.out_of_budget():
        trial_id, rung = scheduler.next_job()
        if trial_id is None:
            if started == n_trials:
                break
            trial, started = runner.new(space.sample(rng)), started + 1
        else:
            trial = runner.result.trials[trial_id]
        steps = scheduler.rung_steps[rung]
        scheduler.report(trial.id, rung, runner.run(trial, steps))
    return runner.result


SCHEDULERS = ("random", "halving", "asha")


def total_steps_of(n_trials: int, min_steps: int, max_steps: int, eta: int) -> dict[str, int]:
    """Steps each scheduler spends on n trials when nothing stops it early (the budget
    arithmetic: successive halving trains n at rung 0, n // eta at rung 1, ...)."""
    steps = rungs(min_steps, max_steps, eta)
    halving, alive = 0, n_trials
    for s in steps:
        halving += alive * s
        alive = max(1, alive // eta)
    return {"random": n_trials * max_steps, "halving": halving}
