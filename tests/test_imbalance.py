"""The imbalance remedies: losses against float64 formulas and scikit-learn's class
weights, the samplers' class frequencies, the skewed task, a head fitted with each remedy
on skewed data, `finetune --balance`, and the bad inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from minift.errors import UserError
from minift.imbalance import (
    BALANCES,
    adjust_logits,
    class_priors,
    class_weights,
    fit_head,
    focal_loss,
    logit_adjusted_loss,
    oversample_indices,
    random_oversample,
    skew_counts,
    skew_task,
    undersample_indices,
    weighted_cross_entropy,
)
from minift.metrics import balanced_accuracy


def random_problem(n=37, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, K, dtype=torch.float64, generator=g) * 3 + 0.7
    y = torch.randint(0, K, (n,), generator=g)
    return z, y


def test_class_weights_equal_scikit_learns_balanced_weights():
    y = np.array([0] * 40 + [1] * 7 + [2] * 13 + [3] * 2)
    ref = compute_class_weight("balanced", classes=np.arange(4), y=y)
    np.testing.assert_allclose(class_weights(torch.from_numpy(y), 4).numpy(), ref, rtol=1e-12)


def test_weighted_cross_entropy_is_the_weighted_mean_of_row_losses():
    z, y = random_problem()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    rows = -F.log_softmax(z, -1)[torch.arange(len(y)), y]
    expected = (w[y] * rows).sum() / w[y].sum()
    assert torch.allclose(weighted_cross_entropy(z, y, w), expected, rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
def test_focal_loss_against_its_formula_in_float64(gamma):
    z, y = random_problem(seed=int(gamma * 10))
    p = torch.softmax(z, -1)[torch.arange(len(y)), y]
    alpha = torch.rand(5, dtype=torch.float64)
    expected = (-alpha[y] * (1 - p) ** gamma * torch.log(p)).mean()
    assert torch.allclose(focal_loss(z, y, gamma, alpha), expected, rtol=1e-10)
    if gamma == 0:
        assert torch.allclose(focal_loss(z, y, 0.0), F.cross_entropy(z, y), rtol=1e-12)


def test_focal_loss_keeps_the_small_loss_of_confident_rows():
    z = torch.tensor([[40.0, 0.0]], dtype=torch.float64)  # p_y = 1 - 4e-18
    y = torch.tensor([0])
    loss = focal_loss(z, y, 1.0)
    assert loss > 0 and math.isclose(float(loss), math.exp(-40) ** 2, rel_tol=1e-6)


def test_focal_gradient_matches_finite_differences():
    z, y = random_problem(n=6, K=3, seed=4)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: focal_loss(t, y, 2.0), (z,))


def test_logit_adjusted_loss_and_post_hoc_adjustment():
    z, y = random_problem(seed=2)
    pi = class_priors(torch.tensor([0] * 20 + [1] * 5 + [2] * 3 + [3] * 9 + [4]), 5)
    assert torch.allclose(
        logit_adjusted_loss(z, y, pi, tau=0.5), F.cross_entropy(z + 0.5 * pi.log(), y), rtol=1e-12
    )
    assert torch.allclose(adjust_logits(z, pi), z - pi.log(), rtol=1e-12)
    # the adjustment moves predictions towards the rare classes, never away from them
    rare = int(pi.argmin())
    assert (adjust_logits(z, pi).argmax(-1) == rare).sum() >= (z.argmax(-1) == rare).sum()


def test_oversampled_batches_see_each_class_equally_often():
    labels = [0] * 300 + [1] * 30 + [2] * 3
    idx = oversample_indices(labels, 3, 30_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(torch.tensor(labels)[idx], minlength=3).double() / len(idx)
    sd = math.sqrt((1 / 3) * (2 / 3) / len(idx))
    assert torch.all((freq - 1 / 3).abs() < 5 * sd), freq
    assert set(idx[torch.tensor(labels)[idx] == 2].tolist()) == {330, 331, 332}


def test_random_over_and_under_sampling_reach_equal_counts():
    labels = torch.tensor([0] * 23 + [1] * 4 + [2] * 9)
    g = torch.Generator().manual_seed(1)
    over = random_oversample(labels, 3, g)
    assert torch.bincount(labels[over]).tolist() == [23, 23, 23]
    assert set(range(len(labels))) <= set(over.tolist())  # every original row kept
    under = undersample_indices(labels, 3, g)
    assert torch.bincount(labels[under]).tolist() == [4, 4, 4]
    assert len(set(under.tolist())) == 12  # no row twice


def test_skew_profile_and_task():
    assert skew_counts(6, 150, 20) == [150, 82, 45, 25, 14, 8]
    assert skew_counts(2, 100, 1) == [100, 100]
    import minift.recipes.tasks  # noqa: F401  registers the skewed task
    from minift.data.tasks import get_task

    base = get_task("stdlib-package", seed=0, per_class=150)
    skewed = get_task("stdlib-package-skewed", seed=0)
    assert skewed.val == base.val
    counts = torch.bincount(torch.tensor([r["label"] for r in skewed.train])).tolist()
    assert counts == [150, 82, 45, 25, 14, 8]
    assert all(r in base.train for r in skewed.train)


def gaussian_skew(seed, counts=(400, 20), dim=6, shift=1.6):
    g = torch.Generator().manual_seed(seed)
    X = torch.cat([torch.randn(n, dim, generator=g, dtype=torch.float64) + shift * c * torch.ones(dim) / math.sqrt(dim) for c, n in enumerate(counts)])  # fmt: skip
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return X, y


def test_every_remedy_raises_balanced_accuracy_over_the_plain_fit():
    X, y = gaussian_skew(0)
    X_test, y_test = gaussian_skew(1, counts=(2000, 2000))
    scores = {}
    for balance in BALANCES:
        W, b = fit_head(X, y, 2, balance, l2=1e-3, seed=0)
        scores[balance] = balanced_accuracy(y_test.numpy(), (X_test @ W.T + b).argmax(-1).numpy())
    # two unit Gaussians 1.6 apart: the balanced Bayes rule scores Phi(0.8) = 0.79; the
    # plain fit, pulled towards the 20x majority, leaves most of the minority behind
    assert scores["none"] < 0.70
    for balance in BALANCES[1:]:
        assert scores[balance] > scores["none"] + 0.05, scores


def test_finetune_balance_with_the_probe_and_a_trained_backbone():
    from minift.recipes.finetune import FinetuneConfig, finetune, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    base, enc = load_base(progress=False, verbose=False)
    task = get_task("stdlib-package-skewed", seed=0, n_max=120)
    cfg = FinetuneConfig(method="probe", balance="smote", train=train_config(progress=False))
    res = finetune(task, base, enc, cfg)
    assert res.fit["balance"] == "smote"
    last = res.history[-1]
    assert {"val_balanced_accuracy", "val_macro_f1", "val_min_recall"} <= set(last)
    # validation is balanced, so its accuracy is its balanced accuracy
    # (val_accuracy is a float32 mean of 240 rows: equal to ~1e-7)
    assert math.isclose(last["val_accuracy"], last["val_balanced_accuracy"], abs_tol=1e-6)
    cfg = FinetuneConfig(method="bitfit", balance="oversample", train=train_config(steps=2, eval_every=2, progress=False))  # fmt: skip
    assert finetune(task, base, enc, cfg).history[-1]["val_macro_f1"] >= 0
    with pytest.raises(UserError, match="needs a frozen backbone"):
        finetune(task, base, enc, FinetuneConfig(method="lora", balance="smote"))
    with pytest.raises(UserError, match="unknown balance method 'smote2'; choose one of"):
        finetune(task, base, enc, FinetuneConfig(method="full", balance="smote2"))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(UserError, match="imbalance ratio must be >= 1"):
        skew_counts(3, 10, 0.5)
    with pytest.raises(UserError, match="no training row"):
        class_weights(torch.tensor([0, 0, 2]), 3)
    with pytest.raises(UserError, match="no training row"):
        class_priors(torch.tensor([0, 0, 2]), 3)
    with pytest.raises(UserError, match="labels must lie in"):
        class_weights(torch.tensor([0, 3]), 3)
    with pytest.raises(UserError, match="gamma >= 0"):
        focal_loss(*random_problem(), gamma=-1.0)
    with pytest.raises(UserError, match="no row to resample"):
        undersample_indices(torch.tensor([0, 0, 2]), 3, torch.Generator())
    from minift.data.tasks import get_task

    with pytest.raises(UserError, match="too few rows"):
        skew_task(get_task("stdlib-package", seed=0, per_class=20), 4, n_max=100)
    with pytest.raises(UserError, match="only a classification task"):
        skew_task(get_task("sort-words", seed=0))


def test_linear_head_fit_equals_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from minift.train.features import fit_linear_head

    g = torch.Generator().manual_seed(3)
    n, C, K, l2 = 83, 7, 3, 1e-2
    X = torch.randn(n, C, dtype=torch.float64, generator=g) * 2 + 0.5
    y = (X[:, 0] + X[:, 1] ** 2 + torch.randn(n, dtype=torch.float64, generator=g) > 1.5).long()
    y[X[:, 2] > 1.0] = 2
    W, b = fit_linear_head(X, y, K, l2=l2, max_iter=500)
    Z = ((X - X.mean(0)) / X.std(0, unbiased=False)).numpy()
    # scikit-learn minimises sum CE + ||W||^2 / (2 C): ours is n times mean CE + l2 ||W||^2
    ref = LogisticRegression(C=1 / (2 * n * l2), tol=1e-12, max_iter=10_000).fit(Z, y.numpy())
    ours = torch.softmax(X @ W.T + b, -1).numpy()
    # two iterative solvers, each stopped at its own tolerance: they agree to ~1e-6
    np.testing.assert_allclose(ours, ref.predict_proba(Z), atol=1e-5)


def test_minift_finetune_balance_smote_needs_the_probe(capsys):
    import minift.cli

    argv = ["finetune", "--task", "stdlib-package-skewed", "--method", "lora", "--balance", "smote"]
    assert minift.cli.main(argv) == 2
    assert "needs a frozen backbone: use --method probe" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse lists the choices
        minift.cli.main(["finetune", "--balance", "smote2"])
    assert "invalid choice: 'smote2'" in capsys.readouterr().err
