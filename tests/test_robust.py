"""Adversarial robustness: the ball and its projection, PGD, FGM, HotFlip, adversarial training."""

import math

import pytest
import torch
import torch.nn.functional as F

from minift.errors import UserError
from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.robust import (
    AdversarialConfig,
    adversarial_loss,
    adversarial_objective,
    ascent_direction,
    fgm_delta,
    hotflip_attack,
    pgd_attack,
    pgd_delta,
    project,
    token_embeddings,
)
from minift.train import TrainConfig, Trainer
from minift.train.objectives import TaskObjective

V, T = 53, 11  # not multiples of anything


def classifier(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=24)
    model = SequenceClassifier(GPT(cfg), 3)
    with torch.no_grad():
        model.head.bias.normal_()  # a non-zero bias
    return model.to(dtype)


def batch(seed=0, B=7):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(4, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return {
        "idx": idx * mask,
        "attention_mask": mask,
        "labels": torch.randint(0, 3, (B,), generator=g),
    }


def per_example_l2(delta):
    return delta.flatten(1).norm(dim=1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_stays_within_its_radius_and_raises_the_loss(norm):
    model, b = classifier(), batch(1)
    radius = 0.3 if norm == "l2" else 0.02
    embeds = token_embeddings(model, b["idx"]).detach()

    def loss_of(e):
        out = model(b["idx"], attention_mask=b["attention_mask"], inputs_embeds=e)
        return F.cross_entropy(out.logits, b["labels"], reduction="none")

    delta = pgd_delta(loss_of, embeds, b["attention_mask"], radius, norm, steps=7)
    size = per_example_l2(delta) if norm == "l2" else delta.abs().flatten(1).amax(1)
    assert (size <= radius * (1 + 1e-12)).all()
    assert (size >= 0.5 * radius).all()  # the attack uses its budget
    assert (delta[b["attention_mask"] == 0] == 0).all()  # padding never moves
    with torch.no_grad():
        assert (loss_of(embeds + delta) > loss_of(embeds)).all()


def test_projection_onto_the_ball_against_a_float64_reference():
    g = torch.Generator().manual_seed(3)
    delta = (
        torch.randn(5, 6, 7, generator=g, dtype=torch.float64)
        * torch.tensor([0.01, 0.1, 1, 3, 10.0]).view(-1, 1, 1).double()
    )
    r = 0.9
    out = project(delta, r, "l2")
    for d, o in zip(delta, out):
        n = math.sqrt(float((d * d).sum()))
        expect = d if n <= r else d * (r / n)
        torch.testing.assert_close(o, expect, rtol=1e-14, atol=0)
    assert torch.equal(project(delta, r, "linf"), delta.clamp(-r, r))


def test_fgm_perturbation_is_eps_g_over_the_norm_of_g():
    model, b = classifier(), batch(2)
    eps = 0.7
    embeds = token_embeddings(model, b["idx"]).detach().requires_grad_(True)
    # the classifier's own loss (its head computes it in float32), as training uses it
    out = model(
        b["idx"], attention_mask=b["attention_mask"], labels=b["labels"], inputs_embeds=embeds
    )
    (g,) = torch.autograd.grad(out.loss, embeds)
    delta = fgm_delta(g, eps, "l2", b["attention_mask"])
    for gi, di in zip(g, delta):  # the reference, one example at a time, by hand
        torch.testing.assert_close(
            di, eps * gi / math.sqrt(float((gi * gi).sum())), rtol=1e-13, atol=0
        )
    # and the loss adversarial training minimises uses exactly that perturbation
    cfg = AdversarialConfig("fgm", radius=eps, weight=0.3)
    loss, _ = adversarial_loss(model, b, cfg)
    with torch.no_grad():
        e = embeds.detach()
        clean = model(
            b["idx"], attention_mask=b["attention_mask"], labels=b["labels"], inputs_embeds=e
        ).loss
        adv = model(
            b["idx"],
            attention_mask=b["attention_mask"],
            labels=b["labels"],
            inputs_embeds=e + delta,
        ).loss
    # float32 losses: a few roundings of 6e-8 each
    torch.testing.assert_close(loss.detach(), 0.7 * clean + 0.3 * adv, rtol=1e-6, atol=0)
    assert torch.equal(fgm_delta(g, eps, "linf"), eps * g.sign())


def test_ascent_direction_of_a_zero_gradient_is_zero():
    assert torch.equal(ascent_direction(torch.zeros(2, 3, 4), "l2"), torch.zeros(2, 3, 4))


def test_radius_zero_attacks_return_the_input():
    model, b = classifier(), batch(4)
    with torch.no_grad():
        clean = model(b["idx"], attention_mask=b["attention_mask"]).logits
    for norm in ("l2", "linf"):
        assert torch.equal(pgd_attack(model, b, 0.0, norm, steps=3), clean)
    editable = b["attention_mask"].bool()
    assert torch.equal(hotflip_attack(model, b, editable, k=0), b["idx"])


def test_hotflip_changes_at_most_k_editable_tokens_and_raises_the_loss():
    model, b = classifier(seed=5), batch(5, B=9)
    editable = b["attention_mask"].bool().clone()
    editable[:, :2] = False  # a fixed prefix the attack must leave alone
    banned = [0, 1]
    k = 2
    adv = hotflip_attack(model, b, editable, k=k, n_candidates=4, banned=banned)
    changed = adv != b["idx"]
    assert (changed.sum(1) <= k).all() and changed.any()
    assert not changed[~editable].any()
    assert not torch.isin(adv[changed], torch.tensor(banned)).any()
    with torch.no_grad():
        before = F.cross_entropy(
            model(b["idx"], attention_mask=b["attention_mask"]).logits,
            b["labels"],
            reduction="none",
        )
        after = F.cross_entropy(
            model(adv, attention_mask=b["attention_mask"]).logits, b["labels"], reduction="none"
        )
    assert (after[changed.any(1)] > before[changed.any(1)]).all()


def run(adversarial, steps=4):
    model = classifier(seed=7)

    def loss_fn(m, bt):
        return m(bt["idx"], attention_mask=bt["attention_mask"], labels=bt["labels"]).loss, {}

    objective = TaskObjective(
        lambda step, micro: batch(100 + step), loss_fn, lambda m: {}, "val", "max"
    )
    if adversarial is not None:
        objective = adversarial_objective(objective, adversarial)
    cfg = TrainConfig(
        steps=steps, lr=1e-2, warmup_steps=1, progress=False, eval_every=0, grad_clip=None
    )
    Trainer(model, cfg, objective.batch_fn, objective.loss_fn).fit()
    return model.state_dict()


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_radius_zero_adversarial_training_is_standard_training(method):
    # K = 2: FreeLB's mean (l + l) / 2 and its gradient halves are exact in floating point
    # (with K = 3 the thirds round, and Adam magnifies the rounding of near-zero gradients)
    plain = run(None)
    adv = run(AdversarialConfig(method, radius=0.0, steps=2))
    for name, p in plain.items():
        assert torch.equal(adv[name], p), name


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_adversarial_training_at_a_positive_radius_differs_and_stays_finite(method):
    plain = run(None, steps=2)
    adv = run(AdversarialConfig(method, radius=0.5, steps=2), steps=2)
    assert any(not torch.equal(adv[n], p) for n, p in plain.items())
    assert all(torch.isfinite(p).all() for p in adv.values())


def test_freelb_loss_is_the_mean_along_its_ascent_path():
    model, b = classifier(), batch(6)
    torch.manual_seed(11)
    loss, extra = adversarial_loss(model, b, AdversarialConfig("freelb", radius=0.4, steps=3))
    # replay it: the same random start, then two ascent steps by hand
    torch.manual_seed(11)
    e = token_embeddings(model, b["idx"]).detach()
    m = b["attention_mask"]
    u = (torch.rand_like(e) * 2 - 1) * 0.4 / (m.sum(1).view(-1, 1, 1) * e.size(-1)).double().sqrt()
    delta, losses = project(u, 0.4, "l2", m), []
    for _ in range(3):
        delta.requires_grad_(True)
        lk = model(b["idx"], attention_mask=m, labels=b["labels"], inputs_embeds=e + delta).loss
        losses.append(lk.detach())
        (g,) = torch.autograd.grad(lk, delta)
        gn = (g * m.unsqueeze(-1)).flatten(1).norm(dim=1).view(-1, 1, 1)
        delta = project(delta.detach() + 0.4 / 3 * g * m.unsqueeze(-1) / gn, 0.4, "l2", m)
    torch.testing.assert_close(loss.detach(), sum(losses) / 3, rtol=1e-6, atol=0)  # float32 losses
    assert extra["first_loss"] == pytest.approx(float(losses[0]), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(radius=-0.1), "radius must be >= 0"),
        (dict(radius=float("nan")), "radius must be >= 0"),
        (dict(norm="l1"), "choices: l2, linf"),
        (dict(method="trades"), "choices: fgm, pgd, freelb"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(weight=1.5), "weight must be in [0, 1]"),
    ],
)
def test_bad_adversarial_settings_are_clear_errors(kwargs, words):
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")):
        AdversarialConfig(**kwargs)


