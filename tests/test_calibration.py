"""minift.metrics.calibration: ECE, MCE, reliability bins and the Brier score, by hand and
against a direct float64 loop over the bins."""

import numpy as np
import pytest
import torch

from minift.metrics import calibration as C


def test_ece_by_hand():
    # 2 bins, (0, 0.5] and (0.5, 1]. Bin 1: confidences 0.2, 0.4 (mean 0.3), one right
    # (accuracy 0.5): gap 0.2. Bin 2: 0.6, 0.8, 1.0 (mean 0.8), all right: gap 0.2...
    # and one more at 0.9 wrong: 0.6, 0.8, 0.9, 1.0 (mean 0.825), 3 right (0.75): gap 0.075.
    conf = [0.2, 0.4, 0.6, 0.8, 0.9, 1.0]
    hit = [1, 0, 1, 1, 0, 1]
    r = C.reliability(conf, hit, n_bins=2)
    assert r.count.tolist() == [2, 4]
    assert r.confidence.tolist() == pytest.approx([0.3, 0.825])
    assert r.accuracy.tolist() == pytest.approx([0.5, 0.75])
    assert r.ece == pytest.approx(2 / 6 * 0.2 + 4 / 6 * 0.075)
    assert r.mce == pytest.approx(0.2)


def test_bin_edges_are_right_closed_and_zero_joins_the_first_bin():
    r = C.reliability([0.0, 0.1, 0.1000001, 0.5, 1.0], [0, 0, 0, 0, 1], n_bins=10)
    assert r.count.tolist() == [2, 1, 0, 0, 1, 0, 0, 0, 0, 1]
    # 0.1 * 3 is the edge 0.30000000000000004 itself (np.linspace's), whose 10 x is above 3:
    # it must still close the bin (0.2, 0.3], as 0.6 and 0.7 computed the same way must
    r = C.reliability([0.1 * 3, 0.1 * 6, 0.1 * 7], [1, 1, 1], n_bins=10)
    assert r.count.tolist() == [0, 0, 1, 0, 0, 1, 1, 0, 0, 0]


def test_perfectly_calibrated_and_overconfident():
    assert C.expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    # always 0.9 sure, right half the time: ECE 0.4
    assert C.expected_calibration_error([0.9] * 10, [1, 0] * 5) == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(10))
def test_matches_a_direct_loop_on_random_probabilities(seed):
    rng = np.random.default_rng(seed)
    n, k, m = int(rng.integers(5, 300)), int(rng.integers(2, 7)), int(rng.integers(1, 20))
    logits = rng.normal(size=(n, k)) * rng.uniform(0.1, 4)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, k, size=n)
    r = C.calibration_from_probs(torch.tensor(probs), labels, n_bins=m)
    conf, right = probs.max(1), (probs.argmax(1) == labels)
    ece, gaps = 0.0, []
    edges = np.linspace(0, 1, m + 1)
    for b in range(m):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            gap = abs(right[inside].mean() - conf[inside].mean())
            ece += inside.sum() / n * gap
            gaps.append(gap)
    assert r.ece == pytest.approx(ece, abs=1e-12)
    assert r.mce == pytest.approx(max(gaps), abs=1e-12)
    onehot = np.eye(k)[labels]
    assert C.brier_score(probs, labels) == pytest.approx(((probs - onehot) ** 2).sum(1).mean())


def test_rows_skip_empty_bins():
    rows = C.reliability([0.95, 0.96], [1, 0], n_bins=4).rows()
    assert rows == [{"bin": "(0.75, 1.00]", "count": 2, "confidence": pytest.approx(0.955), "accuracy": 0.5}]  # fmt: skip


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: C.reliability([0.5, 0.6], [1]), "different lengths"),
        (lambda: C.reliability([], []), "empty"),
        (lambda: C.reliability([1.5], [1]), "in \\[0, 1\\]"),
        (lambda: C.reliability([0.5], [2]), "1 \\(right\\) or 0"),
        (lambda: C.reliability([0.5], [1], n_bins=0), "n_bins"),
        (lambda: C.calibration_from_probs([[2.0, -1.0]], [0]), "distribution"),
        (lambda: C.calibration_from_probs([[0.5, 0.5]], [2]), "class indices"),
        (lambda: C.brier_score([0.5, 0.5], [0]), "2-D"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
