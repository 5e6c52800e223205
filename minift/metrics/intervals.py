"""Noise made explicit: standard errors, bootstrap intervals, and one comparison helper.

A number measured on 240 evaluation examples carries sampling noise; two methods whose
scores differ by less than that noise have not been shown to differ. This module is the
one place that noise is computed, so that every comparison a lesson prints says the same
thing the same way:

- :func:`mean_se`: a mean, its standard error s / sqrt(n) and a normal 95% interval;
- :func:`accuracy_se`: the Bernoulli standard error sqrt(p (1 - p) / n) of an accuracy;
- :func:`~minift.metrics.proportions.wilson_interval` (its own module): the Wilson score
  interval of a proportion (an accuracy);
- :func:`bootstrap_ci`: a percentile bootstrap interval for any statistic of one sample;
- :func:`paired_bootstrap` and :func:`permutation_test`: two models scored on the *same*
  examples, compared through the per-example differences;
- :func:`compare`: both, as one sentence ("... within noise" or "... a real difference").

Scores are per-example numbers (1.0 / 0.0 for right / wrong, a loss, a token F1) as a
sequence, a 1-D NumPy array or a torch tensor. Every random draw comes from
``numpy.random.default_rng(seed)``, so a result is the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

_CHUNK = 1 << 22  # resampled values held at once (32 MiB of float64)


def as_scores(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array, or a ValueError naming ``name`` and the problem."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per example), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: an estimate needs at least one example")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _paired(a: Any, b: Any, name_a: str = "scores_a", name_b: str = "scores_b") -> np.ndarray:
    a, b = as_scores(a, name_a), as_scores(b, name_b)
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} have different lengths ({len(a)} and {len(b)}): a paired "
            "comparison needs both models scored on the same examples, in the same order"
        )
    return a - b


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (and its standard error where there is one)."""

    value: float
    low: float
    high: float
    confidence: float = 0.95
    se: float | None = None
    n: int | None = None

    def __str__(self) -> str:
        spread = f" ± {self.se:.3f}" if self.se is not None else ""
        count = f", n={self.n}" if self.n is not None else ""
        return (
            f"{self.value:.3f}{spread} ({self.confidence:.0%} CI {self.low:.3f} to "
            f"{self.high:.3f}{count})"
        )