def test_bad_attack_inputs_are_clear_errors():
    model, b = classifier(), batch(0)
    with pytest.raises(UserError, match="radius must be >= 0"):
        pgd_attack(model, b, -1.0)
    with pytest.raises(ValueError, match="k, the number of token swaps"):
        hotflip_attack(model, b, b["attention_mask"].bool(), k=-1)
    objective = TaskObjective(None, None, None, "val", "max")
    with pytest.raises(UserError, match="classification tasks"):
        adversarial_objective(objective, AdversarialConfig(), kind="sft")


def test_minift_robust_refuses_bad_input_before_any_work(capsys):
    from minift.cli import main

    assert main(["robust", "--radius", "-0.5"]) == 2
    assert "radius must be >= 0" in capsys.readouterr().err
    assert main(["robust", "--trainings", "standard,trades"]) == 2
    assert "choices: standard, fgm, pgd, freelb" in capsys.readouterr().err


def test_adversarial_training_runs_with_lora_and_refuses_a_closed_form_method():
    from minift.recipes.finetune import FinetuneConfig, finetune, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    base, enc = load_base(progress=False, verbose=False)
    task = get_task("doc-returns", seed=0, per_class=20)
    adv = AdversarialConfig("fgm", radius=0.2)
    cfg = FinetuneConfig(method="lora", adversarial=adv, train=train_config(steps=2, eval_every=0, progress=False))  # fmt: skip
    plain = finetune(
        task, base, enc, FinetuneConfig(method="lora", train=cfg.train), keep_model=True
    )
    robust = finetune(task, base, enc, cfg, keep_model=True)
    a, b = plain.model.state_dict(), robust.model.state_dict()
    lora = [k for k in a if "lora_B" in k]
    assert lora and any(
        not torch.equal(a[k], b[k]) for k in lora
    )  # the adversarial term moved LoRA
    frozen = [k for k in a if "lora" not in k and "head" not in k]
    assert all(torch.equal(a[k], b[k]) for k in frozen)  # and nothing else
    with pytest.raises(UserError, match="fitted in closed form"):
        finetune(task, base, enc, FinetuneConfig(method="probe", adversarial=adv))
