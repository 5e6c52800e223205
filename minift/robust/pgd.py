"""Projected gradient descent on the input embeddings (Madry et al. 2018).

The attacker adds delta to the token embeddings e of a text and climbs the loss:

    delta_0 = 0 (or a random point of the ball)
    delta_{k+1} = Proj_r( delta_k + alpha * dir(grad_delta L(f(e + delta_k), y)) )

for K steps, dir and Proj_r from minift.robust.perturb (L2 or L-inf ball of radius r). The
default step alpha = 2.5 r / K is Madry et al.'s: enough to cross the ball and come back.
Only delta is differentiated (torch.autograd.grad), so the model's parameter gradients are
untouched. One step from zero with alpha = r is the fast gradient method (FGM: Miyato et
al. 2017 for L2; FGSM: Goodfellow et al. 2015 for L-inf).

A text is not an image: no token sits at e + delta, so an embedding attack measures how
smooth the classifier is around its inputs (what adversarial training regularises), not
what an attacker can type; minift.robust.hotflip changes real tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minift.model.params import find_gpt
from minift.robust.perturb import ascent_direction, check_radius, project, random_start


def token_embeddings(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """wte[idx] of the GPT inside ``model`` (positions are added later, by the model)."""
    return find_gpt(model).transformer.wte(idx)


def classifier_losses(
    model: torch.nn.Module, batch: dict
) -> Callable[[torch.Tensor], torch.Tensor]:
    """embeds -> the per-example cross-entropy of a classifier on ``batch`` fed those embeddings."""

    def loss_of(embeds: torch.Tensor) -> torch.Tensor:
        out = model(batch["idx"], attention_mask=batch["attention_mask"], inputs_embeds=embeds)
        return F.cross_entropy(out.logits, batch["labels"], reduction="none")

    return loss_of


def pgd_delta(
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    embeds: torch.Tensor,
    mask: torch.Tensor | None,
    radius: float,
    norm: str = "l2",
    steps: int = 10,
    step_size: float | None = None,
    random_init: bool = False,
) -> torch.Tensor:
    """The perturbation (B, T, C) after ``steps`` projected ascent steps on
    loss_of(embeds + delta) (per-example losses, summed: examples do not interact)."""
    check_radius(radius, norm)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    alpha = 2.5 * radius / steps if step_size is None else step_size
    embeds = embeds.detach()
    delta = random_start(embeds, radius, norm, mask) if random_init else torch.zeros_like(embeds)
    for _ in range(steps):
        delta.requires_grad_(True)
        (g,) = torch.autograd.grad(loss_of(embeds + delta).sum(), delta)
        delta = project(
            delta.detach() + alpha * ascent_direction(g, norm, mask), radius, norm, mask
        )
    return delta.detach()


def pgd_attack(
    model: torch.nn.Module,
    batch: dict,
    radius: float,
    norm: str = "l2",
    steps: int = 10,
    step_size: float | None = None,
) -> torch.Tensor:
    """The classifier's logits on ``batch`` (idx, attention_mask, labels) under the PGD
    perturbation of its token embeddings that raises each row's loss."""
    embeds = token_embeddings(model, batch["idx"]).detach()
    mask = batch["attention_mask"]
    with torch.enable_grad():
        delta = pgd_delta(
            classifier_losses(model, batch), embeds, mask, radius, norm, steps, step_size
        )
    with torch.no_grad():
        out = model(batch["idx"], attention_mask=mask, inputs_embeds=embeds + delta)
    return out.logits
