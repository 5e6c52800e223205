"""Distillation losses against hand-written float64 formulas, their stated properties,
and their errors."""

import math

import pytest
import torch

from minift.distill.features import (
    HiddenProjection,
    attention_kl,
    attention_mse,
    block_values,
    cosine_loss,
    hidden_mse,
    value_relation,
    value_relation_kl,
)
from minift.distill.losses import (
    divergence,
    forward_kl,
    generalized_jsd,
    kd_loss,
    reverse_kl,
    soft_target_loss,
)
from minift.model import GPT, GPTConfig
from minift.model.gpt import IGNORE_INDEX


def logits(*shape, scale=3.0, dtype=torch.float64):
    return (scale * torch.randn(*shape, dtype=dtype)).requires_grad_(True)


def softmax_by_hand(z):
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def kl_by_hand(p, q):
    """sum_i p_i log(p_i / q_i), by the definition."""
    return (p * (torch.log(p) - torch.log(q))).sum(-1)


# ------------------------------------------------------------------ soft targets and KD
@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 7.0])
def test_soft_target_loss_is_t_squared_kl_of_softened_distributions(T):
    zs, zt = logits(3, 5, 11), logits(3, 5, 11)
    mask = torch.rand(3, 5) > 0.3
    got = soft_target_loss(zs, zt, T, mask)
    per_row = kl_by_hand(softmax_by_hand(zt / T), softmax_by_hand(zs / T))
    want = T * T * per_row[mask].mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_kd_loss_is_zero_for_equal_logits_with_zero_gradient():
    z = logits(4, 9, 13)
    loss = soft_target_loss(z, z.detach().clone(), temperature=3.0)
    loss.backward()
    assert abs(loss.item()) < 1e-12
    assert z.grad.abs().max() < 1e-12


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_kd_gradient_is_t_times_probability_difference(T):
    """d(T^2 KL)/dz_s = T (softmax(z_s/T) - softmax(z_t/T)) per row (Hinton et al. eq. 2),
    divided by the number of rows the mean runs over."""
    zs, zt = logits(6, 17), logits(6, 17)
    soft_target_loss(zs, zt, T).backward()
    want = T * (softmax_by_hand(zs.detach() / T) - softmax_by_hand(zt / T)) / 6
    torch.testing.assert_close(zs.grad, want, rtol=1e-6, atol=1e-10)


def test_kd_gradient_does_not_vanish_with_temperature_thanks_to_t_squared():
    """At high T the gradient tends to (z_s - z_t)/V for zero-mean logits, whatever T:
    the T^2 factor keeps the soft loss on the hard loss's scale."""
    V = 20
    zs = torch.randn(1, V, dtype=torch.float64)
    zt = torch.randn(1, V, dtype=torch.float64)
    zs, zt = (zs - zs.mean()).requires_grad_(True), zt - zt.mean()
    grads = []
    for T in (100.0, 1000.0):
        zs.grad = None
        soft_target_loss(zs, zt, T).backward()
        grads.append(zs.grad.clone())
    limit = (zs.detach() - zt) / V
    # The error of the limit is O(1/T): 10x smaller at the higher temperature.
    err = [(g - limit).norm() / limit.norm() for g in grads]
    assert err[1] < 2e-3 and err[0] < 2e-2 and err[1] < err[0] / 5, err
    # Without T^2 the gradient would shrink by 10x between the two temperatures.
    assert 0.95 < grads[0].norm() / grads[1].norm() < 1.05


