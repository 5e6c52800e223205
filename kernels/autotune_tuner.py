"""The tuner behind :mod:`.autotune`: time each candidate configuration on the device,
reject those whose outputs differ from the fixed table's, keep the fastest, and remember the
decision (in memory, and in the cache file of :mod:`.autotune_cache`). Device-independent
apart from its default timer, so it is tested on the CPU with a fake one.
"""

from __future__ import annotations

import pathlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .autotune_cache import CacheFile
from .autotune_candidates import describe, disagreement


# ------------------------------------------------------------------------- timing
def cuda_time(fn: Callable[[], object], warmup: int = 2, reps: int = 7) -> float:
    """Median seconds of ``fn()`` between CUDA events, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in pairs) / 1e3


@dataclass
class Result:
    """One tuning decision: the winner, each candidate's time, and why others lost."""

    config: dict
    times: dict[str, float] = field(default_factory=dict)  # describe(config) -> seconds
    rejected: dict[str, str] = field(default_factory=dict)  # describe(config) -> reason
    complete: bool = True  # False when a deadline cut the search short


def tune(
    candidates: Sequence[dict],
    run: Callable[[dict], object],
    timer: Callable[[Callable[[], object]], float],
    deadline: float | None = None,
) -> Result:
    """Run every candidate, reject those whose outputs differ from ``candidates[0]``'s or that
    fail, time the rest with ``timer`` and return the fastest. ``candidates[0]`` must run (it
    is the fixed table: its error is the kernel's, and propagates); CUDA out-of-memory
    propagates too. Past ``deadline`` (``time.time()``) no further candidate is tried."""
    want = run(candidates[0])
    result = Result(config=dict(candidates[0]))
    best = float("inf")
    for i, config in enumerate(candidates):
        name = describe(config)
        if i and deadline is not None and time.time() > deadline:
            result.complete = False
            result.rejected[name] = "not tried: tuning budget spent"
            continue
        if i:
            try:
                got = run(config)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - a config that does not compile loses
                first = (str(err).strip().splitlines() or [""])[0][:160]
                result.rejected[name] = f"{type(err).__name__}: {first}"
                continue
            why = disagreement(got, want)
            del got
            if why:
                result.rejected[name] = why
                continue
        seconds = timer(lambda config=config: run(config))
        result.times[name] = seconds
        if seconds < best:
            best, result.config = seconds, dict(config)
    return result


# -------------------------------------------------------------------------- tuner
# Under a budget, one decision may spend at most this share of what is left, so the first
# kernel of a benchmark (the LoRA forward, 13 candidates at ~1 s each to compile and time on
# an H100) cannot starve the ones after it. Launchers list their likeliest winners first,
# so a search cut short has timed those.
DECISION_SHARE = 0.5


class Tuner:
    """The decisions of this process (memory) over those of earlier ones (the cache file,
    :mod:`.autotune_cache`)."""

    def __init__(self, path: pathlib.Path | str | None = None, timer=cuda_time):
        self.file = CacheFile(path)
        self.timer = timer
        self.memory: dict[str, dict] = {}
        self.budget_s: float | None = None  # seconds of tuning allowed (None: no limit)
        self.spent = 0.0  # seconds spent tuning so far
        self.log: list[dict] = []  # every decision this process made or read, in order

    def cache_path(self) -> pathlib.Path:
        return self.file.cache_path()

    def left(self) -> float:
        """Seconds of tuning left (infinite without a budget)."""
        return float("inf") if self.budget_s is None else self.budget_s - self.spent

    def choose(self, key: str, candidates: Sequence[dict], run: Callable[[dict], object]) -> dict:
        """The configuration for ``key``: from memory, else the file, else tuned now."""
        if key in self.memory:
            return dict(self.memory[key]["config"])
        stored = self.file.read().get(key)
        names = {describe(c) for c in candidates}
        if stored is not None and describe(stored["config"]) in names:
            entry = {**stored, "source": "cache"}
        elif len(candidates) == 1 or self.left() <= 0:
            why = "one candidate" if len(candidates) == 1 else "tuning budget spent"
            entry = dict(config=dict(candidates[0]), source=f"fixed ({why})", times_us={},
                         rejected={})  # fmt: skip
        else:
            start = time.time()
            deadline = None if self.budget_s is None else start + DECISION_SHARE * self.left()
            try:
                result = tune(candidates, run, self.timer, deadline)
            finally:
                self.spent += time.time() - start
            entry = dict(
                config=result.config,
                source="tuned" if result.complete else "tuned (cut short by the budget)",
                times_us={k: round(v * 1e6, 2) for k, v in result.times.items()},
                rejected=result.rejected,
            )
            if result.complete:
                self.file.write(key, {k: v for k, v in entry.items() if k != "source"})
        entry.update(candidates=len(candidates), fixed=describe(candidates[0]))
        self.memory[key] = entry
        self.log.append({"key": key, **entry})
        return dict(entry["config"])
