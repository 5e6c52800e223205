"""The precision-recall curve and average precision against scikit-learn's, with ties."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from sklearn.metrics import precision_recall_curve as sk_curve

from minift.errors import UserError
from minift.imbalance.pr_curve import average_precision, precision_recall_curve


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_curve_and_ap_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = 53 + 17 * seed
    y = rng.random(n) < 0.15
    y[0] = True
    # rounded scores make ties, which both must treat as one threshold
    s = np.round(rng.normal(size=n) + 1.2 * y, 1 if seed % 2 else 3)
    p_ref, r_ref, t_ref = sk_curve(y, s)
    p, r, t = precision_recall_curve(torch.from_numpy(s), torch.from_numpy(y))
    np.testing.assert_allclose(p.numpy(), p_ref, rtol=1e-12)
    np.testing.assert_allclose(r.numpy(), r_ref, rtol=1e-12)
    np.testing.assert_allclose(t.numpy(), t_ref, rtol=1e-12)
    ap = average_precision(torch.from_numpy(s), torch.from_numpy(y))
    assert abs(ap - average_precision_score(y, s)) < 1e-12


def test_a_perfect_ranking_has_ap_one_and_bad_inputs_are_errors():
    assert average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 1, 0])) == 1.0
    with pytest.raises(UserError, match="no positive"):
        precision_recall_curve(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]))
    with pytest.raises(UserError, match="as many scores"):
        precision_recall_curve(torch.tensor([0.1]), torch.tensor([0, 1]))
