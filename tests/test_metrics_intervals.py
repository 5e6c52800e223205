"""minift.metrics.intervals: by hand, and by coverage and error rates on simulated data."""

import math

import numpy as np
import pytest
import torch

from minift import metrics
from minift.metrics.intervals import Comparison


def test_mean_se_by_hand():
    # 1, 2, 3, 4: mean 2.5, s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3, SE = sqrt(5/12)
    est = metrics.mean_se([1.0, 2.0, 3.0, 4.0])
    assert est.value == 2.5
    assert est.se == pytest.approx(math.sqrt(5 / 12), rel=1e-12)
    assert est.low == pytest.approx(2.5 - 1.959963984540054 * math.sqrt(5 / 12), rel=1e-12)
    assert est.high == pytest.approx(2.5 + 1.959963984540054 * math.sqrt(5 / 12), rel=1e-12)
    assert est.n == 4
    assert str(est) == "2.500 ± 0.645 (95% CI 1.235 to 3.765, n=4)"
    wider = metrics.mean_se([1.0, 2.0, 3.0, 4.0], confidence=0.99)
    assert wider.high - wider.value == pytest.approx(2.5758293035489 * wider.se, rel=1e-9)


def test_accuracy_se_is_bernoulli():
    assert metrics.accuracy_se(0.5, 100) == 0.05
    assert metrics.accuracy_se(0.9, 400) == pytest.approx(math.sqrt(0.09 / 400), rel=1e-15)
    assert metrics.accuracy_se(1.0, 10) == 0.0
    # the SE of the mean of 0/1 scores with ddof=0 is the same thing
    scores = np.array([1.0] * 30 + [0.0] * 70)
    assert metrics.accuracy_se(0.3, 100) == pytest.approx(scores.std() / 10, rel=1e-12)


def bootstrap_coverage(confidence, trials=200, n=40):
    rng = np.random.default_rng(1234)
    covered = 0
    for trial in range(trials):
        sample = rng.normal(3.0, 2.0, size=n)
        est = metrics.bootstrap_ci(sample, n_resamples=500, confidence=confidence, seed=trial)
        covered += est.low <= 3.0 <= est.high
    return covered / trials


def test_bootstrap_interval_covers_the_true_mean_at_its_confidence():
    assert 0.9 <= bootstrap_coverage(0.95) <= 0.99


def test_bootstrap_coverage_follows_the_confidence_asked_for():
    # the coverage check above can fail: a 50% interval covers about half the time
    assert 0.38 <= bootstrap_coverage(0.5) <= 0.62


def test_bootstrap_is_seeded_and_takes_any_statistic():
    x = np.random.default_rng(0).exponential(size=50)
    a = metrics.bootstrap_ci(x, np.median, seed=3)
    assert a == metrics.bootstrap_ci(x, np.median, seed=3)
    assert a != metrics.bootstrap_ci(x, np.median, seed=4)
    assert a.value == np.median(x)
    assert a.low < a.value < a.high
    # a statistic without an axis argument runs per resample and draws the same resamples
    b = metrics.bootstrap_ci(x, lambda v: float(np.median(v)), seed=3)
    assert (b.low, b.high) == (a.low, a.high)
    constant = metrics.bootstrap_ci([2.0] * 10)
    assert (constant.low, constant.value, constant.high) == (2.0, 2.0, 2.0)
    assert metrics.bootstrap_ci(torch.tensor(x), seed=3) == metrics.bootstrap_ci(x, seed=3)


def test_paired_bootstrap_is_the_bootstrap_of_the_differences():
    rng = np.random.default_rng(5)
    a, b = rng.random(60), rng.random(60)
    assert metrics.paired_bootstrap(a, b, seed=1) == metrics.bootstrap_ci(a - b, seed=1)


def test_exact_permutation_p_values_by_hand():
    # d = 1, 1, 1: of the 8 sign patterns only +++ and --- reach |mean| = 1: p = 2/8
    assert metrics.permutation_test([2, 2, 2], [1, 1, 1]) == 0.25
    # d = 1, 2, 3, 4: |mean| = 2.5 only for ++++ and ----: p = 2/16
    assert metrics.permutation_test([1, 2, 3, 4], [0, 0, 0, 0]) == 0.125
    # d = 1, -1: every pattern has |mean| 0 or 1 >= 0: p = 1
    assert metrics.permutation_test([1, 0], [0, 1]) == 1.0
    # d = 3, 1: patterns give |mean| 2, 1, 1, 2: two reach 2, p = 1/2
    assert metrics.permutation_test([3, 1], [0, 0]) == 0.5


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(7)
    p = np.array(
        [
            metrics.permutation_test(rng.normal(size=40), rng.normal(size=40), n_resamples=400)
            for _ in range(200)
        ]
    )
    assert 0.01 <= np.mean(p < 0.05) <= 0.10
    assert 0.40 <= np.mean(p < 0.5) <= 0.60
    assert 0.40 <= p.mean() <= 0.60


