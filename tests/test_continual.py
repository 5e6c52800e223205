"""minift.multitask.continual and .metrics: EWC's Fisher and penalty, L2-SP, the
reservoir buffer, and the accuracy-matrix summaries.

The Fisher is checked in float64 against per-example gradients computed another way
(torch.func's vmap of grad over the batch); the penalties against their formulas
written out with numpy; the buffer's uniformity against the binomial spread; ACC, BWT
and forgetting against values worked out by hand.
"""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from minift.multitask import (
    EWC,
    L2SP,
    ReservoirBuffer,
    average_accuracy,
    backward_transfer,
    fisher_diagonal,
    forgetting,
    stream_summary,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _data(n=23):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=g
    )


def test_fisher_diagonal_equals_per_example_brute_force():
    net, (x, y) = _net(), _data()
    fisher = fisher_diagonal(
        net, lambda m, ex: F.cross_entropy(m(ex[0][None]), ex[1][None]), zip(x, y)
    )
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss_one(p, xi, yi):
        return F.cross_entropy(functional_call(net, p, (xi[None],)), yi[None])

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    for name, g in per_example.items():
        expected = (g**2).mean(0)
        torch.testing.assert_close(fisher[name], expected, rtol=1e-12, atol=1e-15)
        # the squared mean gradient (the batch's) is a different, smaller quantity
        assert (g.mean(0) ** 2).sum() < expected.sum()


def test_fisher_skips_frozen_parameters_and_needs_examples():
    net, (x, y) = _net(), _data(3)
    net[0].weight.requires_grad_(False)
    fisher = fisher_diagonal(net, lambda m, ex: F.cross_entropy(m(ex[0][None]), ex[1][None]), zip(x, y))  # fmt: skip
    assert "0.weight" not in fisher and "2.weight" in fisher
    with pytest.raises(ValueError, match="at least one example"):
        fisher_diagonal(net, lambda m, ex: m(ex).sum(), [])


def test_ewc_penalty_zero_at_anchor_and_its_formula_elsewhere():
    net = _net()
    g = torch.Generator().manual_seed(2)
    fisher = {n: torch.rand(p.shape, generator=g, dtype=torch.float64) for n, p in net.named_parameters()}  # fmt: skip
    ewc = EWC(lam=3.0)
    ewc.consolidate(net, fisher)
    assert ewc.penalty(net).item() == 0.0
    anchor = {n: p.detach().numpy().copy() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    expected = (
        0.5
        * 3.0
        * sum(
            float(np.sum(fisher[n].numpy() * (p.detach().numpy() - anchor[n]) ** 2))
            for n, p in net.named_parameters()
        )
    )
    assert ewc.penalty(net).item() == pytest.approx(expected, rel=1e-12)
    # a second task adds its own term; its anchor is where the model is now
    ewc.consolidate(net, fisher)
    assert ewc.penalty(net).item() == pytest.approx(expected, rel=1e-12)
    # the penalty's gradient is lam * F * (theta - theta*), which pulls back to the anchor
    net.zero_grad()
    ewc.penalty(net).backward()
    w = net[0].weight
    torch.testing.assert_close(w.grad, 3.0 * fisher["0.weight"] * (w.detach() - torch.from_numpy(anchor["0.weight"])))  # fmt: skip
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        EWC(-1.0)


def test_l2sp_penalty():
    net = _net()
    l2 = L2SP(net, alpha=0.7, prefix="2.")
    assert l2.penalty(net).item() == 0.0
    with torch.no_grad():
        net[2].bias.add_(1.0)
        net[0].bias.add_(5.0)  # outside the prefix: not penalised
    assert l2.penalty(net).item() == pytest.approx(0.5 * 0.7 * 3.0)


def test_reservoir_keeps_a_uniform_sample():
    """Each of 100 stream items is kept in a 10-slot buffer with probability 0.1; over
    3000 seeded runs its count is Binomial(3000, 0.1): within 4.5 standard deviations."""
    n_items, capacity, runs = 100, 10, 3000
    kept = np.zeros(n_items)
    for seed in range(runs):
        buf = ReservoirBuffer(capacity, seed=seed)
        buf.extend(range(n_items))
        assert len(buf) == capacity and buf.seen == n_items
        kept[buf.items] += 1
    p = capacity / n_items
    sd = math.sqrt(runs * p * (1 - p))
    assert np.all(np.abs(kept - runs * p) <= 4.5 * sd), kept
    # early and late items alike: the first and last halves differ by noise only
    half_sd = math.sqrt(2 * 50 * runs * p * (1 - p))
    assert abs(kept[:50].sum() - kept[50:].sum()) <= 4.5 * half_sd


def test_reservoir_small_stream_and_bad_input():
    buf = ReservoirBuffer(5, seed=0)
    buf.extend("abc")
    assert buf.items == ["a", "b", "c"]
    assert set(buf.sample(20, random.Random(0))) <= {"a", "b", "c"}
    with pytest.raises(ValueError, match="capacity >= 1"):
        ReservoirBuffer(0)
    with pytest.raises(ValueError, match="empty"):
        ReservoirBuffer(2).sample(1, random.Random(0))


def test_accuracy_matrix_metrics_by_hand():
    R = [
        [0.9, 0.1, 0.2],
        [0.6, 0.8, 0.3],
        [0.5, 0.7, 0.85],
    ]
    assert average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.85) / 3)
    # BWT: (R[2][0] - R[0][0] + R[2][1] - R[1][1]) / 2 = (-0.4 - 0.1) / 2
    assert backward_transfer(R) == pytest.approx(-0.25)
    # forgetting: task 0: max(0.9, 0.6) - 0.5 = 0.4; task 1: max(0.1, 0.8) - 0.7 = 0.1
    assert forgetting(R) == pytest.approx(0.25)
    # forgetting differs from -BWT when a task peaks after it was learned
    R2 = [[0.5, 0.0], [0.7, 0.9]]
    assert backward_transfer(R2) == pytest.approx(0.2) and forgetting(R2) == pytest.approx(-0.2)
    R3 = [[0.5, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.6, 0.7]]
    assert forgetting(R3) == pytest.approx(((0.8 - 0.6) + (0.6 - 0.6)) / 2)
    assert backward_transfer(R3) == pytest.approx(((0.6 - 0.5) + 0.0) / 2)
    assert stream_summary([[0.7]]) == {"acc": 0.7, "bwt": 0.0, "forgetting": 0.0}
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[0.1, 0.2]])
