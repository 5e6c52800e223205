"""minift.train.optimizers against torch.optim (float64, same gradients), Lion against its
formula, and the state memory each keeps per parameter."""

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.train import TrainConfig, Trainer
from minift.train.optimizers import (
    Adafactor,
    AdamW,
    Lion,
    SGDMomentum,
    build_optimizer,
    state_floats_per_param,
)


def params_and_grads(seed, steps=6):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 6)]  # a matrix, a vector, a stack of matrices
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [
        [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(steps)
    ]
    return init, grads


def run(make, init, grads):
    ps = [torch.nn.Parameter(t.clone()) for t in init]
    opt = make(ps)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in ps], opt


CASES = {
    "adamw": (
        lambda ps: AdamW(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3),
    ),
    "sgd": (
        lambda ps: SGDMomentum(ps, lr=0.05, momentum=0.7, weight_decay=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.7, weight_decay=0.1),
    ),
    "adafactor": (
        lambda ps: Adafactor(ps, lr=0.02, weight_decay=0.05),
        lambda ps: torch.optim.Adafactor(ps, lr=0.02, weight_decay=0.05, foreach=False),
    ),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_torch_optim_in_float64(name, seed):
    init, grads = params_and_grads(seed)
    ours, _ = run(CASES[name][0], init, grads)
    ref, _ = run(CASES[name][1], init, grads)
    for a, b, x0 in zip(ours, ref, init):
        assert not torch.equal(a, x0)
        # float64 with a handful of operations per step: agreement to ~1e-15 relative
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_lion_follows_its_formula():
    init, grads = params_and_grads(3, steps=4)
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.2
    ours, _ = run(lambda ps: Lion(ps, lr=lr, betas=(b1, b2), weight_decay=wd), init, grads)
    for i, x0 in enumerate(init):
        theta, m = x0.clone(), torch.zeros_like(x0)
        for gs in grads:
            g = gs[i]
            c = b1 * m + (1 - b1) * g
            theta = theta * (1 - lr * wd) - lr * torch.sign(c)
            m = b2 * m + (1 - b2) * g
        torch.testing.assert_close(ours[i], theta, rtol=0, atol=1e-14)
    # Without decay every coordinate moves by exactly lr each step.
    ps = [torch.nn.Parameter(init[0].clone())]
    opt = Lion(ps, lr=0.125)
    ps[0].grad = grads[0][0].clone()
    opt.step()
    moved = (ps[0].detach() - init[0]).abs()
    # exact up to the rounding of theta +- 0.125 (|theta| < 4: an ulp is below 1e-15)
    torch.testing.assert_close(moved, torch.full_like(moved, 0.125), rtol=0, atol=1e-15)


def test_state_memory_per_parameter():
    init, grads = params_and_grads(4, steps=1)
    expected = {"adamw": 2.0, "sgd": 1.0, "lion": 1.0}
    for name, floats in expected.items():

        def make(ps, name=name):
            return build_optimizer(name, [{"params": ps}], 1e-3, 0.0, (0.9, 0.99))

        _, opt = run(make, init, grads)
        assert state_floats_per_param(opt) == floats
    _, opt = run(lambda ps: Adafactor(ps), init, grads)
    # (7 + 5) for the matrix, 5 for the vector, 3 * (4 + 6) for the stack, over 35 + 5 + 72 weights.
    assert state_floats_per_param(opt) == pytest.approx((12 + 5 + 30) / 112)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adafactor", "lion"])
def test_each_optimizer_trains_through_the_trainer(name):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=41))
    data = torch.randint(0, 41, (8, 17), generator=torch.Generator().manual_seed(1))
    lr = {"adamw": 3e-3, "sgd": 0.3, "adafactor": 0.1, "lion": 1e-3}[name]
    config = TrainConfig(steps=12, lr=lr, optimizer=name, progress=False, warmup_steps=0)
    trainer = Trainer(model, config, lambda s, m: (data[:, :-1], data[:, 1:]))
    losses = trainer.fit().losses()
    assert type(trainer.optimizer).__name__ == {"adamw": "AdamW", "sgd": "SGDMomentum",
                                                "adafactor": "Adafactor", "lion": "Lion"}[name]  # fmt: skip
    assert losses[-1] < losses[0] - 0.2


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; choose one of adamw, sgd"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer("rmsprop", [{"params": [torch.nn.Parameter(torch.ones(2))]}], 1e-3, 0.0,
                        (0.9, 0.99))  # fmt: skip
    with pytest.raises(ValueError, match="momentum must be in"):
        SGDMomentum([torch.nn.Parameter(torch.ones(2))], momentum=1.0)
