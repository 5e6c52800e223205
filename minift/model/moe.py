"""Mixture of experts: E copies of the MLP, each token routed to k of them.

A router scores every expert for token x, in float32 (its softmax decides discrete
choices, which bf16 rounding would flip; Fedus et al. 2021 call this selective precision):

    p(x) = softmax(W_r x),      chosen = top-k of p(x),
    y(x) = sum_{e in chosen} g_e(x) MLP_e(x),
    g_e  = p_e / sum_{e' in chosen} p_e'  (norm_topk: the gates sum to one, as in
           Mixtral), or g_e = p_e (Switch, top-1: the router's gradient comes from g).

With top-1 routing the renormalised gate is p_e / p_e = 1 whatever the router says, so
the task loss sends the router no gradient (only the auxiliary losses train it); that is
why norm_topk defaults to renormalising for top_k > 1 only.

Top-1 is the Switch Transformer (Fedus et al. 2021), top-2 GShard (Lepikhin et al. 2021)
and Mixtral (Jiang et al. 2024). A token costs k experts' FLOPs, whatever E is.

Load balancing (Fedus et al. 2021). Left alone, the router sends most tokens to a few
experts. With f_i the fraction of the N k assignments that go to expert i and P_i the mean
router probability of expert i over the N tokens,

    L_balance = E * sum_i f_i P_i,

which is 1 when routing is uniform and E when one expert takes everything; f is not
differentiable, P is, so the gradient pushes probability away from busy experts.

Router z-loss (Zoph et al. 2022, ST-MoE): L_z = mean_x (logsumexp_e (W_r x)_e)^2 keeps the
logits small, so the float32 softmax stays well conditioned.

Capacity (Lepikhin et al. 2021; Fedus et al. 2021): each expert takes at most
C = ceil(capacity_factor * k N / E) assignments, first choices of all tokens before
second choices, in token order. An assignment beyond C is dropped; a token whose every
assignment is dropped gets y = 0 and so passes through the block's residual unchanged.
capacity_factor=None keeps every assignment (dropless, as Mixtral).

Sparse upcycling (Komatsuzaki et al. 2022): :func:`upcycle` turns each dense MLP of a
pretrained model into an MoE whose experts all start as copies of it, with a fresh router.
With gates that sum to one the upcycled model computes exactly the dense model at first;
fine-tuning then lets the experts drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.model.config import GPTConfig
from minift.model.layers import MLP


@dataclass
class RouterStats:
    """What one MoE layer's router did on the last forward pass."""

    load: torch.Tensor  # (E,) f_i: fraction of assignments per expert, before capacity
    importance: torch.Tensor  # (E,) P_i: mean router probability per expert
    balance_loss: torch.Tensor  # E * sum_i f_i P_i
    z_loss: torch.Tensor  # mean (logsumexp logits)^2
    dropped_tokens: torch.Tensor  # tokens with every assignment over capacity (passed through)
    dropped_assignments: torch.Tensor  # token -> expert assignments over capacity
    capacity: int | None  # assignments per expert, None when unlimited


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor, n_experts: int) -> torch.Tensor:
    """E * sum_i f_i P_i for router probabilities (N, E) and chosen experts (N, k)."""
    f = torch.bincount(chosen.reshape(-1), minlength=n_experts).float() / chosen.numel()
    return n_experts * (f * probs.float().mean(dim=0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean over tokens of logsumexp(logits)^2 (Zoph et al. 2022)."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def capacity_keep(chosen: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """(N, k) bool: which assignments fit in their expert's capacity. Priority: every
    token's first choice, in token order, then every second choice, and so on."""
    N, k = chosen.shape
    order = chosen.t().reshape(-1)  # choice rank major: all first choices come first
    onehot = F.one_hot(order, n_experts)
    slot = ((onehot.cumsum(dim=0) - 1) * onehot).sum(dim=-1)  # position in its expert's queue
    return (slot < capacity).view(k, N).t()


class _LastStats:
    """The last forward pass's RouterStats. They hold autograd graphs, which cannot be
    deep-copied or pickled, so a copy of the module (copy.deepcopy of a model that has
    run, as fine-tuning does) starts with none."""

    def __init__(self) -> None:
        self.value: RouterStats | None = None

    def __deepcopy__(self, memo) -> _LastStats:
        return _LastStats()

    def __getstate__(self) -> dict:
        return {"value": None}


class MoEMLP(nn.Module):
    """An MoE MLP: ``router`` (n_embd -> E, no bias) and ``experts.E`` (GPT-2 MLPs, so the
    parameter names read transformer.h.N.mlp.experts.E.c_fc). Forward returns y only; the
    router's statistics and auxiliary losses of the last call are in ``self.stats``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        moe = config.moe
        if moe.experts < 1:
            raise ValueError(f"MoEMLP needs moe.experts >= 1, got {moe.experts}")
        self.n_experts = moe.experts
        self.top_k = moe.top_k
        self.capacity_factor = moe.capacity_factor
        self.aux_weight, self.z_weight = moe.aux_weight, moe.z_weight
        self.norm_topk = moe.renormalize
        self.router = nn.Linear(config.n_embd, self.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config) for _ in range(self.n_experts))
        self._last = _LastStats()

    @property
    def stats(self) -> RouterStats | None:
        """What the router did on the last forward pass (None before the first)."""
        return self._last.value

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C) -> chosen experts (N, k), gates (N, k) float32, kept (N, k) bool; fills
        self.stats."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())  # (N, E), float32
        probs = logits.softmax(dim=-1)
        top_p, chosen = probs.topk(self.top_k, dim=-1)
        gates = top_p / top_p.sum(dim=-1, keepdim=True) if self.norm_topk else top_p
        capacity = None
        kept = torch.ones_like(chosen, dtype=torch.bool)
        if self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * self.top_k * x.size(0) / self.n_experts)
            kept = capacity_keep(chosen, self.n_experts, capacity)
        self._last.value = RouterStats(
            load=torch.bincount(chosen.reshape(-1), minlength=self.n_experts).float()
            / chosen.numel(),
            importance=probs.mean(dim=0).detach(),
            balance_loss=load_balancing_loss(probs, chosen, self.n_experts),
            z_loss=router_z_loss(logits),
            dropped_tokens=(~kept).all(dim=-1).sum(),
            dropped_assignments=(~kept).sum(),
            capacity=capacity,
        )
        return chosen, gates, kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        chosen, gates, kept = self.route(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, rank = torch.nonzero((chosen == e) & kept, as_tuple=True)
            if token.numel() == 0:
                continue
            y = expert(flat[token]) * gates[token, rank, None]
            out = out.index_add(0, token, y.to(out.dtype))
        return out.view(shape)

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """aux_weight * L_balance + z_weight * L_z of the last forward pass."""
        if self.stats is None:
            return None
        return self.aux_weight * self.stats.balance_loss + self.z_weight * self.stats.z_loss


def moe_layers(model: nn.Module) -> list[MoEMLP]:
    """The MoE MLPs of a model, in order."""
    return [m for m in model.modules() if isinstance(m, MoEMLP)]
