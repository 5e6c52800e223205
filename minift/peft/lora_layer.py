"""The LoRA layer: a frozen linear layer plus s * B A on the side (see minift.peft.lora for
the math, rsLoRA and DoRA), with its merge, its checks, and the fused Triton path."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.peft.core import DEFAULT_ADAPTER, AdapterLayer
from minift.peft.targets import base_linear

QKV = ("q", "k", "v")  # the parts of GPT-2's fused c_attn, in order


class LoRALinear(AdapterLayer):
    """A linear layer plus s * B A, computed on the side (or merged into the weight)."""

    method = "lora"

    def __init__(
        self,
        base_layer: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        use_rslora: bool = False,
        use_dora: bool = False,
        parts: Sequence[int] | None = None,
        n_parts: int = 1,
        adapter_name: str = DEFAULT_ADAPTER,
    ) -> None:
        super().__init__(adapter_name)
        linear = base_linear(base_layer)
        if linear is None:
            raise TypeError(f"LoRA adapts linear layers, got {type(base_layer).__name__}")
        _check_rank(r, linear, n_parts)
        _check_dora_alone(base_layer, use_dora)
        self.base_layer = base_layer
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.r = r
        self.scaling = alpha / (math.sqrt(r) if use_rslora else r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        rank = r * (len(parts) if parts is not None else 1)
        w = linear.weight
        self.lora_A = nn.Parameter(
            torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device)
        )
        # PEFT's default: A ~ Kaiming-uniform (a = sqrt(5), nn.Linear's own init), B = 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if parts is not None:  # B's block for part p maps rank block p to output rows of p
            mask = torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device)
            size = self.out_features // n_parts
            for i, p in enumerate(parts):
                mask[p * size : (p + 1) * size, i * r : (i + 1) * r] = 1
            self.register_buffer("lora_B_mask", mask)
        else:
            self.lora_B_mask = None
        self.lora_magnitude = (  # DoRA's m, initialised to ||W||
            nn.Parameter(self.weight_norm(torch.zeros_like(w)).detach().clone())
            if use_dora
            else None
        )
        self.merged = False

    # ------------------------------------------------------------------ pieces
    @property
    def base_weight(self) -> torch.Tensor:
        return base_linear(self.base_layer).weight

    def effective_B(self) -> torch.Tensor:
        return self.lora_B if self.lora_B_mask is None else self.lora_B * self.lora_B_mask

    def delta_weight(self) -> torch.Tensor:
        """s * B A, the update in the shape of W."""
        return self.scaling * (self.effective_B() @ self.lora_A)

    def weight_norm(self, delta: torch.Tensor) -> torch.Tensor:
        """||W + delta|| per output row (DoRA's column norm in the paper's (in x out) layout)."""
        return torch.linalg.vector_norm(self.base_weight + delta, dim=1)

    def dora_scale(self) -> torch.Tensor:
        return self.lora_magnitude / self.weight_norm(self.delta_weight()).detach()

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            if self.active:
                return self.base_layer(x)
            return self._unmerged_base(x)
        if not self.active:
            return self.base_layer(x)
        if self.lora_magnitude is not None:
            return self._dora_forward(x)
        fused = _fused_path(self, x)
        if fused is not None:
            return fused
        base = self.base_layer(x)
        low_rank = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.effective_B())
        return base + self.scaling * low_rank

    def _dora_forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = base_linear(self.base_layer).bias
        base = self.base_layer(x)
        base_nobias = base - bias if bias is not None else base
        low_rank = self.scaling * F.linear(
            F.linear(self.lora_dropout(x), self.lora_A), self.effective_B()
        )
        # m/||W + sBA|| * (x W^T + s x A^T B^T) + b
        return self.dora_scale() * (base_nobias + low_rank) + (bias if bias is not None else 0)

    def _unmerged_base(self, x: torch.Tensor) -> torch.Tensor:
        """Base output while the adapter is merged but switched off."""
        linear = base_linear(self.base_layer)
        if self.base_layer is not linear:
            # Layers below (LoRA or UniPELT's, additive in W) computed with our s B A
            # merged in; take it back out. (DoRA never sits in a stack.)
            A, B = self.lora_A.detach(), self.effective_B().detach()
            return self.base_layer(x) - self.scaling * F.linear(F.linear(x, A), B)
        with torch.no_grad():
            weight = self._unmerged_weight(linear.weight)
        return F.linear(x, weight, linear.bias)

    def _unmerged_weight(self, merged: torch.Tensor) -> torch.Tensor:
        if self.lora_magnitude is not None:
            return merged / self._merge_scale[:, None] - self.delta_weight()
        return merged - self.delta_weight()

    # ------------------------------------------------------------------ merging
    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + s B A (DoRA: W <- m (W + s B A) / ||W + s B A||). Twice is an error."""
        if self.merged:
            raise RuntimeError(f"LoRA adapter {self.adapter_name!r} is already merged")
        self.check_mergeable()
        weight = base_linear(self.base_layer).weight
        if self.lora_magnitude is not None:
            scale = self.dora_scale()
            self.register_buffer("_merge_scale", scale.clone(), persistent=False)
            weight.copy_(scale[:, None] * (weight + self.delta_weight()))
        else:
            weight.add_(self.delta_weight())
        self.merged = True

    def check_mergeable(self) -> None:
        inner = self.base_layer
        while isinstance(inner, AdapterLayer):
            if not isinstance(inner, LoRALinear):
                # W + BA is only equivalent when nothing between us and W transforms the output.
                raise RuntimeError(
                    f"cannot merge LoRA adapter {self.adapter_name!r}: it wraps a "
                    f"{type(inner).__name__}, which would see the merged weight"
                )
            inner = inner.base_layer

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise RuntimeError(f"LoRA adapter {self.adapter_name!r} is not merged")
        weight = base_linear(self.base_layer).weight
        weight.copy_(self._unmerged_weight(weight))
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, dora={self.lora_magnitude is not None}, adapter={self.adapter_name!r}"