def mean_se(values: Any, confidence: float = 0.95) -> Estimate:
    """The mean, its standard error and a normal-approximation interval.

        mean = (1/n) sum x_i,  s^2 = (1/(n-1)) sum (x_i - mean)^2,  SE = s / sqrt(n)
        interval = mean ± z SE, with z = 1.96 for 95%

    The interval leans on the central limit theorem: fine for a mean over a few dozen
    examples or more; for 2-3 seeds it is rough (a t quantile would be wider).
    """
    _check_confidence(confidence)
    x = as_scores(values, "values")
    if len(x) < 2:
        raise ValueError("values has 1 element: a standard error needs at least 2")
    mean = float(np.mean(x))
    se = float(np.std(x, ddof=1) / math.sqrt(len(x)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # 1.96 for 95%
    return Estimate(mean, mean - z * se, mean + z * se, confidence, se, len(x))


def accuracy_se(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on n examples: sqrt(p (1 - p) / n).

    Each example is a Bernoulli trial, right with probability p, so the count right is
    Binomial(n, p) and its share has variance p (1 - p) / n. At p = 0.5 and n = 240 that
    is 0.032: a difference of 0.03 between two methods is within one standard error.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def _resampled_statistics(
    x: np.ndarray, statistic: Callable[..., Any], n_resamples: int, seed: int
) -> np.ndarray:
    """statistic(x[idx]) for n_resamples draws idx of n indices with replacement."""
    rng = np.random.default_rng(seed)
    n = len(x)
    rows = max(1, _CHUNK // n)
    out = []
    for start in range(0, n_resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, n_resamples - start), n))
        sample = x[idx]
        try:
            values = np.asarray(statistic(sample, axis=-1), dtype=np.float64)
        except TypeError:  # a statistic without an axis argument: one row at a time
            values = np.array([statistic(row) for row in sample], dtype=np.float64)
        out.append(values.reshape(-1))
    return np.concatenate(out)


def bootstrap_ci(
    values: Any,
    statistic: Callable[..., Any] = np.mean,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """A percentile bootstrap interval for ``statistic`` of one sample.

    The sample x_1..x_n stands in for the population: draw B resamples of n values from
    it with replacement, compute the statistic on each (theta*_1..theta*_B), and take the
    alpha/2 and 1 - alpha/2 quantiles of those B values as the interval (Efron and
    Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13). ``statistic`` is
    called as ``statistic(array, axis=-1)`` on a (B, n) block when it takes ``axis``
    (np.mean, np.median: vectorised), else once per resample. The value returned is the
    statistic of the sample itself.

    Its coverage approaches ``confidence`` as n grows; for small n (say under 20) it is
    somewhat too narrow.
    """
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    x = as_scores(values, "values")
    stats = _resampled_statistics(x, statistic, n_resamples, seed)
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(statistic(x)), float(low), float(high), confidence, n=len(x))


def paired_bootstrap(
    scores_a: Any,
    scores_b: Any,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """A bootstrap interval for mean(a) - mean(b), both models scored on the same examples.

    Resample *examples* (the same indices for both models), which is resampling the
    per-example differences d_i = a_i - b_i: the interval is :func:`bootstrap_ci` of
    mean(d). Pairing removes the variation between easy and hard examples that both
    models share, so it is far tighter than two separate intervals (Koehn, "Statistical
    significance tests for machine translation evaluation", EMNLP 2004).
    """
    d = _paired(scores_a, scores_b)
    return bootstrap_ci(d, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)


def permutation_test(
    scores_a: Any, scores_b: Any, *, n_resamples: int = 10000, seed: int = 0
) -> float:
    """The two-sided p-value of the paired sign-flip permutation test of mean(a) = mean(b).

    Under the null hypothesis that the two models are exchangeable on every example, each
    difference d_i = a_i - b_i is as likely to be +d_i as -d_i. The p-value is the share
    of the 2^n sign patterns s whose |mean(s_i d_i)| is at least the observed |mean(d_i)|.
    When 2^n <= n_resamples every pattern is enumerated (the exact test); otherwise
    n_resamples random patterns are drawn and p = (1 + #{as extreme}) / (1 + B), which is
    never 0 and keeps the test valid (Phipson and Smyth, "Permutation p-values should
    never be zero", 2010; Good, "Permutation Tests", 2000).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    d = _paired(scores_a, scores_b)
    n = len(d)
    observed = abs(float(np.mean(d)))
    tolerance = 1e-12 * max(1.0, float(np.max(np.abs(d))))  # ties count as extreme
    if n < 63 and 2**n <= n_resamples:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        means = np.abs(((2 * patterns - 1) * d).mean(axis=1))
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    extreme = 0
    for start in range(0, n_resamples, rows):
        signs = rng.integers(0, 2, size=(min(rows, n_resamples - start), n)) * 2 - 1
        extreme += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - tolerance))
    return (1 + extreme) / (1 + n_resamples)


@dataclass(frozen=True)
class Comparison:
    """Two models on the same examples: their means, the difference, its interval, p."""

    name_a: str
    mean_a: float
    name_b: str
    mean_b: float
    difference: float
    low: float
    high: float
    p_value: float
    n: int
    confidence: float = 0.95

    @property
    def within_noise(self) -> bool:
        """True when the interval of the difference contains 0."""
        return self.low <= 0.0 <= self.high

    @property
    def verdict(self) -> str:
        """ "within noise" or "a real difference", read from the interval; "at the edge of
        the noise" when the permutation test at the same level says the opposite (the two
        procedures disagree only for differences near the noise's size)."""
        permutation_says_real = self.p_value < 1.0 - self.confidence
        if permutation_says_real == self.within_noise:
            return "at the edge of the noise"
        return "within noise" if self.within_noise else "a real difference"

    def __str__(self) -> str:
        p = "p<0.001" if self.p_value < 0.001 else f"p={self.p_value:.3f}"
        verdict = self.verdict
        return (
            f"{self.name_a} {self.mean_a:.3f} vs {self.name_b} {self.mean_b:.3f}: "
            f"{self.difference:+.3f} ({self.confidence:.0%} CI {self.low:+.3f} to "
            f"{self.high:+.3f}, {p}), {verdict}"
        )


def compare(
    name_a: str,
    scores_a: Any,
    name_b: str,
    scores_b: Any,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    n_permutations: int = 10000,
    seed: int = 0,
) -> Comparison:
    """Compare two models scored on the same examples; ``print`` the result for a sentence.

    The difference is mean(a) - mean(b), its interval the :func:`paired_bootstrap`, its
    p-value the :func:`permutation_test`. The verdict reads the interval: "within noise"
    when it contains 0, else "a real difference"; "at the edge of the noise" when the
    permutation test at the same level disagrees (they are different procedures, and
    differ only for differences about the size of the noise). For example,
    ``print(compare("LoRA", lora_correct, "prefix", prefix_correct))`` prints a line like

        LoRA 0.512 vs prefix 0.383: +0.129 (95% CI +0.079 to +0.179, p<0.001), a real difference
    """
    d = _paired(scores_a, scores_b, f"scores of {name_a}", f"scores of {name_b}")
    a, b = as_scores(scores_a, name_a), as_scores(scores_b, name_b)
    interval = bootstrap_ci(d, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)
    p = permutation_test(a, b, n_resamples=n_permutations, seed=seed)
    return Comparison(
        name_a=name_a,
        mean_a=float(np.mean(a)),
        name_b=name_b,
        mean_b=float(np.mean(b)),
        difference=float(np.mean(d)),
        low=interval.low,
        high=interval.high,
        p_value=p,
        n=len(d),
        confidence=confidence,
    )
