"""minift.metrics.classification against scikit-learn (a test-only dependency)."""

import warnings

import numpy as np
import pytest
import torch

from minift import metrics

sk = pytest.importorskip("sklearn.metrics")


def random_case(seed):
    """Labels of 2-6 classes, often imbalanced, predictions that often miss classes."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.choice([1, 2, 5, 17, 60, 300]))
    weights = rng.dirichlet(np.full(k, 0.5 if seed % 2 else 5.0))  # odd seeds: imbalanced
    y_true = rng.choice(k, size=n, p=weights)
    predicted_classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice(predicted_classes, size=n))
    if seed % 3 == 0:  # predictions drawn from a subset of the classes only
        y_pred = rng.choice(predicted_classes, size=n)
    return y_true + int(rng.integers(-2, 3)), y_pred + 0  # shifted labels, negatives too


def sk_quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


HAND_CASES = [
    ([0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1]),  # the scikit-learn user guide's example
    ([1, 1, 1, 1], [1, 1, 1, 1]),  # one class, all right: MCC undefined
    ([0, 0, 0, 0], [1, 1, 1, 1]),  # one class, all wrong
    ([0, 1, 0, 1], [1, 0, 1, 0]),  # binary, always wrong: MCC -1
    ([0, 1, 1, 0], [0, 1, 1, 0]),  # binary, perfect
    ([5], [5]),  # one example
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # majority guess
    ([0, 1, 2, 3], [3, 3, 3, 3]),  # classes predicted never
    ([0, 0, 1, 1], [2, 2, 3, 3]),  # predicted classes absent from y_true
]
CASES = [random_case(seed) for seed in range(40)] + HAND_CASES


@pytest.mark.parametrize("y_true,y_pred", CASES)
def test_every_metric_matches_scikit_learn(y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # minift's metrics warn about nothing
        ours = {
            "accuracy": metrics.accuracy(y_true, y_pred),
            "balanced": metrics.balanced_accuracy(y_true, y_pred),
            "mcc": metrics.matthews_corrcoef(y_true, y_pred),
            "cm": metrics.confusion_matrix(y_true, y_pred),
        }
        for average in ("micro", "macro", "weighted", None):
            ours[average] = metrics.precision_recall_f1(y_true, y_pred, average=average)
    assert ours["accuracy"] == sk.accuracy_score(y_true, y_pred)
    assert ours["balanced"] == pytest.approx(
        sk_quiet(sk.balanced_accuracy_score, y_true, y_pred), abs=1e-12
    )
    assert ours["mcc"] == pytest.approx(sk_quiet(sk.matthews_corrcoef, y_true, y_pred), abs=1e-12)
    np.testing.assert_array_equal(ours["cm"], sk_quiet(sk.confusion_matrix, y_true, y_pred))
    for average in ("micro", "macro", "weighted", None):
        p, r, f, _ = sk.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        np.testing.assert_allclose(ours[average], (p, r, f), rtol=0, atol=1e-12)
        assert metrics.precision(y_true, y_pred, average=average) == pytest.approx(p, abs=1e-12)
        assert metrics.recall(y_true, y_pred, average=average) == pytest.approx(r, abs=1e-12)
        assert metrics.f1(y_true, y_pred, average=average) == pytest.approx(f, abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_given_labels_match_scikit_learn(seed):
    y_true, y_pred = random_case(seed)
    rng = np.random.default_rng(100 + seed)
    seen = np.unique(np.concatenate([y_true, y_pred]))
    labels = rng.permutation(np.concatenate([seen, [seen.max() + 1]]))  # reordered, one unseen
    labels = labels[: max(2, len(labels) - int(rng.integers(0, 2)))]  # sometimes one dropped
    if not np.isin(y_true, labels).any():
        labels = np.concatenate([labels, y_true[:1]])
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred, labels=labels),
        sk.confusion_matrix(y_true, y_pred, labels=labels),
    )
    for average in ("micro", "macro", "weighted", None):
        p, r, f, _ = sk.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        ours = metrics.precision_recall_f1(y_true, y_pred, labels=labels, average=average)
        np.testing.assert_allclose(ours, (p, r, f), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_binary_average_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    y_true = (rng.random(n) < rng.random()).astype(int)
    y_pred = (rng.random(n) < rng.random()).astype(int)
    for pos_label in (0, 1):
        p, r, f, _ = sk.precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=pos_label, zero_division=0
        )
        ours = metrics.precision_recall_f1(y_true, y_pred, average="binary", pos_label=pos_label)
        np.testing.assert_allclose(ours, (p, r, f), rtol=0, atol=1e-12)


def test_zero_division_value_is_used_where_a_denominator_is_zero():
    y_true, y_pred = [0, 0, 1], [0, 0, 0]  # class 1 never predicted: its precision is 0/0
    p, r, f = metrics.precision_recall_f1(y_true, y_pred, average=None)
    np.testing.assert_array_equal(p, [2 / 3, 0.0])
    np.testing.assert_array_equal(r, [1.0, 0.0])
    p1, _, _ = metrics.precision_recall_f1(y_true, y_pred, average=None, zero_division=1.0)
    np.testing.assert_array_equal(p1, [2 / 3, 1.0])
    skp = sk.precision_score(y_true, y_pred, average=None, zero_division=1.0)
    np.testing.assert_array_equal(p1, skp)


def test_hand_computed_values():
    # the user guide's example: true 0,1,2,0,1,2 / pred 0,2,1,0,0,1
    y_true, y_pred = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1]
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred), [[2, 0, 0], [1, 0, 1], [0, 2, 0]]
    )
    p, r, f = metrics.precision_recall_f1(y_true, y_pred, average=None)
    np.testing.assert_allclose(p, [2 / 3, 0, 0])
    np.testing.assert_allclose(f, [0.8, 0, 0])
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(1 / 3)
    assert metrics.balanced_accuracy(y_true, y_pred) == pytest.approx(1 / 3)
    # majority guess on 9:1 data: accuracy 0.9, balanced accuracy 0.5, MCC 0 (undefined)
    y_true, y_pred = [0] * 9 + [1], [0] * 10
    assert metrics.accuracy(y_true, y_pred) == 0.9
    assert metrics.balanced_accuracy(y_true, y_pred) == 0.5
    assert metrics.matthews_corrcoef(y_true, y_pred) == 0.0
    assert metrics.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    # binary MCC (TP=2, TN=1, FP=1, FN=0): (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12)
    assert metrics.matthews_corrcoef([1, 1, 0, 0], [1, 1, 1, 0]) == pytest.approx(2 / 12**0.5)


def test_tensors_arrays_and_lists_agree():
    y_true, y_pred = [0, 1, 2, 2, 1], [0, 2, 2, 2, 1]
    expected = metrics.precision_recall_f1(y_true, y_pred, average="macro")
    for convert in (np.array, torch.tensor, lambda x: np.array(x, dtype=np.uint8)):
        assert metrics.precision_recall_f1(convert(y_true), convert(y_pred)) == expected
    assert metrics.accuracy(torch.tensor([True, False]), torch.tensor([True, True])) == 0.5


@pytest.mark.parametrize(
    "y_true,y_pred,message",
    [
        ([0, 1, 2], [0, 1], "different lengths"),
        ([], [], "empty"),
        ([[0, 1]], [[0, 1]], "1-D"),
        ([0.0, 1.0], [0.2, 0.9], "integer class labels"),
        (["a", "b"], ["a", "b"], "integer class labels"),
    ],
)
def test_bad_input_is_a_clear_error(y_true, y_pred, message):
    for fn in (
        metrics.accuracy,
        metrics.balanced_accuracy,
        metrics.matthews_corrcoef,
        metrics.confusion_matrix,
        metrics.f1,
    ):
        with pytest.raises(ValueError, match=message):
            fn(y_true, y_pred)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="average must be one of"):
        metrics.f1([0, 1], [0, 1], average="samples")
    with pytest.raises(ValueError, match="at most 2 classes"):
        metrics.f1([0, 1, 2], [0, 1, 2], average="binary")
    with pytest.raises(ValueError, match="pos_label=1"):
        metrics.f1([0, 2], [0, 2], average="binary")
    with pytest.raises(ValueError, match="duplicates"):
        metrics.confusion_matrix([0, 1], [0, 1], labels=[0, 0, 1])
    with pytest.raises(ValueError, match="none of the given labels"):
        metrics.confusion_matrix([0, 1], [0, 1], labels=[7])
