"""Adversarial training on the input embeddings, as a loss any fine-tuning method can use.

With e = wte[idx] the clean token embeddings, y the labels and L the cross-entropy:

- FGM (Miyato et al. 2017): one step from the clean gradient g = grad_e L(e),
      r = eps * g / ||g||_2 (L2; eps * sign(g) for L-inf, FGSM),
      loss = (1 - w) L(e) + w L(e + r).
- PGD-K (Madry et al. 2018): r = K projected ascent steps inside the ball
  (minift.robust.pgd), found with the parameters held fixed, then the same mixture.
- FreeLB (Zhu et al. 2020): K ascent steps from a random start in the ball, and the
  parameters trained on the average loss along the way,
      loss = (1/K) sum_{k=0}^{K-1} L(e + r_k),   r_{k+1} = Proj(r_k + alpha dir(grad_r L(e + r_k))),
  so each ascent step's gradient is also a descent step's ("free" large-batch training).

The perturbation is treated as a constant of the parameters (detached), as in the papers;
the embeddings e stay attached, so wte and everything after it train through both terms.
At radius 0 every r is exactly zero, the adversarial terms equal the clean loss, and the
training is standard training (tests/test_robust.py checks it step by step).

adversarial_objective wraps a classification TaskObjective's loss; the Trainer runs it
unchanged, whichever method (full, lora, ...) chose the trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minift.errors import UserError
from minift.robust.perturb import ascent_direction, check_radius, project, random_start
from minift.robust.pgd import classifier_losses, pgd_delta, token_embeddings


def _loss(model, batch: dict, embeds: torch.Tensor) -> torch.Tensor:
    """The classifier's own training loss on ``embeds`` (the head's cross-entropy, in its
    precision), so that at radius 0 every term is the standard loss bit for bit."""
    out = model(
        batch["idx"], attention_mask=batch["attention_mask"], labels=batch["labels"],
        inputs_embeds=embeds,
    )  # fmt: skip
    return out.loss


ADVERSARIAL = ("fgm", "pgd", "freelb")


@dataclass(frozen=True)
class AdversarialConfig:
    method: str = "fgm"  # fgm | pgd | freelb
    radius: float = 1.0  # eps: the ball's radius in embedding space
    norm: str = "l2"  # l2 | linf
    steps: int = 3  # K ascent steps (pgd, freelb)
    step_size: float | None = None  # alpha; None: 2.5 r / K (pgd), r / K (freelb)
    weight: float = 0.5  # w, the adversarial term's share of the loss (fgm, pgd)

    def __post_init__(self) -> None:
        if self.method not in ADVERSARIAL:
            raise UserError(
                f"unknown adversarial training {self.method!r}; choices: {', '.join(ADVERSARIAL)}"
            )
        check_radius(self.radius, self.norm)
        if self.steps < 1:
            raise UserError(f"adversarial steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.weight <= 1.0:
            raise UserError(f"the adversarial weight must be in [0, 1], got {self.weight}")


def fgm_delta(grad: torch.Tensor, radius: float, norm: str, mask=None) -> torch.Tensor:
    """Miyato et al.'s r = eps g / ||g||_2 (per example), or eps sign(g) for L-inf."""
    return radius * ascent_direction(grad, norm, mask)


def adversarial_loss(model, batch: dict, config: AdversarialConfig) -> tuple[torch.Tensor, dict]:
    """The training loss of ``config.method`` on a classification batch (idx,
    attention_mask, labels), and the clean loss as an extra metric."""
    embeds = token_embeddings(model, batch["idx"])
    if not embeds.requires_grad:  # a frozen wte (LoRA, ...): FGM still needs grad_e L
        embeds = embeds.detach().requires_grad_(True)
    mask = batch["attention_mask"]
    r, w = config.radius, config.weight
    if config.method == "freelb":
        alpha = r / config.steps if config.step_size is None else config.step_size
        delta = random_start(embeds.detach(), r, config.norm, mask)
        total = 0.0
        for k in range(config.steps):
            delta.requires_grad_(True)
            loss = _loss(model, batch, embeds + delta)
            total = total + loss / config.steps
            if k + 1 < config.steps:  # the last step's ascent would go unused
                (g,) = torch.autograd.grad(loss, delta, retain_graph=True)
                delta = project(
                    delta.detach() + alpha * ascent_direction(g, config.norm, mask),
                    r,
                    config.norm,
                    mask,
                )
            if k == 0:
                first = loss.detach()
        return total, {"first_loss": first.item()}
    clean = _loss(model, batch, embeds)
    if config.method == "fgm":
        (g,) = torch.autograd.grad(clean, embeds, retain_graph=True)
        delta = fgm_delta(g.detach(), r, config.norm, mask)
    else:
        delta = pgd_delta(
            classifier_losses(model, batch),
            embeds,
            mask,
            r,
            config.norm,
            config.steps,
            config.step_size,
        )
    adv = _loss(model, batch, embeds + delta)
    return (1 - w) * clean + w * adv, {"clean_loss": clean.item(), "adv_loss": adv.item()}


def adversarial_objective(objective, config: AdversarialConfig, kind: str = "classification"):
    """``objective`` (a classification TaskObjective) with its loss made adversarial."""
    if kind != "classification":
        raise UserError(f"adversarial training applies to classification tasks, not {kind!r} ones")

    def loss_fn(model, batch):
        return adversarial_loss(model, batch, config)

    return objective._replace(loss_fn=loss_fn)