def test_permutation_p_value_is_small_under_a_real_shift_and_never_zero():
    rng = np.random.default_rng(8)
    base = rng.normal(size=100)
    p = metrics.permutation_test(base + 0.5 + 0.3 * rng.normal(size=100), base, n_resamples=999)
    assert p == 1 / 1000  # nothing as extreme among 999 draws: (1 + 0) / (1 + 999)


def test_compare_says_real_difference_or_within_noise():
    rng = np.random.default_rng(9)
    lora = (rng.random(400) < 0.75).astype(float)
    prefix = (rng.random(400) < 0.45).astype(float)
    real = metrics.compare("LoRA", lora, "prefix", prefix)
    assert not real.within_noise
    assert real.p_value < 0.001
    assert real.difference == pytest.approx(lora.mean() - prefix.mean())
    assert str(real).startswith(f"LoRA {lora.mean():.3f} vs prefix {prefix.mean():.3f}: +0.")
    assert str(real).endswith("p<0.001), a real difference")

    noisy = lora.copy()
    flip = rng.choice(400, size=6, replace=False)
    noisy[flip] = 1 - noisy[flip]  # a few examples differ, both ways
    same = metrics.compare("LoRA", lora, "LoRA+", noisy)
    assert same.within_noise
    assert same.p_value > 0.05
    assert str(same).endswith("within noise")


def test_comparison_sentence_format():
    c = Comparison("LoRA", 0.512, "prefix", 0.383, 0.129, 0.08, 0.18, 0.001, 240)
    assert str(c) == (
        "LoRA 0.512 vs prefix 0.383: +0.129 (95% CI +0.080 to +0.180, p=0.001), a real difference"
    )
    c = Comparison("DoRA", 0.471, "LoRA", 0.504, -0.033, -0.081, 0.012, 0.2134, 240)
    assert str(c) == (
        "DoRA 0.471 vs LoRA 0.504: -0.033 (95% CI -0.081 to +0.012, p=0.213), within noise"
    )


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: metrics.compare("a", [1, 0, 1], "b", [1, 0]), "different lengths"),
        (lambda: metrics.permutation_test([1.0, 2.0], [1.0]), "different lengths"),
        (lambda: metrics.paired_bootstrap([], []), "empty"),
        (lambda: metrics.bootstrap_ci([]), "empty"),
        (lambda: metrics.mean_se([1.0]), "at least 2"),
        (lambda: metrics.mean_se([1.0, float("nan")]), "NaN"),
        (lambda: metrics.bootstrap_ci([[1.0, 2.0]]), "1-D"),
        (lambda: metrics.bootstrap_ci([1.0, 2.0], confidence=95), "confidence"),
        (lambda: metrics.accuracy_se(1.5, 10), "accuracy must be"),
        (lambda: metrics.accuracy_se(0.5, 0), "n must be"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_verdict_says_when_the_interval_and_the_permutation_test_disagree():
    from minift.metrics.intervals import Comparison

    def made(low, high, p):
        return Comparison("a", 0.5, "b", 0.4, 0.1, low, high, p, 240)

    assert made(0.02, 0.18, 0.001).verdict == "a real difference"
    assert made(-0.02, 0.18, 0.30).verdict == "within noise"
    assert made(0.001, 0.18, 0.07).verdict == "at the edge of the noise"  # CI: real; p: noise
    assert made(-0.001, 0.18, 0.04).verdict == "at the edge of the noise"  # CI: noise; p: real
    assert str(made(0.001, 0.18, 0.07)).endswith("at the edge of the noise")


def test_wilson_interval_against_statsmodels_and_by_hand():
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 500))
        k = int(rng.integers(0, n + 1))
        confidence = float(rng.uniform(0.5, 0.995))
        est = metrics.wilson_interval(k, n, confidence)
        low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
        assert est.value == k / n and est.n == n
        assert est.low == pytest.approx(low, abs=1e-12) and est.high == pytest.approx(
            high, abs=1e-12
        )
    # 40 of 40 right: centre (1 + z^2/80) / (1 + z^2/40), half z^2/80 / (1 + z^2/40) * 2
    z2 = 1.959963984540054**2
    est = metrics.wilson_interval(40, 40)
    assert est.high == 1.0 and est.low == pytest.approx(1 / (1 + z2 / 40), rel=1e-12)


@pytest.mark.parametrize(
    "args, message",
    [((3, 2), "successes <= n"), ((-1, 5), "successes <= n"), ((1, 0), "n >= 1"),
     ((0.5, 4), "whole number"), ((1, 4, 1.0), "confidence")],
)  # fmt: skip
def test_wilson_interval_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        metrics.wilson_interval(*args)
