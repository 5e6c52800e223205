"""A simulated panel: raters who are noisy copies of a hidden judge.

Human evaluation cannot run in a test or a two-minute lesson, but its statistics can: a
*judge* scores a text exactly (for the ``file-words`` task the hidden truth of
minift.rlhf.tasks, the "human" of the RLHF lessons) and each simulated rater reports that
judgement through the imperfections real raters have (Thurstone 1927's law of comparative
judgement: a perceived quality is the true one plus Gaussian noise):

- on a scale (lo..hi): rating = clip(round(offset + slope * judge(text) + bias + noise * z), lo, hi),
  z ~ N(0, 1): ``noise`` is how inconsistent the rater is, ``bias`` how lenient (> 0) or
  harsh (< 0);
- between two outputs: the rater prefers the first when
  judge(a) - judge(b) + bias + noise * sqrt(2) * z > 0 (each of the two perceptions carries
  its own noise; here ``bias`` is a position bias toward the output shown first, which real
  raters have; Zheng et al. 2023 measure it for LLM judges); an exact tie is a coin flip;
- ``coverage`` < 1 leaves a random share of the items unrated (real panels are incomplete,
  which Krippendorff's alpha handles and Fleiss' kappa does not).

Each rater draws from its own seeded generator, so a panel's ratings are reproducible. The
rows it returns are ratings-file rows (minift.rating.records), the format `minift rate`
writes, so simulated and real ratings go through the same analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minift.rating.records import SCALE, check_rating, item_id


@dataclass(frozen=True)
class SimulatedRater:
    name: str
    noise: float = 0.5  # std of the perception noise, in judge units (scale points)
    bias: float = 0.0  # leniency on a scale; position bias toward the first output in a pair
    coverage: float = 1.0  # chance of rating any one item
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a rater needs a name")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {self.noise}")
        if not math.isfinite(self.bias):
            raise ValueError(f"bias must be finite, got {self.bias}")
        if not 0 < self.coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {self.coverage}")


@dataclass(frozen=True)
class Item:
    """What is shown: a prompt and one or two outputs (with where each came from)."""

    prompt: str
    outputs: tuple[str, ...]
    sources: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return item_id(self.prompt, self.outputs)


def panel(n: int, noise: float, bias_spread: float = 0.0, coverage: float = 1.0, seed: int = 0) -> list[SimulatedRater]:  # fmt: skip
    """``n`` raters with the same noise; their biases spread evenly over
    [-bias_spread, +bias_spread]; each with its own seed."""
    if n < 1:
        raise ValueError(f"a panel needs at least one rater, got {n}")
    biases = np.linspace(-bias_spread, bias_spread, n) if n > 1 else np.zeros(1)
    return [
        SimulatedRater(f"sim{k + 1}", noise, float(biases[k]), coverage, seed * 1000 + k)
        for k in range(n)
    ]


def simulate_ratings(
    raters: Sequence[SimulatedRater],
    items: Sequence[Item],
    judge: Callable[[str], float],
    scale: tuple[int, int] = SCALE,
    offset: float | None = None,
    slope: float = 1.0,
) -> list[dict]:
    """Ratings-file rows: every rater's score (one-output items) or preference (two-output
    items) of every item it covers. ``offset`` (default: the scale's lower end + 1) and
    ``slope`` map the judge's value onto the scale before the noise."""
    lo, hi = scale
    offset = lo + 1 if offset is None else offset
    truth = [[judge(o) for o in it.outputs] for it in items]
    rows = []
    for rater in raters:
        rng = np.random.default_rng(rater.seed)
        for it, t in zip(items, truth):
            z, coin, covered = rng.standard_normal(), rng.random(), rng.random() < rater.coverage
            if not covered:
                continue
            row = {"rater": rater.name, "item": it.id, "prompt": it.prompt, "outputs": list(it.outputs)}  # fmt: skip
            if it.sources:
                row["sources"] = list(it.sources)
            if len(it.outputs) == 1:
                latent = offset + slope * t[0] + rater.bias + rater.noise * z
                row["score"] = int(min(hi, max(lo, round(latent))))
            else:
                diff = t[0] - t[1] + rater.bias + rater.noise * math.sqrt(2) * z
                row["preferred"] = 1 if diff > 0 or (diff == 0 and coin < 0.5) else 2
            rows.append(check_rating(row, f"simulated rating of {rater.name}", scale))
    return rows