def test_kd_loss_mixes_soft_and_hard_terms_and_skips_ignored_labels():
    zs, zt = logits(2, 7, 10), logits(2, 7, 10)
    y = torch.randint(0, 10, (2, 7))
    y[0, :3] = IGNORE_INDEX
    keep = y != IGNORE_INDEX
    T, alpha = 2.5, 0.3
    got = kd_loss(zs, zt, y, temperature=T, alpha=alpha)
    soft = T * T * kl_by_hand(softmax_by_hand(zt / T), softmax_by_hand(zs / T))[keep].mean()
    logp = torch.log(softmax_by_hand(zs))
    hard = -logp[keep].gather(-1, y[keep][:, None]).mean()
    torch.testing.assert_close(got, alpha * soft + (1 - alpha) * hard, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(kd_loss(zs, zt, y, T, alpha=1.0), soft, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ forward, reverse, JSD
def test_forward_and_reverse_kl_against_the_definitions():
    zs, zt = logits(5, 23), logits(5, 23)
    ps, pt = softmax_by_hand(zs), softmax_by_hand(zt)
    torch.testing.assert_close(forward_kl(zs, zt), kl_by_hand(pt, ps).mean())
    torch.testing.assert_close(reverse_kl(zs, zt), kl_by_hand(ps, pt).mean())
    assert not torch.allclose(forward_kl(zs, zt), reverse_kl(zs, zt))  # KL is not symmetric


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_against_the_definition(beta):
    zs, zt = logits(3, 4, 9), logits(3, 4, 9)
    mask = torch.tensor([[1, 1, 0, 1]] * 3).bool()
    ps, pt = softmax_by_hand(zs), softmax_by_hand(zt)
    m = beta * pt + (1 - beta) * ps
    want = (beta * kl_by_hand(pt, m) + (1 - beta) * kl_by_hand(ps, m))[mask].mean()
    torch.testing.assert_close(generalized_jsd(zs, zt, beta, mask), want)


def test_jsd_interpolates_between_forward_and_reverse_kl_at_its_two_ends():
    # Mild logits: the limit holds once beta is small against every ratio q_i / p_i.
    zs, zt = logits(4, 15, scale=1.0), logits(4, 15, scale=1.0)
    fwd, rev = forward_kl(zs, zt), reverse_kl(zs, zt)
    eps = 1e-7
    torch.testing.assert_close(generalized_jsd(zs, zt, eps) / eps, fwd, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(generalized_jsd(zs, zt, 1 - eps) / eps, rev, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(generalized_jsd(zs, zt, 0.0), fwd)
    torch.testing.assert_close(generalized_jsd(zs, zt, 1.0), rev)
    # beta = 1/2 is the ordinary, symmetric Jensen-Shannon divergence.
    torch.testing.assert_close(generalized_jsd(zs, zt, 0.5), generalized_jsd(zt, zs, 0.5))


def test_divergence_by_name():
    zs, zt = logits(3, 8), logits(3, 8)
    torch.testing.assert_close(
        divergence("forward", zs, zt, temperature=2.0), soft_target_loss(zs, zt, 2.0)
    )
    torch.testing.assert_close(divergence("reverse", zs, zt), reverse_kl(zs, zt))
    # Every divergence carries Hinton's T^2, so alpha keeps its meaning across kinds.
    torch.testing.assert_close(
        divergence("reverse", zs, zt, temperature=2.0), 4.0 * reverse_kl(zs, zt, temperature=2.0)
    )
    torch.testing.assert_close(
        divergence("jsd", zs, zt, temperature=3.0, beta=0.3),
        9.0 * generalized_jsd(zs, zt, 0.3, temperature=3.0),
    )
    torch.testing.assert_close(divergence("jsd", zs, zt, beta=0.3), generalized_jsd(zs, zt, 0.3))
    with pytest.raises(ValueError, match="divergence must be"):
        divergence("backward", zs, zt)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_of_zero_or_less_is_a_clear_error(T):
    zs, zt = logits(2, 5), logits(2, 5)
    for fn in (soft_target_loss, forward_kl, reverse_kl):
        with pytest.raises(ValueError, match="temperature must be"):
            fn(zs, zt, temperature=T)
    with pytest.raises(ValueError, match="temperature must be"):
        kd_loss(zs, zt, None, temperature=T, alpha=1.0)


def test_different_vocabularies_are_a_clear_error():
    with pytest.raises(ValueError, match="same vocabulary"):
        soft_target_loss(logits(2, 5), logits(2, 6))
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(logits(2, 5), logits(2, 5), torch.tensor([0, 1]), alpha=1.5)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(logits(2, 5), logits(2, 5), beta=-0.1)


# ------------------------------------------------------------------ hidden states
def test_hidden_mse_through_projection_against_formula():
    hs, ht = torch.randn(2, 7, 6, dtype=torch.float64), torch.randn(2, 7, 10, dtype=torch.float64)
    mask = torch.ones(2, 7)
    mask[1, 5:] = 0
    proj = HiddenProjection(6, 10).double()
    want = ((hs @ proj.proj.weight.T - ht) ** 2).mean(-1)[mask.bool()].mean()
    torch.testing.assert_close(hidden_mse(hs, ht, proj, mask), want)
    with pytest.raises(ValueError, match="HiddenProjection"):
        hidden_mse(hs, ht)


def test_cosine_loss_against_formula_and_scale_invariance():
    hs, ht = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    cos = (hs * ht).sum(-1) / (hs.norm(dim=-1) * ht.norm(dim=-1))
    torch.testing.assert_close(cosine_loss(hs, ht), (1 - cos).mean())
    torch.testing.assert_close(cosine_loss(3.7 * hs, ht), cosine_loss(hs, ht))
    assert cosine_loss(ht * 2, ht).abs() < 1e-12


# ------------------------------------------------------------------ attention
def random_attention(B, H, T, causal=True):
    scores = torch.randn(B, H, T, T, dtype=torch.float64)
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(-1)


def test_attention_mse_and_kl_against_formulas():
    s, t = random_attention(2, 3, 6), random_attention(2, 3, 6)
    s.requires_grad_(True)
    mask = torch.ones(2, 6)
    mask[0, 4:] = 0
    rows = mask.bool()[:, None, :].expand(2, 3, 6)
    mse = ((s - t) ** 2).mean(-1)[rows].mean()
    torch.testing.assert_close(attention_mse(s, t, mask), mse)
    # KL over the allowed keys only (causal zeros are 0 log 0 = 0).
    kl = torch.zeros(2, 3, 6, dtype=torch.float64)
    for q in range(6):
        p, r = t[..., q, : q + 1], s[..., q, : q + 1]
        kl[..., q] = (p * (p.log() - r.log())).sum(-1)
    loss = attention_kl(s, t, mask)
    torch.testing.assert_close(loss, kl[rows].mean())
    loss.backward()
    assert torch.isfinite(s.grad).all()  # no 0/0 on the masked keys


def test_attention_with_fewer_student_heads_uses_head_map_or_mean():
    s, t = random_attention(1, 2, 5), random_attention(1, 4, 5)
    torch.testing.assert_close(attention_mse(s, t, head_map=[3, 1]), attention_mse(s, t[:, [3, 1]]))
    torch.testing.assert_close(attention_mse(s, t), ((s.mean(1) - t.mean(1)) ** 2).mean())
    with pytest.raises(ValueError, match="head map"):
        attention_mse(s, t, head_map=[0, 4])


def test_attention_transfer_is_zero_for_a_copy_of_the_teacher():
    torch.manual_seed(1)
    teacher = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=3, n_embd=12))
    student = GPT(teacher.config)
    student.load_state_dict(teacher.state_dict())
    idx = torch.randint(0, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ot = teacher(idx, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    os_ = student(idx, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    for a_s, a_t in zip(os_.attentions, ot.attentions):
        assert attention_mse(a_s, a_t, mask) < 1e-12
        assert attention_kl(a_s, a_t, mask).abs() < 1e-6
    vs = block_values(student.transformer.h[1], os_.hidden_states[1])
    vt = block_values(teacher.transformer.h[1], ot.hidden_states[1])
    assert value_relation_kl(vs, vt, 3, mask).abs() < 1e-6
    assert hidden_mse(os_.hidden_states[2], ot.hidden_states[2]) < 1e-12


# ------------------------------------------------------------------ value relations
def test_block_values_are_the_value_third_of_c_attn():
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=8))
    idx = torch.randint(0, 30, (1, 5))
    captured = {}

    def keep_values(module, args, out):
        captured["v"] = out[..., 16:]

    model.transformer.h[0].attn.c_attn.register_forward_hook(keep_values)
    out = model(idx, output_hidden_states=True)
    torch.testing.assert_close(
        block_values(model.transformer.h[0], out.hidden_states[0]), captured["v"]
    )


def test_value_relation_against_formula_and_kl_between_widths():
    B, T = 2, 5
    vs, vt = torch.randn(B, T, 6, dtype=torch.float64), torch.randn(B, T, 9, dtype=torch.float64)
    R = 3
    rel = value_relation(vt, R, causal=True)
    for r in range(R):
        v = vt[..., r * 3 : (r + 1) * 3]
        scores = v @ v.transpose(-1, -2) / math.sqrt(3)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        torch.testing.assert_close(rel[:, r], scores.softmax(-1))
    # Widths 6 and 9 both split into 3 relation heads, so the relations compare.
    a, b = value_relation(vs, R), rel
    want = (torch.xlogy(b, b) - torch.xlogy(b, a)).sum(-1).mean()
    torch.testing.assert_close(value_relation_kl(vs, vt, R), want)
    with pytest.raises(ValueError, match="relation heads"):
        value_relation(vs, 4)
