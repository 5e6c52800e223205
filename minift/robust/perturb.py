"""Perturbations of the input embeddings: the ball they live in and the step that grows them.

An attack in embedding space adds delta (B, T, C) to the token embeddings e = wte[idx] of
each example and looks for the delta that hurts the model most within a ball of radius r:

    L2:    ||delta_b||_2 <= r     (the norm over all of example b's real tokens together)
    L-inf: |delta_b,t,c| <= r     (every coordinate on its own)

Two pieces serve every attack and every kind of adversarial training (Goodfellow et al.
2015, Madry et al. 2018):
- the steepest-ascent direction of unit size for the norm: g / ||g||_2 for L2, sign(g)
  for L-inf (the linear model's best move on the ball);
- the projection back onto the ball: scale delta down to radius r (L2) or clip each
  coordinate to [-r, r] (L-inf).
Padding positions are held at zero (the mask), so they neither count towards the norm
nor move.
"""

from __future__ import annotations

import torch

from minift.errors import UserError

NORMS = ("l2", "linf")


def check_radius(radius: float, norm: str) -> None:
    """A radius below zero or an unknown norm is a UserError naming the valid choices."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; choices: {', '.join(NORMS)}")
    if not radius >= 0:  # also catches NaN
        raise UserError(f"the attack radius must be >= 0, got {radius}")


def _mask(delta: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return delta if mask is None else delta * mask.unsqueeze(-1).to(delta.dtype)


def example_norm(delta: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each example's perturbation, (B, T, C) -> (B, 1, 1)."""
    return delta.flatten(1).norm(dim=1).view(-1, 1, 1)


def ascent_direction(
    grad: torch.Tensor, norm: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The unit step that raises a linear loss most: g/||g||_2 (0 where g = 0) or sign(g)."""
    grad = _mask(grad, mask)
    if norm == "l2":
        n = example_norm(grad)
        return torch.where(n > 0, grad / n.clamp_min(torch.finfo(grad.dtype).tiny), 0.0)
    if norm == "linf":
        return grad.sign()
    raise UserError(f"unknown norm {norm!r}; choices: {', '.join(NORMS)}")


def project(
    delta: torch.Tensor, radius: float, norm: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The point of the radius-r ball nearest to delta (for L2 along the ray to it)."""
    delta = _mask(delta, mask)
    if norm == "l2":
        n = example_norm(delta)
        # min(1, r / ||delta||): inside the ball nothing moves
        scale = torch.where(n > radius, radius / n.clamp_min(torch.finfo(delta.dtype).tiny), 1.0)
        return delta * scale
    if norm == "linf":
        return delta.clamp(-radius, radius)
    raise UserError(f"unknown norm {norm!r}; choices: {', '.join(NORMS)}")


def random_start(
    like: torch.Tensor, radius: float, norm: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """A random point inside the ball: uniform coordinates in [-r, r], for L2 scaled by
    1/sqrt(n) (n the example's real coordinates), FreeLB's initialisation (Zhu et al. 2020)."""
    u = (torch.rand_like(like) * 2 - 1) * radius
    if norm == "l2":
        n = like[0].numel() if mask is None else mask.sum(1).view(-1, 1, 1) * like.size(-1)
        u = u / torch.as_tensor(n, dtype=like.dtype, device=like.device).clamp_min(1).sqrt()
    return project(u, radius, norm, mask)
