"""Serving many users at once: each row of a batch through its own user's LoRA adapter.

With one adapter per user on a shared frozen base, a server holding requests from users
u_1..u_B could merge one adapter at a time (one batch per user) or run B copies of the
model. Neither scales. Since every adapter is additive, W_l = W + s_l B_l A_l, a layer
can compute the base product once for the whole batch and add each row's own low-rank
term (Punica, Chen et al. 2023; S-LoRA, Sheng et al. 2023):

    y_m = x_m W^T + b + s_{u(m)} (x_m A_{u(m)}^T) B_{u(m)}^T,

the second term being :func:`minift.kernels.multi_lora.multi_lora` (one Triton launch
for all users on a GPU). :func:`stack_adapters` builds such a model from a base and the
LoRA-adapted models of several users; ``with users(model, ids)`` says whose each row is
(-1: the base alone). Ranks may differ between users: each is padded with zero rows of
A and zero columns of B to the largest, which adds exactly nothing.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from minift.errors import UserError
from minift.kernels.multi_lora import multi_lora, one_adapter
from minift.peft.lora_layer import LoRALinear
from minift.peft.targets import base_linear


class MultiLoRALinear(nn.Module):
    """A frozen linear layer plus one of L stacked LoRA adapters per row."""

    def __init__(
        self, base: nn.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor
    ):
        super().__init__()
        self.base_layer = base
        self.register_buffer("lora_A", lora_A)  # (L, r, in)
        self.register_buffer("lora_B", lora_B)  # (L, out, r)
        self.register_buffer("scaling", scaling)  # (L,)
        self.ids: torch.Tensor | None = None
        self.only_user: int | None = None  # set by users() when every row is one user's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.ids is None:
            raise RuntimeError("no user ids set: run the model inside `with users(model, ids):`")
        if self.only_user is not None:  # one user: two plain matmuls beat the segmented kernel
            return y + one_adapter(x, self.lora_A, self.lora_B, self.only_user, self.scaling)
        # users() checked the ids once for every layer and call in its block
        return y + multi_lora(x, self.lora_A, self.lora_B, self.ids, self.scaling, check_ids=False)


def _lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def stack_adapters(base: nn.Module, adapted: Sequence[nn.Module]) -> nn.Module:
    """A copy of ``base`` whose LoRA-targeted layers hold every model's adapter, stacked.

    ``adapted[l]`` is user l's model: ``base`` with LoRA (unmerged, no DoRA) on the same
    layers. Checks that every model adapts the same layers of the same base."""
    if not adapted:
        raise UserError("stack_adapters needs at least one adapted model")
    layers = [_lora_layers(m) for m in adapted]
    names = sorted(layers[0])
    if not names:
        raise UserError("the first model has no LoRA layers to stack")
    for i, found in enumerate(layers):
        if sorted(found) != names:
            raise UserError(
                f"model {i} adapts {sorted(found)}, model 0 adapts {names}: users must share targets"
            )
        for name, layer in found.items():
            if layer.merged or layer.lora_magnitude is not None:
                raise UserError(
                    f"model {i} layer {name}: merged or DoRA adapters cannot be stacked"
                )
    served = copy.deepcopy(base).eval()
    for name in names:
        per_user = [found[name] for found in layers]
        r = max(
            layer.r if layer.lora_B_mask is None else layer.lora_A.shape[0] for layer in per_user
        )
        first = per_user[0]
        A = torch.zeros(len(per_user), r, first.in_features, dtype=first.lora_A.dtype)
        B = torch.zeros(len(per_user), first.out_features, r, dtype=first.lora_A.dtype)
        for lid, layer in enumerate(per_user):
            rank = layer.lora_A.shape[0]
            A[lid, :rank] = layer.lora_A.detach().cpu()
            B[lid, :, :rank] = layer.effective_B().detach().cpu()
        scaling = torch.tensor([layer.scaling for layer in per_user], dtype=torch.float32)
        target = served.get_submodule(name)
        linear = base_linear(target)
        if linear is None or linear.weight.shape != first.base_weight.shape:
            raise UserError(f"layer {name} of the base does not match the adapted models")
        parent, _, child = name.rpartition(".")
        device = linear.weight.device
        setattr(
            served.get_submodule(parent) if parent else served,
            child,
            MultiLoRALinear(linear, A.to(device), B.to(device), scaling.to(device)),
        )
    return served


@contextlib.contextmanager
def users(model: nn.Module, ids: torch.Tensor | Sequence[int]) -> Iterator[nn.Module]:
    """Within the block, row b of every batch goes through adapter ``ids[b]`` (-1: none)."""
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    if not layers:
        raise UserError("the model has no stacked adapters (build it with stack_adapters)")
    ids = torch.as_tensor(ids, dtype=torch.long, device=layers[0].lora_A.device)
    n = layers[0].lora_A.shape[0]
    low, high = (int(ids.min()), int(ids.max())) if ids.numel() else (-1, -1)
    if low < -1 or high >= n:
        raise UserError(f"user ids must lie in [-1, {n - 1}] for {n} stacked adapters")
    for layer in layers:
        layer.ids = ids
        layer.only_user = low if low == high >= 0 else None
    try:
        yield model
    finally:
        for layer in layers:
            layer.ids, layer.only_user = None, None
