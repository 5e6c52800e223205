"""minift.train.regularization and the trainer's regularization options: label smoothing
against F.cross_entropy, L2 against decoupled decay after one Adam step (closed forms),
R-Drop's KL against its formula, early stopping on a scripted validation curve, and the
learning-rate schedules."""

import math

import pytest
import torch
import torch.nn.functional as F

from minift.model import GPT, IGNORE_INDEX, GPTConfig
from minift.train import TrainConfig, Trainer
from minift.train.optim import SCHEDULES, make_schedule
from minift.train.regularization import (
    l2_penalty,
    label_smoothed_cross_entropy,
    lm_loss_fn,
    symmetric_kl,
)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.37])
def test_label_smoothing_equals_torch(eps):
    gen = torch.Generator().manual_seed(int(eps * 100))
    logits = torch.randn(3, 7, 11, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(0, 11, (3, 7), generator=gen)
    targets[0, :2] = IGNORE_INDEX
    ours = label_smoothed_cross_entropy(logits.double(), targets, eps)
    ref = F.cross_entropy(logits.view(-1, 11), targets.view(-1), label_smoothing=eps,
                          ignore_index=IGNORE_INDEX)  # fmt: skip
    # ours runs in float32 (as the model's loss does): float32 rounding of a sum of ~20 terms
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_decoupled_decay_and_l2_differ_as_their_formulas_say():
    gen = torch.Generator().manual_seed(0)
    theta0 = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    lr, wd, eps = 0.01, 0.3, 1e-8

    def loss_of(p):
        return ((p - target) ** 2).sum()

    g = 2 * (theta0 - target)  # gradient of the loss at theta0

    decoupled = torch.nn.Parameter(theta0.clone())
    opt = torch.optim.AdamW([decoupled], lr=lr, weight_decay=wd, eps=eps)
    loss_of(decoupled).backward()
    opt.step()

    coupled = torch.nn.Parameter(theta0.clone())
    module = torch.nn.Module()
    module.w = coupled
    opt = torch.optim.Adam([coupled], lr=lr, eps=eps)
    (loss_of(coupled) + l2_penalty(module, wd)).backward()
    opt.step()

    g_l2 = g + wd * theta0
    expected_l2 = theta0 - lr * g_l2 / (g_l2.abs() + eps)
    expected_decoupled = theta0 * (1 - lr * wd) - lr * g / (g.abs() + eps)
    torch.testing.assert_close(coupled.detach(), expected_l2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(decoupled.detach(), expected_decoupled, rtol=1e-12, atol=1e-14)
    # They differ: the first Adam step of the L2 run is a sign step of g + wd theta.
    assert (coupled.detach() - decoupled.detach()).abs().max() > 1e-4


def test_symmetric_kl_and_r_drop():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2, 5, 9, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 5, 9, generator=gen, dtype=torch.float64)
    pa, pb = a.softmax(-1), b.softmax(-1)
    ref = 0.5 * ((pa * (pa / pb).log()).sum(-1) + (pb * (pb / pa).log()).sum(-1)).mean()
    assert symmetric_kl(a, b).item() == pytest.approx(ref.item(), rel=1e-6)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)

    x = torch.randint(0, 31, (2, 8), generator=gen)
    torch.manual_seed(0)
    no_dropout = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31))
    loss, extras = lm_loss_fn(r_drop=1.0)(no_dropout, (x, x))
    assert extras["kl"] == 0.0  # no dropout: both passes are the same network
    assert loss.item() == pytest.approx(no_dropout(x, x).loss.item(), rel=1e-6)
    torch.manual_seed(0)
    dropout = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31,
                            dropout=0.3))  # fmt: skip
    _, extras = lm_loss_fn(r_drop=1.0)(dropout.train(), (x, x))
    assert extras["kl"] > 1e-4


def test_early_stopping_stops_where_its_rule_says():
    # Patience 2: the best is at step 3 (2.0); steps 4 and 5 do not beat it -> stop after 5.
    curve = [3.0, 2.5, 2.0, 2.2, 2.0, 1.0, 0.5]
    seen = []

    def eval_fn(model):
        seen.append(curve[len(seen)])
        return {"val_loss": seen[-1]}

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31))
    data = torch.randint(0, 31, (4, 9))
    config = TrainConfig(steps=7, lr=1e-3, eval_every=1, patience=2, progress=False,
                         restore_best=True)  # fmt: skip
    weights = {}

    def on_step(done, trainer):
        weights[done] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    result = Trainer(model, config, lambda s, m: (data[:, :-1], data[:, 1:]), eval_fn=eval_fn,
                     on_step=on_step).fit()  # fmt: skip
    assert result.stopped_early and result.steps_done == 5
    assert result.best_step == 3 and result.best == 2.0  # a tie (step 5) is not better
    assert all(torch.equal(v, weights[3][k]) for k, v in model.state_dict().items())


def test_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    total, warmup, floor = 10, 2, 0.1
    expect = {
        "constant": [0.5, 1.0] + [1.0] * 8,
        "linear": [0.5, 1.0] + [1 - 0.9 * k / 8 for k in range(8)],
        "cosine": [0.5, 1.0]
        + [floor + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)],
    }
    for kind, values in expect.items():
        got = [SCHEDULES[kind](s, total, warmup, floor) for s in range(total)]
        assert got == pytest.approx(values)
    with pytest.raises(ValueError, match="unknown schedule 'step'; choose one of cosine"):
        make_schedule(opt, total, warmup, floor, "step")
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        TrainConfig(schedule="step")


def test_bad_regularizer_settings():
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\)"):
        label_smoothed_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="r_drop and l2 must be >= 0"):
        lm_loss_fn(r_drop=-1.0)
