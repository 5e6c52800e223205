"""The arithmetic of RLHF against hand computations and the papers' formulas: GAE,
whitening, PPO's clipped losses, the KL estimators and controller, Bradley-Terry, DPO."""

import math

import pytest
import torch

from minift.rlhf import ppo
from minift.rlhf.dpo import dpo_loss
from minift.rlhf.reward import bradley_terry_loss, pairwise_accuracy


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------- GAE
def test_gae_matches_a_hand_computed_example():
    # Row 0: three real tokens. Row 1: the response ended after two tokens; the third
    # column is padding whose reward and value (5, 9) must be ignored.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 1.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 0 by hand (gamma lambda = 0.72):
    # d2 = 1 - 0.3 = 0.7;  d1 = 0.9*0.3 - 0.4 = -0.13;  d0 = 0.9*0.4 - 0.5 = -0.14
    # A2 = 0.7;  A1 = -0.13 + 0.72*0.7 = 0.374;  A0 = -0.14 + 0.72*0.374 = 0.12928
    # Row 1: d1 = 2 - 1 = 1 (no value after the end);  d0 = 0.9*1 - 1 = -0.1
    # A1 = 1;  A0 = -0.1 + 0.72 = 0.62;  the padding's advantage is 0.
    expected = torch.tensor([[0.12928, 0.374, 0.7], [0.62, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)


def test_gae_with_lambda_one_gives_discounted_returns():
    torch.manual_seed(1)
    rewards, values = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    mask = torch.ones(3, 7)
    gamma = 0.95
    _, ret = ppo.gae(rewards, values, mask, gamma=gamma, lam=1.0)
    for t in range(7):  # lambda = 1: returns are the Monte Carlo discounted reward sums
        mc = sum(gamma ** (k - t) * rewards[:, k] for k in range(t, 7))
        torch.testing.assert_close(ret[:, t], mc)


def test_shape_rewards_puts_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = ppo.shape_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 2.0], [-0.25, -0.25 - 1.0, 0.0]])
    torch.testing.assert_close(r, expected)


# ---------------------------------------------------------------------------- whitening
def test_masked_whiten_uses_only_real_tokens():
    torch.manual_seed(2)
    x = torch.randn(4, 9, dtype=torch.float64) * 3 + 5
    mask = (torch.rand(4, 9) > 0.3).long()
    mask[0, 0] = 1
    real = x[mask.bool()]
    out = ppo.masked_whiten(x, mask)
    expected = (real - real.mean()) / real.std(unbiased=True)
    torch.testing.assert_close(out[mask.bool()], expected, atol=1e-6, rtol=1e-6)
    assert torch.all(out[~mask.bool()] == 0)
    kept = ppo.masked_whiten(x, mask, shift_mean=False)  # scaled, mean kept
    torch.testing.assert_close(kept[mask.bool()], expected + real.mean(), atol=1e-6, rtol=1e-6)


def test_masked_mean_and_var_match_the_selected_values():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert ppo.masked_mean(x, mask).item() == pytest.approx(2.5)
    assert ppo.masked_var(x, mask).item() == pytest.approx(
        torch.tensor([1.0, 2, 3, 4]).var().item()
    )
    torch.testing.assert_close(ppo.masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.5]))


# ---------------------------------------------------------------------------- PPO losses
def test_clipped_policy_loss_inside_and_outside_the_clip_range():
    eps = 0.2
    # (advantage, ratio, expected per-token loss = max(-A r, -A clip(r)))
    cases = [
        (1.0, 1.1, -1.1),  # inside the range: the plain surrogate
        (-2.0, 0.9, 1.8),
        (1.0, 1.5, -1.2),  # A > 0, ratio too high: clipped, no incentive to go further
        (1.0, 0.5, -0.5),  # A > 0, ratio low: unclipped (the pessimistic term)
        (-1.0, 1.5, 1.5),  # A < 0, ratio high: unclipped
        (-1.0, 0.5, 0.8),  # A < 0, ratio too low: clipped
    ]
    adv = torch.tensor([[c[0] for c in cases]], dtype=torch.float64)
    ratio = torch.tensor([[c[1] for c in cases]], dtype=torch.float64)
    old = torch.randn_like(ratio)
    new = (old + ratio.log()).requires_grad_(True)
    mask = torch.ones_like(adv)
    loss, stats = ppo.policy_loss(new, old, adv, mask, clip=eps)
    assert loss.item() == pytest.approx(sum(c[2] for c in cases) / len(cases))
    assert stats["clipfrac"] == pytest.approx(2 / 6)  # the two clipped cases
    loss.backward()
    # d/dlogp of -A r is -A r where unclipped; zero where the clipped branch wins.
    expected_grad = torch.tensor([[-1.1, 1.8, 0.0, -0.5, 1.5, 0.0]], dtype=torch.float64) / 6
    torch.testing.assert_close(new.grad, expected_grad)


