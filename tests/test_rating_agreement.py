"""Agreement and rank correlation, checked against the references (scikit-learn's Cohen's
kappa, statsmodels' Fleiss' kappa, the krippendorff package, scipy's rank correlations) on
fresh random data of awkward shapes, with missing ratings and ties, and against small
cases computed by hand."""

import math

import krippendorff
import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from minift.rating import (
    average_ranks,
    category_counts,
    cohen_kappa,
    coincidences,
    fleiss_kappa,
    kendall_tau,
    krippendorff_alpha,
    spearman,
)

SEEDS = [0, 1, 2, 3, 4]


def correlated_scores(rng, raters, items, categories=5, noise=1.0):
    """Ratings of a shared latent quality with noise (so agreement is neither 0 nor 1)."""
    latent = rng.normal(size=items) * 1.5
    x = latent[None, :] + noise * rng.normal(size=(raters, items))
    return np.clip(np.round(x + (categories + 1) / 2), 1, categories)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_scikit_learn(seed, weights):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(7, 61))
    a, b = correlated_scores(rng, 2, n)
    ours = cohen_kappa(a, b, weights)
    assert ours == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)
    # string labels (nominal) give the same unweighted kappa as their codes
    if weights is None:
        names = np.array(list("vwxyz"))
        assert cohen_kappa(names[a.astype(int) - 1], names[b.astype(int) - 1]) == pytest.approx(ours, abs=1e-12)  # fmt: skip


def test_cohen_kappa_by_hand():
    # 10 items: agree on 7 (4 x "y", 3 x "n"); rater a says y 6 times, b says y 5 times
    a = list("yyyyyynnnn")
    b = list("yyyynnynnn")
    p_o = 7 / 10
    p_e = 0.6 * 0.5 + 0.4 * 0.5
    assert cohen_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-15)
    # weighted, 3 categories: O = [[1,1,0],[0,1,0],[0,0,1]] -> sum |i-j| O = 1;
    # E = outer(rows [2,1,1], cols [1,2,1]) / 4, sum |i-j| E = (1*2 ... ) computed below
    a, b = [1, 1, 2, 3], [1, 2, 2, 3]
    E = np.outer([2, 1, 1], [1, 2, 1]) / 4
    W = np.abs(np.subtract.outer(np.arange(3), np.arange(3)))
    assert cohen_kappa(a, b, "linear") == pytest.approx(1 - 1 / (W * E).sum(), abs=1e-15)
    assert cohen_kappa([1, 2, 3], [1, 2, 3], "quadratic") == 1.0
    assert cohen_kappa([1, 2], [2, 1]) == pytest.approx(-1.0)


def test_cohen_kappa_bad_input():
    with pytest.raises(ValueError, match="weights must be one of"):
        cohen_kappa([1, 2], [1, 2], "cubic")
    with pytest.raises(ValueError, match="same length"):
        cohen_kappa([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="undefined"):
        cohen_kappa([3, 3, 3], [3, 3, 3])
    with pytest.raises(ValueError, match="no items"):
        cohen_kappa([], [])


@pytest.mark.parametrize("seed", SEEDS)
def test_fleiss_kappa_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    raters, items = int(rng.integers(2, 8)), int(rng.integers(5, 50))
    x = correlated_scores(rng, raters, items, categories=int(rng.integers(2, 7)))
    cats, table = category_counts(x)
    assert table.shape == (items, cats.size) and (table.sum(1) == raters).all()
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)  # fmt: skip


