"""The interval of a proportion: the share of n examples a model got right.

An accuracy over n examples is k successes of n Bernoulli trials. Its textbook interval
p ± z sqrt(p (1 - p) / n) (minift.metrics.accuracy_se) collapses to a point at 0% and
100% and may leave [0, 1]; the Wilson score interval does neither, and keeps close to
its nominal coverage for small n (Brown, Cai and DasGupta 2001). A model card reports
every accuracy with it.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from minift.metrics.intervals import Estimate, _check_confidence


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """The Wilson score interval of a proportion p = successes / n (Wilson 1927).

    It inverts the score test |p - pi| <= z sqrt(pi (1 - pi) / n) for the true pi, which
    solves to

        centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
        half      = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        interval  = centre ± half

    Unlike p ± z sqrt(p (1 - p) / n) it never leaves [0, 1] and does not shrink to a point
    at p = 0 or 1: a model right on 40 of 40 rows gets [0.912, 1], not [1, 1] (Brown, Cai
    and DasGupta 2001 compare the two and recommend Wilson's for small n).
    """
    _check_confidence(confidence)
    if isinstance(successes, bool) or not isinstance(successes, (int, np.integer)):
        raise ValueError(f"successes must be a whole number, got {successes!r}")
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    # at k = 0 (k = n) the bound is exactly 0 (1); say so rather than leave rounding's 1e-17
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, low, high, confidence, se=math.sqrt(p * (1.0 - p) / n), n=n)
