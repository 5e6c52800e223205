"""Four optimizers for fine-tuning, each written out, and the memory their state costs.

With g the gradient, lr the learning rate and lambda the weight decay:

AdamW (Kingma and Ba 2015; Loshchilov and Hutter 2019), 2 floats of state per parameter:
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    theta <- theta (1 - lr lambda) - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
  The decay is decoupled: it shrinks theta directly instead of entering g, where Adam's
  division by sqrt(v) would give large-gradient weights less decay than small ones.

SGD with momentum (Polyak 1964; PyTorch's form, Sutskever et al. 2013), 1 float:
    g <- g + lambda theta  (L2, coupled);   u <- mu u + g  (u = g at the first step)
    theta <- theta - lr u

Adafactor (Shazeer and Stern 2018), about 1/min(n, m) floats per weight of an n x m matrix:
  the second moment of a matrix is stored factored, as its row means R (n) and column
  means C (m) of g^2, and rebuilt as their rank-1 outer product R C^T / mean(R); there is
  no first moment. Steps are relative to the weight's size and clipped by their RMS:
    b2_t = 1 - t^-0.8;  R, C <- EMA(b2_t) of row, column means of g^2
    U = g / sqrt(R C^T / mean(R));   U <- U / max(1, RMS(U) / d)
    theta <- theta - max(eps2, RMS(theta)) * min(lr, 1/sqrt(t)) * U
  (vectors keep a full v). Eps placement follows torch.optim.Adafactor (clamps instead of
  the paper's eps1 added to g^2), so the test can compare with it.

Lion (Chen et al. 2023, found by program search), 1 float:
    c = b1 m + (1 - b1) g;  theta <- theta (1 - lr lambda) - lr sign(c);  m <- b2 m + (1 - b2) g
  Every coordinate moves by exactly lr: Lion wants a learning rate 3-10x smaller than
  AdamW's and a proportionally larger decay.

The trainer uses torch.optim.AdamW for "adamw" (its multi-tensor kernels are faster; the
tests show it computes what :class:`AdamW` here computes) and these classes for the others.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class AdamW(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                p.mul_(1 - lr * wd)
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v / (1 - b2**t)).sqrt_().add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


class SGDMomentum(Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.9, weight_decay=0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "u" not in state:
                    state["u"] = g.clone()
                else:
                    state["u"].mul_(group["momentum"]).add_(g)
                p.add_(state["u"], alpha=-group["lr"])


class Adafactor(Optimizer):
    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0):  # fmt: skip
        super().__init__(
            params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay)
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            eps1, eps2 = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                e1 = torch.finfo(p.dtype).eps if eps1 is None else eps1
                if not state:
                    state["step"] = 0
                    if g.dim() > 1:
                        state["row"] = g.new_zeros(g.shape[:-1] + (1,))
                        state["col"] = g.new_zeros(g.shape[:-2] + (1, g.shape[-1]))
                    else:
                        state["v"] = torch.zeros_like(g)
                state["step"] += 1
                t = state["step"]
                one_minus_b2 = t ** group["beta2_decay"]
                rho = min(group["lr"], 1 / math.sqrt(t))
                alpha = max(eps2, float(p.norm()) / math.sqrt(p.numel())) * rho
                p.mul_(1 - group["lr"] * group["weight_decay"])
                sq = g * g
                if g.dim() > 1:
                    row, col = state["row"], state["col"]
                    row.lerp_(sq.mean(dim=-1, keepdim=True), one_minus_b2)
                    col.lerp_(sq.mean(dim=-2, keepdim=True), one_minus_b2)
                    v = row @ col / row.mean(dim=-2, keepdim=True).clamp(min=e1)
                else:
                    state["v"].lerp_(sq, one_minus_b2)
                    v = state["v"].clone()
                update = v.clamp_(min=e1 * e1).rsqrt_().mul_(g)
                rms = float(update.norm()) / math.sqrt(update.numel())
                p.add_(update, alpha=-alpha / max(1.0, rms / group["d"]))


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                c = m * b1 + p.grad * (1 - b1)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(c), alpha=-group["lr"])
                m.lerp_(p.grad, 1 - b2)


OPTIMIZERS = {
    "adamw": torch.optim.AdamW,
    "sgd": SGDMomentum,
    "adafactor": Adafactor,
    "lion": Lion,
}


def build_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float,
                    betas: tuple[float, float]) -> Optimizer:  # fmt: skip
    """The optimizer called ``name`` over param groups (the trainer's entry point)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return SGDMomentum(groups, lr=lr, momentum=betas[0], weight_decay=weight_decay)
    if name == "lion":
        return Lion(groups, lr=lr, betas=(betas[0], 0.99), weight_decay=weight_decay)
    return Adafactor(groups, lr=lr, weight_decay=weight_decay)


def state_floats_per_param(optimizer: Optimizer) -> float:
    """Optimizer state (tensors only, step counters excluded) per trainable parameter,
    measured after at least one step."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_params = sum(p.numel() for p in params)
    n_state = sum(
        v.numel()
        for p in params
        for v in optimizer.state.get(p, {}).values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    return n_state / n_params