def _check_rank(r: int, linear: nn.Linear, n_parts: int) -> None:
    bound = min(linear.in_features, linear.out_features // n_parts)  # per part of a fused layer
    if r > bound:
        raise ValueError(
            f"LoRA rank r={r} exceeds min(in_features, out_features{' / parts' * (n_parts > 1)}) "
            f"= {bound}, the highest rank B A can have; choose r <= {bound}"
        )


def _check_dora_alone(base_layer: nn.Module, use_dora: bool) -> None:
    """DoRA normalises the layer's own W: it wraps a plain linear layer and no LoRA wraps it."""
    others = [base_layer] if use_dora and base_layer is not base_linear(base_layer) else []
    while isinstance(base_layer, AdapterLayer):
        others += [base_layer] if getattr(base_layer, "lora_magnitude", None) is not None else []
        base_layer = base_layer.base_layer
    if others:
        raise ValueError(
            f"DoRA cannot share a layer with another adapter (here {type(others[0]).__name__} "
            f"{others[0].adapter_name!r}): its norm ||W + s B A|| would miss the other's update "
            "and merging would not fold; merge_and_unload the other first, or use plain LoRA"
        )


def _fused_path(layer: LoRALinear, x: torch.Tensor) -> torch.Tensor | None:
    """On CUDA (or when MINIFT_KERNELS forces it) run the fused Triton kernel:
    one pass over x for x W^T and x A^T, the low-rank term added in the epilogue."""
    if layer.lora_dropout.training and isinstance(layer.lora_dropout, nn.Dropout):
        return None  # the kernel reads one x; dropout needs a second, masked copy
    if layer.base_layer is not base_linear(layer.base_layer):
        return None  # a wrapper below us: its own forward must run
    from minift.kernels import lora_linear, use_triton

    base = layer.base_layer
    if not use_triton(x, base.weight):
        return None
    return lora_linear(x, base.weight, base.bias, layer.lora_A, layer.effective_B(), layer.scaling)