def test_fleiss_kappa_by_hand_and_bad_tables():
    # 3 items, 3 raters, 2 categories: P_i = 1, 1/3, 1; p = (5/9, 4/9)
    table = [[3, 0], [1, 2], [0, 3]]
    p_bar = (1 + 1 / 3 + 1) / 3
    p_e = (4 / 9) ** 2 + (5 / 9) ** 2
    assert fleiss_kappa(table) == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-15)
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([[2, 0], [1, 2]])
    with pytest.raises(ValueError, match="at least 2 ratings"):
        fleiss_kappa([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="undefined"):
        fleiss_kappa([[3, 0], [3, 0]])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_alpha_matches_the_reference_with_missing_ratings(seed, level):
    rng = np.random.default_rng(seed)
    raters, items = int(rng.integers(2, 7)), int(rng.integers(5, 45))
    x = correlated_scores(rng, raters, items, categories=int(rng.integers(3, 8)))
    x[rng.random(x.shape) < rng.uniform(0.1, 0.4)] = np.nan
    ref = krippendorff.alpha(reliability_data=x, level_of_measurement=level)
    assert krippendorff_alpha(x, level) == pytest.approx(ref, abs=1e-10)
    # non-integer interval values too
    if level == "interval":
        y = np.where(np.isnan(x), np.nan, x + 0.37 * rng.normal(size=x.shape))
        assert krippendorff_alpha(y, level) == pytest.approx(
            krippendorff.alpha(reliability_data=y, level_of_measurement=level), abs=1e-10
        )


def test_krippendorff_alpha_by_hand():
    # two raters, 4 units, nominal: values (1,1), (1,2), (2,2), (2,2).
    # coincidences: o11 = 2, o12 = o21 = 1, o22 = 4; n1 = 3, n2 = 5, n = 8
    # alpha = 1 - (n - 1) * (o12 + o21) / (n1 n2 + n2 n1) = 1 - 7 * 2 / 30
    x = np.array([[1, 1, 2, 2], [1, 2, 2, 2]], dtype=float)
    values, o = coincidences(x)
    assert values.tolist() == [1, 2] and o.tolist() == [[2, 1], [1, 4]]
    assert krippendorff_alpha(x, "nominal") == pytest.approx(1 - 7 * 2 / 30, abs=1e-15)
    # a unit rated once is not pairable: adding one changes nothing
    x1 = np.concatenate([x, [[3], [np.nan]]], axis=1)
    assert krippendorff_alpha(x1, "nominal") == pytest.approx(1 - 7 * 2 / 30, abs=1e-15)
    # perfect agreement is 1 on every level
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha([[1, 2, 5, np.nan], [1, 2, 5, 4]], level) == 1.0


def test_krippendorff_alpha_bad_input():
    with pytest.raises(ValueError, match="level must be one of"):
        krippendorff_alpha([[1, 2]], "ratio-ish")
    with pytest.raises(ValueError, match="no pairable"):
        krippendorff_alpha([[1, np.nan], [np.nan, 2]], "nominal")
    with pytest.raises(ValueError, match="undefined"):
        krippendorff_alpha([[4, 4], [4, 4]], "ordinal")
    with pytest.raises(ValueError, match="raters x units"):
        krippendorff_alpha([1, 2, 3], "nominal")


@pytest.mark.parametrize("seed", SEEDS)
def test_rank_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    ratings = rng.integers(1, 6, n).astype(float)  # a five-point scale: many ties
    auto = ratings + rng.normal(size=n)
    auto[: n // 4] = np.round(auto[: n // 4])  # ties in the automatic score too
    for x, y in ((ratings, auto), (auto, ratings), (ratings, rng.integers(1, 4, n))):
        assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
        assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y)[0], abs=1e-12)


def test_rank_correlations_by_hand():
    assert average_ranks([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    # x = 1,2,3 ; y = 1,3,2: pairs (12: +,+), (13: +,+), (23: +,-): C = 2, D = 1
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # tau-b with a tie in y: x = 1,2,3, y = 1,1,2: C = 2, D = 0, n0 = 3, n2 = 1
    assert kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(3 * 2))
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        spearman([1, 2, 3], [5, 5, 5])
    with pytest.raises(ValueError, match="constant"):
        kendall_tau([2, 2], [1, 3])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])
    with pytest.raises(ValueError, match="finite"):
        kendall_tau([1, float("nan")], [1, 2])