def test_policy_loss_ignores_padding_and_reports_approx_kl():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    old = torch.tensor([[-1.2, -2.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = ppo.policy_loss(logp, old, adv, mask, clip=0.5)
    r0 = math.exp(0.2)
    assert loss.item() == pytest.approx((-r0 - 1.0) / 2)
    l0 = 0.2  # k3 of the new vs old policy on the real tokens: (e^-l - 1) + l
    assert stats["approx_kl"] == pytest.approx(((math.exp(-l0) - 1 + l0) + 0.0) / 2)


def test_clipped_value_loss_inside_and_outside_the_clip_range():
    old = torch.tensor([[1.0, 1.0, 1.0]])
    values = torch.tensor([[1.1, 2.0, 0.0]])
    returns = torch.tensor([[3.0, 3.0, 0.5]])
    mask = torch.ones(1, 3)
    loss, stats = ppo.value_loss(values, old, returns, mask, clip=0.2)
    # token 0: inside, (1.1 - 3)^2 = 3.61 either way
    # token 1: V moved +1.0; clipped to 1.2: max((2-3)^2, (1.2-3)^2) = 3.24
    # token 2: V moved -1.0; clipped to 0.8: max((0-0.5)^2, (0.8-0.5)^2) = 0.25
    assert loss.item() == pytest.approx(0.5 * (3.61 + 3.24 + 0.25) / 3)
    assert stats["vf_clipfrac"] == pytest.approx(1 / 3)
    plain, _ = ppo.value_loss(values, old, returns, mask, clip=None)
    assert plain.item() == pytest.approx(0.5 * (3.61 + 1.0 + 0.25) / 3)


# ---------------------------------------------------------------------------- KL
def test_kl_estimators_match_their_formulas():
    logp = torch.tensor([-0.5, -2.0, -1.0])
    ref = torch.tensor([-1.0, -1.0, -1.0])
    k1 = ppo.kl_estimate(logp, ref, "k1")
    k3 = ppo.kl_estimate(logp, ref, "k3")
    torch.testing.assert_close(k1, logp - ref)
    r = (ref - logp).exp()  # ref(x) / pi(x)
    torch.testing.assert_close(k3, (r - 1) - r.log())
    assert torch.all(k3 >= 0) and k3[2] == 0
    with pytest.raises(ValueError, match="k1.*k3"):
        ppo.kl_estimate(logp, ref, "k2x")


def test_kl_estimators_are_unbiased_for_the_true_kl():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(6, generator=g), 0).double()
    q = torch.softmax(torch.randn(6, generator=g), 0).double()
    true_kl = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 400_000, replacement=True, generator=g)
    logp, logq = p.log()[x], q.log()[x]
    for est in ("k1", "k3"):
        assert ppo.kl_estimate(logp, logq, est).mean().item() == pytest.approx(true_kl, abs=0.01)
    # k3's point of existing: lower variance than k1 here (the distributions are close)
    assert ppo.kl_estimate(logp, logq, "k3").var() < ppo.kl_estimate(logp, logq, "k1").var()


def test_adaptive_kl_controller_update_rule():
    ctl = ppo.AdaptiveKLController(init=0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=6.6, n_steps=64)  # error = 6.6/6 - 1 = 0.1
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 64 / 10_000))
    v = ctl.value
    ctl.update(current_kl=60.0, n_steps=64)  # error clipped to +0.2
    assert ctl.value == pytest.approx(v * (1 + 0.2 * 64 / 10_000))
    v = ctl.value
    ctl.update(current_kl=0.0, n_steps=500)  # error clipped to -0.2
    assert ctl.value == pytest.approx(v * (1 - 0.2 * 500 / 10_000))
    fixed = ppo.FixedKLController(0.3)
    fixed.update(100.0, 64)
    assert fixed.value == 0.3
    with pytest.raises(ValueError, match="target"):
        ppo.AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert ppo.explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(
        0.0
    )


# ---------------------------------------------------------------------------- preferences
def test_bradley_terry_loss_matches_the_formula():
    chosen = torch.tensor([1.0, -0.5, 2.0, 0.3])
    rejected = torch.tensor([0.0, 0.5, -1.0, 0.3])
    margin = torch.tensor([0.5, 0.0, 1.0, 0.2])
    diffs = (chosen - rejected).tolist()
    plain = sum(-math.log(sigmoid(d)) for d in diffs) / 4
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(plain, rel=1e-6)
    with_margin = sum(-math.log(sigmoid(d - m)) for d, m in zip(diffs, margin.tolist())) / 4
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(
        with_margin, rel=1e-6
    )
    center = 0.01 * sum((c + r) ** 2 for c, r in zip(chosen.tolist(), rejected.tolist())) / 4
    got = bradley_terry_loss(chosen, rejected, center_coef=0.01).item()
    assert got == pytest.approx(plain + center, rel=1e-6)
    assert pairwise_accuracy(chosen, rejected) == 0.5  # ties count as wrong


def test_bradley_terry_is_invariant_to_a_shift_without_centering():
    c, r = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(bradley_terry_loss(c, r), bradley_terry_loss(c + 3, r + 3))
    assert bradley_terry_loss(c + 3, r + 3, center_coef=0.1) > bradley_terry_loss(
        c, r, center_coef=0.1
    )


def test_dpo_loss_matches_the_formula():
    pc, pr = torch.tensor([-10.0, -20.0, -5.0]), torch.tensor([-12.0, -18.0, -5.0])
    rc, rr = torch.tensor([-11.0, -19.0, -6.0]), torch.tensor([-11.0, -19.0, -4.0])
    beta = 0.5
    logits = [
        (a - c) - (b - d) for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())
    ]
    expected = sum(-math.log(sigmoid(beta * z)) for z in logits) / 3
    loss, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(chosen_r, beta * (pc - rc))
    torch.testing.assert_close(rejected_r, beta * (pr - rr))
    eps = 0.1  # conservative DPO: each label flipped with probability eps
    smoothed = (
        sum(
            -(1 - eps) * math.log(sigmoid(beta * z)) - eps * math.log(sigmoid(-beta * z))
            for z in logits
        )
        / 3
    )
    assert dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)[0].item() == pytest.approx(
        smoothed, rel=1e-6
    )
    same = dpo_loss(pc, pr, pc, pr, beta)[0]  # the policy is its reference: log 2
    assert same.item() == pytest.approx(math.log(2))
