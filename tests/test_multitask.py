"""minift.multitask: the task-mixing sampler, uncertainty weighting and the shared model.

The sampler's long-run proportions are checked against its formula with a tolerance of
4.5 binomial standard deviations (a false alarm about once in 150,000 for each count);
the weighting's loss against Kendall et al.'s formula written out by hand; the shared
model against what sharing means (one backbone, heads apart).
"""

import math

import pytest
import torch

from minift.data.tasks import Task
from minift.model import GPT, GPTConfig
from minift.multitask import (
    FixedWeighting,
    MultiTaskModel,
    TaskSampler,
    UncertaintyWeighting,
    make_weighting,
    mixing_rates,
)


def test_mixing_rates_formulas():
    sizes = [1000, 100, 10]
    assert mixing_rates(sizes, "proportional") == pytest.approx(
        [1000 / 1110, 100 / 1110, 10 / 1110]
    )
    # temperature T: min(n, K) ** (1/T), normalised
    w = [min(n, 300) ** 0.5 for n in sizes]
    assert mixing_rates(sizes, "temperature", 2.0, cap=300) == pytest.approx(
        [x / sum(w) for x in w]
    )
    assert mixing_rates(sizes, "equal") == pytest.approx([1 / 3] * 3)


def test_temperature_limits():
    sizes = [5000, 300, 20]
    # T = 1 without a cap is examples-proportional; T -> inf tends to equal mixing
    assert mixing_rates(sizes, "temperature", 1.0) == pytest.approx(
        mixing_rates(sizes, "proportional")
    )
    assert mixing_rates(sizes, "temperature", 1e9) == pytest.approx([1 / 3] * 3, abs=1e-6)
    # the cap: every task at least K examples large gets the same rate
    assert mixing_rates([5000, 300, 20], "temperature", 1.0, cap=300)[:2] == pytest.approx([0.48387, 0.48387], rel=1e-4)  # fmt: skip
    # raising T moves the small task's rate up, monotonically
    small = [mixing_rates(sizes, "temperature", t)[2] for t in (1, 2, 4, 8)]
    assert small == sorted(small) and small[0] < small[-1]


def test_sampler_long_run_proportions_match_the_formula():
    sizes, steps = [1000, 100, 10], 20_000
    for scheme, t in (("proportional", 1.0), ("temperature", 3.0)):
        sampler = TaskSampler(sizes, scheme, temperature=t, seed=123)
        counts = sampler.counts(steps)
        for c, r in zip(counts, sampler.rates):
            sd = math.sqrt(steps * r * (1 - r))
            assert abs(c - steps * r) <= 4.5 * sd, (scheme, counts, sampler.rates)
    # equal mixing is round robin: exact counts, and a pure function of the step
    eq = TaskSampler(sizes, "equal")
    assert eq.counts(300) == [100, 100, 100]
    s = TaskSampler(sizes, "temperature", temperature=2.0, seed=5)
    assert [s.task_at(i) for i in range(50)] == [s.task_at(i) for i in range(50)]


@pytest.mark.parametrize(
    "args, match",
    [
        (([10, 20], "squared"), "unknown sampling scheme"),
        (([10, 0], "proportional"), "at least one training example"),
        (([10, 20], "temperature", 0.0), "temperature and cap must be > 0"),
    ],
)
def test_sampler_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        mixing_rates(*args)


def test_uncertainty_loss_equals_its_formula():
    w = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.3, -1.2]))
    for task, s in (("a", 0.3), ("b", -1.2)):
        loss = torch.tensor(2.5)
        expected = 0.5 * math.exp(-s) * 2.5 + 0.5 * s
        assert w(task, loss).item() == pytest.approx(expected, rel=1e-6)
    total = w.total({"a": torch.tensor(1.0), "b": torch.tensor(4.0)})
    assert total.item() == pytest.approx(0.5 * math.exp(-0.3) + 0.15 + 0.5 * math.exp(1.2) * 4 - 0.6, rel=1e-6)  # fmt: skip
    assert w.report()["b"] == pytest.approx(0.5 * math.exp(1.2))


def test_uncertainty_weights_move_the_right_way_on_a_noisy_task():
    """Two regressions sharing nothing but the loss: targets of task 'noisy' carry noise
    of variance 1, those of 'clean' variance 0.01. The learned variance exp(s) of each
    tends to its irreducible loss, so the noisy task ends with the smaller weight."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    true = torch.randn(4, generator=g)
    y = {"clean": x @ true + 0.1 * torch.randn(512, generator=g),
         "noisy": x @ true + 1.0 * torch.randn(512, generator=g)}  # fmt: skip
    models = torch.nn.ModuleDict({t: torch.nn.Linear(4, 1) for t in y})
    weighting = UncertaintyWeighting(list(y))
    opt = torch.optim.Adam([*models.parameters(), *weighting.parameters()], lr=0.05)
    for _ in range(600):
        losses = {t: ((models[t](x).squeeze(-1) - y[t]) ** 2).mean() for t in y}
        opt.zero_grad()
        weighting.total(losses).backward()
        opt.step()
    weights = weighting.report()
    assert weights["noisy"] < 0.1 * weights["clean"], weights
    var = torch.exp(weighting.log_vars.detach())
    assert var[1].item() == pytest.approx(losses["noisy"].item(), rel=0.2)


def test_fixed_weighting_and_bad_input():
    w = FixedWeighting(["a", "b"], {"b": 3.0})
    assert w("a", torch.tensor(2.0)).item() == 2.0 and w("b", torch.tensor(2.0)).item() == 6.0
    with pytest.raises(ValueError, match="tasks not trained"):
        FixedWeighting(["a"], {"z": 1.0})
    with pytest.raises(ValueError, match="unknown loss weighting"):
        make_weighting("gradnorm", ["a"])


def _tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=8))


def _task(name, kind="classification", n=3):
    labels = [str(i) for i in range(n)] if kind == "classification" else []
    return Task(name=name, kind=kind, train=[], val=[], labels=labels)


def test_shared_backbone_one_head_per_task():
    model = MultiTaskModel(_tiny(), [_task("a"), _task("b", n=2), _task("gen", "sft")])
    a, b = model.view("a"), model.view("b")
    assert a.backbone is b.backbone is model.backbone is model.view("gen")
    # parameters: the backbone once, plus the two heads
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_backbone + (8 * 3 + 3) + (8 * 2 + 2)
    idx = torch.randint(0, 37, (4, 6))
    loss = a(idx, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    assert model.heads["a"].weight.grad is not None and model.heads["b"].weight.grad is None
    assert model.backbone.transformer.h[0].attn.c_attn.weight.grad is not None
    assert model("b", idx).logits.shape == (4, 2)


@pytest.mark.parametrize(
    "tasks, match",
    [
        ([_task("a"), _task("a")], "task listed twice: a"),
        ([_task("a"), _task("p", "preference")], "kinds with no head here: p \\(preference\\)"),
        ([], "no tasks given"),
    ],
)
def test_multitask_model_bad_input(tasks, match):
    with pytest.raises(ValueError, match=match):
        MultiTaskModel(_tiny(), tasks)
    with pytest.raises(ValueError, match="no head for task 'zz'"):
        MultiTaskModel(_tiny(), [_task("a")]).view("zz")
