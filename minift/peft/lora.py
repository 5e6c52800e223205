"""LoRA: low-rank adaptation (Hu et al. 2021), with rsLoRA and DoRA: the config and the
whole-model operations (apply, merge, unmerge, unload); the layer is minift.peft.lora_layer.

A frozen weight W (out x in) is adapted by a trainable low-rank product:

    y = x W^T + b + s * dropout(x) A^T B^T,      A: r x in,  B: out x r,  s = alpha / r

A starts random and B at zero, so training starts exactly at the base model, and only
r (in + out) parameters per layer train instead of in * out. After training, B A can be
added into W (merge) and inference costs nothing extra.

- rsLoRA (Kalajdzievski 2023) uses s = alpha / sqrt(r), which keeps the update's scale
  stable as r grows, so larger ranks actually help.
- DoRA (Liu et al. 2024) splits the adapted weight into a direction and a magnitude:
      W' = m * (W + s B A) / ||W + s B A||,   the norm taken per output row,
  with m (out) trainable and initialised to ||W||; like the paper (sec. 4.3) the norm is
  treated as a constant in the backward pass, which saves memory at little cost. W must
  be the layer's own weight: DoRA wraps a plain linear layer, and no other LoRA adapter
  may sit over it (the norm would miss that adapter's update, and merging would not fold).
- r is at most min(in_features, out_features): B A cannot have a higher rank, so a larger
  r only adds parameters that cannot change anything (refused).
- GPT-2's fused c_attn (q, k and v in one matrix) can be adapted on some of its parts
  only: each chosen part gets its own rank-r pair, stored as one A (r * parts x in) and a
  block-structured B (out x r * parts) whose other blocks are held at zero by a fixed mask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from minift.peft.core import DEFAULT_ADAPTER, adapter_layers, merge_layers, unmerge_layers
from minift.peft.lora_layer import QKV, LoRALinear
from minift.peft.registry import remember_config
from minift.peft.targets import freeze_base, replace_module, wrap_targets

__all__ = [
    "QKV", "LoRAConfig", "LoRALinear", "apply_lora", "lora_layers", "merge_and_unload",
    "merge_lora", "unmerge_lora",
]  # fmt: skip


@dataclass
class LoRAConfig:
    r: int = 8  # the rank of B A (at most the layer's width)
    alpha: float = 16.0  # the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)
    dropout: float = 0.0  # dropout on the input of the low-rank path
    target_modules: str | list[str] = field(default_factory=lambda: ["c_attn"])  # name suffixes
    qkv_parts: list[str] | None = None  # for fused c_attn: e.g. ["q", "v"]; None = all of it
    use_rslora: bool = False  # rsLoRA: scale by alpha / sqrt(r) (Kalajdzievski 2023)
    use_dora: bool = False  # DoRA: a learned magnitude per output row (Liu et al. 2024)
    trainable_extra: list[str] = field(default_factory=lambda: ["head"])  # e.g. the task head
    adapter_name: str = DEFAULT_ADAPTER  # several named adapters can sit on one model

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < math.inf):
            raise ValueError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.qkv_parts is not None:
            bad = [p for p in self.qkv_parts if p not in QKV]
            if bad or not self.qkv_parts:
                raise ValueError(
                    f"qkv_parts must be a non-empty subset of {QKV}, got {self.qkv_parts}"
                )

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _parts_for(name: str, config: LoRAConfig) -> tuple[list[int] | None, int]:
    if config.qkv_parts is None or not name.endswith("c_attn"):
        return None, 1
    return [QKV.index(p) for p in config.qkv_parts], 3


def apply_lora(model: nn.Module, config: LoRAConfig | None = None) -> nn.Module:
    """Wrap every targeted linear layer of ``model`` in LoRALinear, in place; freeze the rest.

    Everything is checked (targets, trainable extras, each layer's rank and stacking)
    before anything changes, so a bad config leaves the model untouched.
    """
    config = config or LoRAConfig()

    def check(names: list[str]) -> None:
        if config.qkv_parts is not None and not any(n.endswith("c_attn") for n in names):
            raise ValueError(
                "qkv_parts applies to GPT-2's fused c_attn, which the targets do not include"
            )

    def make(name: str, module: nn.Module) -> LoRALinear:
        parts, n_parts = _parts_for(name, config)
        return LoRALinear(
            module, config.r, config.alpha, config.dropout, config.use_rslora,
            config.use_dora, parts, n_parts, config.adapter_name,
        )  # fmt: skip

    wrap_targets(
        model, config.target_modules, make, trainable_extra=config.trainable_extra, check=check
    )
    freeze_base(model, config.trainable_extra)
    remember_config(model, config.adapter_name, "lora", asdict(config))
    return model


def lora_layers(model: nn.Module, adapter_name: str | None = None) -> list[LoRALinear]:
    return [m for _, m in adapter_layers(model, adapter_name) if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    """Fold every LoRA update into its weight (all layers or, on an error, none)."""
    merge_layers(lora_layers(model, adapter_name), "LoRA")
    return model


def unmerge_lora(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    unmerge_layers(lora_layers(model, adapter_name))
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer (all or, on an error, none) and put the plain linear layers
    back: a model with no LoRA left, stacked adapters included."""
    merge_layers([layer for layer in lora_layers(model) if not layer.merged], "LoRA")
    while found := next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)), None
    ):
        replace_module(model, found[0], found[1].base_layer)
    return model
