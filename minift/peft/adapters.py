"""Bottleneck adapters: small trainable MLPs inserted into a frozen transformer.

An adapter maps a hidden vector h (width C) through a bottleneck of width m = C / rf
(rf, the reduction factor) and back:

    A(h) = W_up f(W_down h + b_down) + b_up,      W_down: m x C,  W_up: C x m

with f a non-linearity (ReLU, GELU). W_up and b_up start at zero, so A(h) = 0 at init and
an adapted model starts as exactly the base model; only about 2 C m parameters per
adapter train. Where the adapter sits is the *layout*:

- Houlsby et al. 2019 ("Parameter-Efficient Transfer Learning for NLP"): a serial adapter
  after each sublayer's output projection, before the residual add, in both the attention
  and the MLP sublayer:   h <- h + s A(h)   on the outputs of attn.c_proj and mlp.c_proj.
- Pfeiffer et al. 2020 ("AdapterFusion"): the same serial adapter after the MLP only,
  half the parameters for nearly the same accuracy.
- Parallel (He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer
  Learning"): the adapter reads the sublayer's *input* x and its scaled output is added
  to the sublayer's output:   y = MLP(x) + s A(x).   He et al. found the parallel form
  with a scale s > 1 (they use 4) at least as good as the serial one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from minift.peft.core import DEFAULT_ADAPTER, AdapterLayer
from minift.peft.registry import remember_config
from minift.peft.targets import base_linear, freeze_base, wrap_targets

LAYOUTS = {  # layout -> default targets
    "houlsby": ["attn.c_proj", "mlp.c_proj"],
    "pfeiffer": ["mlp.c_proj"],
    "parallel": ["mlp"],
}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass
class AdapterConfig:
    layout: str = "houlsby"  # "houlsby" | "pfeiffer" | "parallel"
    reduction_factor: int = 16  # bottleneck width m = C / reduction_factor
    non_linearity: str = "relu"
    scaling: float = 1.0  # s; He et al. 2022 use 4 for the parallel adapter
    target_modules: list[str] | None = None  # None: the layout's places (LAYOUTS)
    trainable_extra: list[str] = field(default_factory=lambda: ["head"])
    adapter_name: str = DEFAULT_ADAPTER

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown adapter layout {self.layout!r}; choose from {list(LAYOUTS)}")
        rf = self.reduction_factor
        if isinstance(rf, bool) or not isinstance(rf, int) or rf <= 0:
            raise ValueError(f"reduction_factor must be a positive integer, got {rf!r}")
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(
                f"unknown non_linearity {self.non_linearity!r}; choose from {list(ACTIVATIONS)}"
            )

    @property
    def targets(self) -> list[str]:
        return list(self.target_modules) if self.target_modules else LAYOUTS[self.layout]


class Bottleneck(nn.Module):
    """A(h) = W_up f(W_down h + b_down) + b_up, with W_up, b_up = 0 (identity at init)."""

    def __init__(self, dim: int, reduction_factor: int, non_linearity: str, like: torch.Tensor):
        super().__init__()
        if dim % reduction_factor:
            raise ValueError(
                f"reduction_factor {reduction_factor} does not divide the hidden width {dim}: "
                "the bottleneck width is width / reduction_factor, so choose a divisor of it"
            )
        width = dim // reduction_factor
        kw = dict(dtype=like.dtype, device=like.device)
        self.down = nn.Linear(dim, width, **kw)  # PyTorch's default (Kaiming-uniform) init
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(width, dim, **kw)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class SerialAdapter(AdapterLayer):
    """A layer followed by an adapter on its output: y = L(x) + s A(L(x)) (Houlsby, Pfeiffer)."""

    method = "adapter"

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(config.adapter_name)
        linear = base_linear(base_layer)
        if linear is None:
            raise TypeError(f"a serial adapter follows a linear layer, got {type(base_layer)}")
        self.base_layer = base_layer
        self.scaling = config.scaling
        self.adapter = Bottleneck(
            linear.out_features, config.reduction_factor, config.non_linearity, linear.weight
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        if not self.active:
            return h
        return h + self.scaling * self.adapter(h)


class ParallelBranch(AdapterLayer):
    """The trainable half of a parallel adapter: x -> s A(x)."""

    method = "adapter"

    def __init__(self, dim: int, config: AdapterConfig, like: torch.Tensor) -> None:
        super().__init__(config.adapter_name)
        self.scaling = config.scaling
        self.adapter = Bottleneck(dim, config.reduction_factor, config.non_linearity, like)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.adapter(x)


class ParallelAdapter(nn.Module):
    """A sublayer with an adapter beside it: y = F(x) + s A(x) (He et al. 2022).

    It wraps a whole sublayer (the MLP), not one linear layer, so it is a plain module
    whose ``branch`` is the adapter layer: the MLP's own linear layers, under
    ``base_layer``, stay targetable by LoRA or IA3 applied afterwards.
    """

    def __init__(self, base_layer: nn.Module, dim: int, config: AdapterConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        like = next(base_layer.parameters())
        self.branch = ParallelBranch(dim, config, like)

    @property
    def adapter_name(self) -> str:
        return self.branch.adapter_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if not self.branch.active:
            return y
        return y + self.branch(x)


def _sublayer_width(module: nn.Module) -> int:
    """Input (= output) width of a sublayer such as the MLP: its first linear's in_features."""
    for m in module.modules():
        linear = base_linear(m)
        if linear is not None:
            return linear.in_features
    raise ValueError(f"{type(module).__name__} has no linear layer to size an adapter from")


def apply_adapters(model: nn.Module, config: AdapterConfig | None = None) -> nn.Module:
    """Insert bottleneck adapters in ``model`` in place, in ``config.layout``; freeze the rest.

    Every target is resolved and every width checked before the model changes, so a bad
    config leaves it untouched.
    """
    config = config or AdapterConfig()
    parallel = config.layout == "parallel"

    def make(name: str, module: nn.Module) -> nn.Module:
        if parallel:
            return ParallelAdapter(module, _sublayer_width(module), config)
        return SerialAdapter(module, config)

    wrap_targets(
        model, config.targets, make, trainable_extra=config.trainable_extra, modules=parallel
    )
    freeze_base(model, config.trainable_extra)
    remember_config(model, config.adapter_name, "adapter", asdict(config))
    return model
