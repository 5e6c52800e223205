"""Ensembles: averaging, fitted weights, stacking against scikit-learn, the gate, soups."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from minift.ensemble import (
    GatingNetwork,
    Stacker,
    average_state,
    fit_gate,
    fit_weights,
    greedy_soup,
    mixture,
    nll,
    uniform_average,
    uniform_soup,
    weighted_average,
)
from minift.errors import UserError


def dirichlet(m: int, n: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=(m, n))


def members_with_truth(n: int, c: int, seed: int):
    """Member 0 puts 0.7 on the truth; member 1 is noise: a good and a useless member."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    good = np.full((n, c), 0.3 / (c - 1))
    good[np.arange(n), y] = 0.7
    return np.stack([good, rng.dirichlet(np.ones(c), n)]), y


def test_uniform_average_is_the_mean_of_member_probabilities():
    p = dirichlet(4, 13, 5, seed=1)
    assert np.allclose(uniform_average(p).numpy(), p.mean(0), rtol=0, atol=1e-15)
    one_hot = np.eye(4)[2]
    assert np.allclose(weighted_average(p, one_hot).numpy(), p[2], rtol=0, atol=1e-15)


def test_fitted_weights_trust_the_good_member_and_never_lose_to_a_vertex():
    p, y = members_with_truth(200, 4, seed=2)
    w = fit_weights(p, y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all() and w[0] > 0.9
    fitted = nll(weighted_average(p, w), y)
    assert fitted <= nll(uniform_average(p), y) + 1e-9
    assert all(fitted <= nll(torch.as_tensor(p[m]), y) + 1e-9 for m in range(2))


def test_stacking_equals_scikit_learn_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    p = dirichlet(3, 60, 4, seed=3)
    y = np.random.default_rng(3).integers(0, 4, 60)
    y[:4] = np.arange(4)  # every class present
    ours = Stacker(l2=0.5).fit(p, y)
    feats = Stacker.features(p).numpy()
    ref = sklearn.LogisticRegression(C=1 / 0.5, tol=1e-12, max_iter=10_000).fit(feats, y)
    assert np.allclose(ours.weight.numpy(), ref.coef_, atol=1e-4)
    assert np.allclose(ours.predict_proba(p).numpy(), ref.predict_proba(feats), atol=1e-6)


def test_cross_validation_shrinks_stacking_on_members_that_carry_no_signal():
    from minift.ensemble import choose_l2

    p = dirichlet(3, 90, 4, seed=9)
    y = np.random.default_rng(10).integers(0, 4, 90)  # independent of the members
    assert choose_l2(p, y, grid=(0.01, 1.0, 100.0)) == 100.0
    good, y_good = members_with_truth(90, 4, seed=11)
    assert choose_l2(good, y_good, grid=(0.01, 1.0, 100.0)) < 100.0
    with pytest.raises(UserError, match="at least 3 rows"):
        choose_l2(p[:, :2], y[:2])


def test_a_gate_pinned_to_one_member_equals_that_member_and_starts_uniform():
    p = dirichlet(3, 10, 4, seed=4)
    feats = torch.randn(10, 6, dtype=torch.float64)
    gate = GatingNetwork(6, 3).double()
    assert torch.allclose(mixture(p, gate(feats)), uniform_average(p), atol=1e-15)
    for m in range(3):
        assert torch.allclose(
            mixture(p, gate.pin(m)(feats)), torch.as_tensor(p[m]), rtol=0, atol=1e-15
        )


def test_the_gate_learns_which_member_to_trust_where():
    """Member 0 is right when feature 0 > 0, member 1 otherwise: the gate must route."""
    rng = np.random.default_rng(5)
    n, c = 300, 3
    feats = rng.normal(size=(n, 4))
    y = rng.integers(0, c, n)
    right = np.full((n, c), 0.05 / (c - 1))
    right[np.arange(n), y] = 0.95
    wrong = np.roll(right, 1, axis=1)
    first = feats[:, 0] > 0
    p = np.stack([np.where(first[:, None], right, wrong), np.where(first[:, None], wrong, right)])
    gate = fit_gate(torch.as_tensor(feats), p, y, steps=300)
    w = gate(torch.as_tensor(feats)).detach().numpy()
    assert w[first, 0].mean() > 0.8 and w[~first, 1].mean() > 0.8
    acc = (mixture(p, torch.as_tensor(w)).argmax(-1).numpy() == y).mean()
    assert acc > 0.9 > max((p[m].argmax(-1) == y).mean() for m in range(2))


def test_a_soup_of_identical_models_is_the_model_and_linear_soups_average_outputs():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    soup = uniform_soup([model, copy.deepcopy(model), copy.deepcopy(model)])
    assert torch.allclose(soup(x), model(x), rtol=0, atol=1e-14)
    a, b = nn.Linear(5, 3).double(), nn.Linear(5, 3).double()
    assert torch.allclose(uniform_soup([a, b])(x), (a(x) + b(x)) / 2, atol=1e-14)


def test_greedy_soup_is_never_worse_than_its_best_model_on_validation():
    torch.manual_seed(7)
    x = torch.randn(64, 5)
    target = nn.Linear(5, 2)
    y = target(x).detach()
    models = [copy.deepcopy(target) for _ in range(4)]
    with torch.no_grad():
        for i, m in enumerate(models):
            m.weight.add_(torch.randn_like(m.weight) * (0.05 if i < 2 else 2.0))
    score = lambda m: -float(((m(x) - y) ** 2).mean().detach())  # noqa: E731
    soup, chosen = greedy_soup(models, score)
    assert score(soup) >= max(score(m) for m in models)
    assert set(chosen) <= {0, 1, 2, 3} and 2 not in chosen and 3 not in chosen


def test_bad_inputs_are_named():
    p = dirichlet(2, 5, 3, seed=8)
    with pytest.raises(UserError, match="members, examples, classes"):
        uniform_average(p[0])
    with pytest.raises(UserError, match="sum to 1"):
        uniform_average(p * 2)
    with pytest.raises(UserError, match=r"labels must lie in \[0, 2\]"):
        fit_weights(p, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(UserError, match="summing to 1"):
        weighted_average(p, [0.5, 0.6])
    with pytest.raises(UserError, match="not fitted"):
        Stacker().predict_proba(p)
    with pytest.raises(UserError, match="other parameters"):
        average_state([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    with pytest.raises(UserError, match="at least one"):
        uniform_soup([])
    with pytest.raises(UserError, match="examples, members"):
        mixture(p, torch.ones(5, 3) / 3)
