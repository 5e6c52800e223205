"""The converged linear probe: the same optimum as scikit-learn's logistic regression,
an l2 chosen on the training rows only, and a head that beats SGD-trained heads."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from minift.data.tasks import DEFAULT_TASK
from minift.peft.probe import cross_validated_l2, fit_logistic_regression
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task


def blobs(n=203, c=13, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, c, generator=g, dtype=torch.float64) * 1.5
    y = torch.randint(0, k, (n,), generator=g)
    scale = torch.rand(c, generator=g, dtype=torch.float64) * 5 + 0.1  # unequal feature scales
    X = (centers[y] + torch.randn(n, c, generator=g, dtype=torch.float64)) * scale + 3.0
    return X, y


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_fit_matches_scikit_learn_on_standardised_features(l2):
    X, y = blobs()
    W, b = fit_logistic_regression(X, y, 5, l2)
    mu, sd = X.mean(0), X.std(0, unbiased=False)
    # ours: mean CE + l2 ||W||^2 on z; scikit-learn: sum CE + ||W||^2 / (2C)  =>  C = 1 / (2 n l2)
    ref = LogisticRegression(C=1 / (2 * len(X) * l2), tol=1e-12, max_iter=10_000)
    ref.fit(((X - mu) / sd).numpy(), y.numpy())
    ours = torch.softmax(X @ W.T + b, -1).numpy()
    theirs = ref.predict_proba(((X - mu) / sd).numpy())
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_cross_validation_uses_only_the_rows_it_is_given_and_breaks_ties_to_more_penalty():
    X, y = blobs(n=60)
    l2, scores = cross_validated_l2(X, y, 5, grid=(1e-4, 1e-3, 1e-2))
    assert set(scores) == {1e-4, 1e-3, 1e-2}
    best = max(scores.values())
    assert l2 == max(k for k, v in scores.items() if v == best)
    with pytest.raises(ValueError, match="folds"):
        cross_validated_l2(X[:2], y[:2], 5, folds=3)


def test_bad_inputs_are_value_errors():
    X, y = blobs(n=20)
    with pytest.raises(ValueError, match="l2"):
        fit_logistic_regression(X, y, 5, -1.0)
    with pytest.raises(ValueError, match="features"):
        fit_logistic_regression(X, y[:-1], 5, 1e-3)


def test_probe_method_fits_once_and_beats_its_own_starting_head():
    base, enc = load_base(progress=False, verbose=False)
    task = get_task(DEFAULT_TASK)
    config = FinetuneConfig(method="probe", train=train_config(steps=60, progress=False))
    r = finetune(task, base, enc, config)
    before, after = r.history[0], r.history[-1]
    assert [h["step"] for h in r.history] == [0, 1]  # before the fit, after it
    assert after["val_loss"] < before["val_loss"]
    assert r.fit["l2"] in r.fit["cv_accuracy"] and r.fit["rows"] == len(task.train)
    assert r.trainable == base.config.n_embd * task.num_labels + task.num_labels
    # a converged head fits its training rows at least as well as the cross-validated
    # held-out accuracy says a fresh row is predicted
    assert r.fit["train_accuracy"] >= max(r.fit["cv_accuracy"].values())
    assert len(r.val_scores) == len(task.val) and np.mean(r.val_scores) == pytest.approx(r.metric)
