"""The optimizer and the learning-rate schedule.

AdamW (Loshchilov and Hutter 2019) decouples weight decay from the gradient step:
    theta <- theta - lr * (m_hat / (sqrt(v_hat) + eps) + wd * theta)
Decay is applied to matrices only (weights of linears and embeddings); biases and norm
gains are left alone, as in GPT-2/3 training: shrinking a gain toward zero is not a prior
anyone wants.

The schedule warms up linearly (the Adam moments are noisy in the first steps), then
decays on a half cosine to min_lr_ratio * lr (Loshchilov and Hutter 2017).
"""

from __future__ import annotations

import math

import torch

from minift.train.optimizers import build_optimizer


def decay_groups(named_params, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Split trainable parameters into a decayed group (ndim >= 2) and an undecayed one."""
    decay, no_decay = [], []
    for _, p in named_params:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def unique_named_parameters(model: torch.nn.Module):
    """named_parameters() already yields a tied tensor once; this makes it explicit."""
    seen = set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            yield name, p


def make_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    param_groups: list[dict] | None = None,
    name: str = "adamw",
) -> torch.optim.Optimizer:
    groups = param_groups or decay_groups(unique_named_parameters(model), weight_decay)
    if not groups or not any(p.requires_grad for g in groups for p in g["params"]):
        raise ValueError("the model has no trainable parameters: nothing to optimise")
    return build_optimizer(name, groups, lr, weight_decay, betas)  # minift.train.optimizers


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_linear(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then a straight line down to min_ratio (BERT's schedule)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
    return 1 - (1 - min_ratio) * progress


def warmup_constant(step: int, total: int, warmup: int, min_ratio: float) -> float:
    return (step + 1) / warmup if warmup > 0 and step < warmup else 1.0


SCHEDULES = {"cosine": warmup_cosine, "linear": warmup_linear, "constant": warmup_constant}


def make_schedule(optimizer, total: int, warmup: int, min_ratio: float, kind: str = "cosine"):
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    rule = SCHEDULES[kind]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: rule(step, total, warmup, min_ratio)
    )
