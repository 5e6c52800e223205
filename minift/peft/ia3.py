"""IA3: infused adapter by inhibiting and amplifying inner activations (Liu et al. 2022,
"Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning").

IA3 learns one vector per adapted place and multiplies activations by it, element-wise:

    keys      k = l_k * (x W_k^T + b_k)
    values    v = l_v * (x W_v^T + b_v)
    MLP       y = (l_ff * f(x W_1^T + b_1)) W_2^T + b_2

The vectors start at ones, so an IA3 model at init is the base model, and they are tiny:
2 C per attention layer plus the MLP's inner width per block. The queries are left alone
(the paper rescales keys and values only). Because a scaling is linear it folds into the
weights (merge): scaling an output row-wise is  W <- diag(l) W, b <- l * b;  scaling an
input column-wise is  W <- W diag(l).

On GPT-2's fused c_attn (q, k and v in one matrix) only the chosen parts of the output
(k and v by default) are scaled; on the MLP's output projection c_proj the *input*, the
MLP's inner activation, is scaled ("feedforward" targets, as in PEFT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.peft.core import (
    DEFAULT_ADAPTER,
    AdapterLayer,
    adapter_layers,
    merge_layers,
    unmerge_layers,
)
from minift.peft.registry import remember_config
from minift.peft.targets import base_linear, freeze_base, wrap_targets

QKV = ("q", "k", "v")


@dataclass
class IA3Config:
    target_modules: list[str] = field(default_factory=lambda: ["c_attn", "mlp.c_proj"])
    feedforward_modules: list[str] = field(default_factory=lambda: ["mlp.c_proj"])  # scale input
    attn_parts: list[str] = field(default_factory=lambda: ["k", "v"])  # parts of a fused c_attn
    trainable_extra: list[str] = field(default_factory=lambda: ["head"])
    adapter_name: str = DEFAULT_ADAPTER

    def __post_init__(self) -> None:
        bad = [p for p in self.attn_parts if p not in QKV]
        if bad or not self.attn_parts:
            raise ValueError(
                f"attn_parts must be a non-empty subset of {QKV}, got {self.attn_parts}"
            )
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if isinstance(self.feedforward_modules, str):
            self.feedforward_modules = [self.feedforward_modules]


class IA3Linear(AdapterLayer):
    """A linear layer whose output (or input, ``feedforward=True``) is scaled by a
    learned vector, initialised to ones. ``parts``: only these equal slices of the output
    are scaled (k and v of a fused q|k|v projection); the others keep a fixed scale of 1."""

    method = "ia3"

    def __init__(
        self,
        base_layer: nn.Module,
        feedforward: bool = False,
        parts: list[int] | None = None,
        n_parts: int = 1,
        adapter_name: str = DEFAULT_ADAPTER,
    ) -> None:
        super().__init__(adapter_name)
        linear = base_linear(base_layer)
        if linear is None:
            raise TypeError(f"IA3 adapts linear layers, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.feedforward = feedforward
        w = linear.weight
        size = linear.in_features if feedforward else linear.out_features
        self.parts = list(range(n_parts)) if parts is None or feedforward else list(parts)
        self.n_parts = 1 if feedforward else n_parts
        width = size // self.n_parts * len(self.parts)
        self.ia3_l = nn.Parameter(torch.ones(width, dtype=w.dtype, device=w.device))
        self.merged = False

    def scale(self) -> torch.Tensor:
        """The full scaling vector: l on the adapted parts, ones elsewhere."""
        if len(self.parts) == self.n_parts:
            return self.ia3_l
        pieces = self.ia3_l.chunk(len(self.parts))
        one = torch.ones_like(pieces[0])
        return torch.cat([pieces[self.parts.index(p)] if p in self.parts else one
                          for p in range(self.n_parts)])  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x) if self.active else self._unmerged_forward(x)
        if not self.active:
            return self.base_layer(x)
        if self.feedforward:
            return self.base_layer(x * self.scale())
        return self.base_layer(x) * self.scale()

    @torch.no_grad()
    def _unmerged_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base output while the scaling is merged in but switched off."""
        linear, scale = self.base_layer, self.scale()
        if self.feedforward:
            return F.linear(x, linear.weight / scale, linear.bias)
        bias = linear.bias / scale if linear.bias is not None else None
        return F.linear(x, linear.weight / scale[:, None], bias)

    # ------------------------------------------------------------------ merging
    def check_mergeable(self) -> nn.Linear:
        if not isinstance(self.base_layer, nn.Linear):
            raise RuntimeError(
                f"IA3 adapter {self.adapter_name!r} wraps a {type(self.base_layer).__name__}, "
                "not the linear layer itself: only a scaling applied directly to a linear layer "
                "folds into its weight (apply IA3 before the other method to merge it)"
            )
        return self.base_layer

    @torch.no_grad()
    def _rescale(self, factor: torch.Tensor) -> None:
        linear = self.check_mergeable()
        if self.feedforward:  # W <- W diag(factor)
            linear.weight.mul_(factor)
            return
        linear.weight.mul_(factor[:, None])  # W <- diag(factor) W,  b <- factor * b
        if linear.bias is not None:
            linear.bias.mul_(factor)

    def merge(self) -> None:
        """Fold the scaling into the weight. Merging twice is an error."""
        if self.merged:
            raise RuntimeError(f"IA3 adapter {self.adapter_name!r} is already merged")
        self._rescale(self.scale().detach())
        self.merged = True

    def unmerge(self) -> None:
        """Divide the scaling back out (exact up to rounding; l must have no zero)."""
        if not self.merged:
            raise RuntimeError(f"IA3 adapter {self.adapter_name!r} is not merged")
        self._rescale(1.0 / self.scale().detach())
        self.merged = False

    def extra_repr(self) -> str:
        where = "input" if self.feedforward else f"output parts {self.parts} of {self.n_parts}"
        return f"scales {where}, adapter={self.adapter_name!r}"


def _matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_ia3(model: nn.Module, config: IA3Config | None = None) -> nn.Module:
    """Wrap every targeted linear layer in IA3Linear, in place; freeze the rest.

    Feedforward targets must be among the targets (PEFT's rule); everything is checked
    before the model changes."""
    config = config or IA3Config()

    def check(names: list[str]) -> None:
        stray = [t for t in config.feedforward_modules if not any(_matches(n, [t]) for n in names)]
        if stray:
            raise ValueError(
                f"feedforward_modules {stray} are not among the layers target_modules "
                f"{config.target_modules} select ({names[:4]} ...)"
            )

    def make(name: str, module: nn.Module) -> IA3Linear:
        feedforward = _matches(name, config.feedforward_modules)
        fused = name.endswith("c_attn") and not feedforward
        parts = [QKV.index(p) for p in config.attn_parts] if fused else None
        return IA3Linear(module, feedforward, parts, 3 if fused else 1, config.adapter_name)

    wrap_targets(
        model, config.target_modules, make, trainable_extra=config.trainable_extra, check=check
    )
    freeze_base(model, config.trainable_extra)
    remember_config(model, config.adapter_name, "ia3", asdict(config))
    return model


def ia3_layers(model: nn.Module, adapter_name: str | None = None) -> list[IA3Linear]:
    return [m for _, m in adapter_layers(model, adapter_name) if isinstance(m, IA3Linear)]


def merge_ia3(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    """Fold every IA3 scaling into its linear layer (all or, on an error, none)."""
    merge_layers(ia3_layers(model, adapter_name), "IA3")
    return model


def unmerge_ia3(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    unmerge_layers(ia3_layers(model, adapter_name))
    return model
