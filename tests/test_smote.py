"""SMOTE against imbalanced-learn: the same neighbours, and for the same random draws the
same synthetic rows; minift's own draws keep the interpolation property and are uniform
over (row, neighbour) pairs and gaps."""

import numpy as np
import pytest
import torch
from imblearn.over_sampling import SMOTE
from scipy import stats
from sklearn.neighbors import NearestNeighbors

from minift.errors import UserError
from minift.imbalance import interpolate, nearest_neighbours, smote
from minift.imbalance.smote import draw_pairs, smote_class


def skewed_data(seed: int, counts=(41, 13, 9), dim: int = 7):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 1.0 + 0.3 * c, size=(n, dim)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return X, y


@pytest.mark.parametrize("k", [1, 3, 5])
def test_neighbours_equal_scikit_learn(k):
    X, _ = skewed_data(k)
    ref = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    assert torch.equal(nearest_neighbours(torch.from_numpy(X), k), torch.from_numpy(ref))


@pytest.mark.parametrize("seed,k", [(0, 5), (7, 3), (123, 2)])
def test_same_draws_give_imbalanced_learn_rows(seed, k):
    X, y = skewed_data(seed)
    X_ref, y_ref = SMOTE(k_neighbors=k, random_state=seed).fit_resample(X, y)
    n = len(y)
    assert np.array_equal(X_ref[:n], X)  # the originals first, unchanged
    top = np.bincount(y).max()
    start = n
    for c in sorted(set(y.tolist()) - {int(np.argmax(np.bincount(y)))}):
        Xc = torch.from_numpy(X[y == c])
        n_new = top - len(Xc)
        # imbalanced-learn reseeds an integer random_state per class and draws the pair
        # index, then the gaps; replaying its draws through minift's interpolation:
        rs = np.random.RandomState(seed)
        pair = torch.from_numpy(rs.randint(0, len(Xc) * k, size=n_new))
        gaps = torch.from_numpy(rs.uniform(size=n_new))
        ours = interpolate(Xc, nearest_neighbours(Xc, k), pair // k, pair % k, gaps)
        block = X_ref[start : start + n_new]
        assert np.all(y_ref[start : start + n_new] == c)
        np.testing.assert_allclose(ours.numpy(), block, rtol=0, atol=1e-12)
        start += n_new
    assert start == len(y_ref)


def on_a_neighbour_segment(X, nbrs, s, tol=1e-9):
    """True when s = x_i + u (x_j - x_i) for some row i, j among its neighbours, u in [0, 1)."""
    for i in range(len(X)):
        for j in nbrs[i].tolist():
            d = X[j] - X[i]
            u = float((s - X[i]) @ d / (d @ d))
            if -tol <= u < 1 + tol and float(torch.linalg.norm(X[i] + u * d - s)) < tol:
                return True
    return False


def test_every_synthetic_row_lies_on_a_segment_to_a_k_nearest_neighbour():
    X, y = skewed_data(3)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    k = 4
    X_res, y_res = smote(X, y, k=k, seed=3)
    counts = torch.bincount(y_res)
    assert counts.tolist() == [41, 41, 41]
    assert torch.equal(X_res[: len(X)], X)
    for c in (1, 2):
        Xc = X[y == c]
        nbrs = nearest_neighbours(Xc, k)
        made = X_res[len(X) :][y_res[len(X) :] == c]
        assert all(on_a_neighbour_segment(Xc, nbrs, s) for s in made)
        # and not on a segment to a farther row: the k-th neighbour rule is used
        far = torch.argsort(torch.cdist(Xc, Xc), dim=1)[:, k + 1 :]
        assert not all(on_a_neighbour_segment(Xc, far, s) for s in made)


def test_draws_are_uniform_over_pairs_and_gaps_and_make_the_rows():
    m, k, n = 6, 3, 18_000
    rows, cols, gaps = draw_pairs(m, k, n, torch.Generator().manual_seed(5))
    counts = torch.bincount(rows * k + cols, minlength=m * k).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(gaps.numpy(), "uniform").pvalue > 1e-3
    assert 0 <= float(gaps.min()) and float(gaps.max()) < 1
    Xc = torch.randn(m, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    made = smote_class(Xc, n, k, torch.Generator().manual_seed(5))
    expected = interpolate(Xc, nearest_neighbours(Xc, k), rows, cols, gaps)
    assert torch.equal(made, expected)


def test_the_same_seed_gives_the_same_rows_and_another_does_not():
    X, y = skewed_data(1)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    a, b, c = smote(X, y, seed=2), smote(X, y, seed=2), smote(X, y, seed=3)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_targets_choose_how_many_rows_each_class_ends_with():
    X, y = skewed_data(2)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    _, y_res = smote(X, y, k=2, targets={2: 20})
    assert torch.bincount(y_res).tolist() == [41, 13, 20]


def test_bad_inputs_are_clear_errors():
    X, y = skewed_data(4, counts=(20, 4, 1))
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    with pytest.raises(UserError, match="at least 6 rows of class 1, it has 4"):
        smote(X, y, k=5, targets={1: 20})
    with pytest.raises(UserError, match="has one"):
        smote(X, y, k=3, targets={2: 20})
    with pytest.raises(UserError, match="k >= 1"):
        nearest_neighbours(X, 0)
    with pytest.raises(UserError, match="more than its target"):
        smote(X, y, k=2, targets={0: 5})
    with pytest.raises(UserError, match="features"):
        smote(X[:, 0], y)
