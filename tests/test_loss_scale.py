"""minift.train.loss_scale against torch.amp.GradScaler, decision by decision.

Both scalers see the same sequence of gradients (finite ones, and ones with an inf or a NaN
planted at random steps); after every step the scale, whether the step was taken, and the
parameters must agree. Parameters are float64 and the optimizer SGD, so both sides do the
same arithmetic and the comparison is exact.
"""

import pytest
import torch

from minift.train.loss_scale import LossScaler, underflow_fraction


def run(scaler, grads_seq, init):
    p = torch.nn.Parameter(init.clone())
    opt = torch.optim.SGD([p], lr=0.1)
    trace = []
    for g in grads_seq:
        opt.zero_grad()
        # The loss sum(p * g) has gradient g; scaled, S * g.
        scaler.scale((p * g).sum()).backward()
        scaler.unscale_(opt)
        unscaled = p.grad.clone()
        before = p.detach().clone()
        scaler.step(opt)
        scaler.update()
        took = not torch.equal(before, p.detach())
        trace.append((scaler.get_scale(), took, p.detach().clone(), unscaled))
    return trace


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_decisions_as_grad_scaler(seed):
    gen = torch.Generator().manual_seed(seed)
    steps, n = 40, 7
    grads = []
    for _ in range(steps):
        g = torch.randn(n, generator=gen, dtype=torch.float64) + 0.5
        r = float(torch.rand((), generator=gen))
        if r < 0.15:
            g[int(torch.randint(n, (), generator=gen))] = float("inf")
        elif r < 0.25:
            g[int(torch.randint(n, (), generator=gen))] = float("nan")
        grads.append(g)
    init = torch.randn(n, generator=gen, dtype=torch.float64)
    kw = dict(init_scale=2.0**10, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    ours = run(LossScaler(**kw), grads, init)
    ref = run(torch.amp.GradScaler("cpu", **kw), grads, init)
    assert any(not took for _, took, _, _ in ours), "the sequence must contain overflows"
    assert any(a[0] > b[0] for a, b in zip(ours[1:], ours)), "and growth"
    for (s1, t1, p1, g1), (s2, t2, p2, g2) in zip(ours, ref):
        assert s1 == s2 and t1 == t2
        assert torch.equal(p1, p2)
        finite = torch.isfinite(g2)
        assert torch.equal(g1[finite], g2[finite])


def test_rules_on_a_scripted_sequence():
    s = LossScaler(init_scale=8.0, growth_interval=2)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    scales = []
    for bad in [False, False, True, False, True, True, False, False]:
        p.grad = torch.tensor([float("inf") if bad else 1.0, 2.0]) * s.get_scale()
        s.step(opt)
        s.update()
        scales.append(s.get_scale())
    # two clean -> x2; overflow -> /2 and the count restarts; ...
    assert scales == [8, 16, 8, 8, 4, 2, 2, 4]
    assert s.skipped == 3
    assert p.detach().tolist() == [-5.0, -10.0]  # five steps taken, each -(1, 2)


def test_disabled_is_a_pass_through():
    s = LossScaler(enabled=False)
    loss = torch.tensor(3.0)
    assert s.scale(loss) is loss and s.get_scale() == 1.0


def test_underflow_fraction():
    g = torch.tensor([1e-9, 1e-6, 1e-3, 0.0, -1e-9, 2.0**-26])
    # fp16 keeps magnitudes >= 2^-25 (half the smallest subnormal rounds to it or zero)
    assert underflow_fraction(g) == pytest.approx(3 / 5)
    assert underflow_fraction(g, scale=2.0**16) == 0.0
    with pytest.raises(ValueError, match="no non-zero gradients"):
        underflow_fraction(torch.zeros(3))


def test_bad_settings_and_order():
    with pytest.raises(ValueError, match="growth_interval must be >= 1"):
        LossScaler(growth_interval=0)
    with pytest.raises(ValueError, match="backoff_factor"):
        LossScaler(backoff_factor=1.5)
    s = LossScaler()
    with pytest.raises(RuntimeError, match="needs unscale_"):
        s.update()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trainer_fp16_on_gpu_uses_the_scaler_and_learns():
    from minift.model import GPT, GPTConfig
    from minift.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=61)).cuda()
    data = torch.randint(0, 61, (64, 17), generator=torch.Generator().manual_seed(0))

    def batch(step, micro):
        rows = data[(step * 8) % 64 : (step * 8) % 64 + 8]
        return rows[:, :-1], rows[:, 1:]

    config = TrainConfig(steps=30, lr=3e-3, precision="fp16", progress=False)
    trainer = Trainer(model, config, batch)
    result = trainer.fit()
    assert isinstance(trainer.scaler, LossScaler) and trainer.scaler.enabled
    assert result.losses()[-1] < result.losses()[0]
