"""UniPELT: LoRA, a bottleneck adapter and prefix tuning on one model, each behind a
learned gate (Mao et al. 2022, "UniPELT: A Unified Framework for Parameter-Efficient
Language Model Tuning").

Which method works best depends on the task and the amount of data, so UniPELT uses all
three and lets the model learn, per input, how much of each to use. Each submodule's
output is multiplied by a gate G = sigmoid(W_G x) in (0, 1), computed from the input x
of the place it adapts:

    LoRA (on q and v of c_attn):  y = W x + b + G_L(x) s B A x,   G_L = sigmoid(W_GL x)
    adapter (after the MLP):      h <- h + G_A(h) A(h),           G_A = sigmoid(W_GA h)
    prefix (every layer):         [G_P P_K ; K],  [G_P P_V ; V],  G_P = mean_t sigmoid(W_GP x_t)

Scales: a gate multiplies exactly what its submodule adds on its own: LoRA's s B A x with
minift's usual s = alpha / r, the adapter's A(h), the prefix. A gate at 1 therefore gives
back plain LoRA (r and alpha mean what they mean in LoRAConfig), the plain Pfeiffer
adapter and plain prefix tuning. The authors' LoRA gate replaces s instead: their
G_L B A x is alpha = r here.

Where the gates look, minift departs from the authors' code on purpose. There every gate
is one number per example, the mean over the sequence of sigmoid(W_G x_t). Here the LoRA
and adapter gates are per token, so a position's output never depends on later tokens:
a causal language model can be trained with UniPELT, padding moves no gate, and cached
generation computes what a full forward pass does. The prefix gate cannot be per token:
it scales the keys and values that every query shares, so it is the authors' mean over
the positions of the attention layer's input. That mean sees the whole sequence, which
suits sequence classification (the paper's setting); a language model trained with it
lets a position's gate see later tokens. In cached generation the gate of the prompt is
kept for the generated tokens. (The authors, on BERT's separate query and value layers,
have a LoRA gate for each; the fused c_attn has one for both.)

The pieces are the other modules' own: LoRALinear (minift.peft.lora), SerialAdapter
(minift.peft.adapters) and PrefixTuning (minift.peft.prefix), each extended by its gate.
A gated LoRA layer cannot be merged: its gate depends on the input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.peft.adapters import AdapterConfig, SerialAdapter
from minift.peft.core import DEFAULT_ADAPTER, find_gpt
from minift.peft.lora import QKV, LoRAConfig, LoRALinear
from minift.peft.prefix import PrefixConfig, PrefixTuning, add_prefix_adapter, prefix_hooks
from minift.peft.registry import remember_config
from minift.peft.targets import base_linear, check_extra, freeze_base, install, plan_wraps


@dataclass
class UniPELTConfig:
    r: int = 8  # LoRA
    alpha: float = 16.0
    lora_parts: list[str] = field(default_factory=lambda: ["q", "v"])  # parts of c_attn
    reduction_factor: int = 16  # adapter
    non_linearity: str = "relu"
    num_virtual_tokens: int = 10  # prefix
    prefix_init_std: float = 1.0
    trainable_extra: list[str] = field(default_factory=lambda: ["head"])
    adapter_name: str = DEFAULT_ADAPTER

    def __post_init__(self) -> None:  # each part's own config checks its options
        self.lora_config(), self.adapter_config(), self.prefix_config()

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig(r=self.r, alpha=self.alpha, qkv_parts=self.lora_parts)

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(
            layout="pfeiffer",
            reduction_factor=self.reduction_factor,
            non_linearity=self.non_linearity,
            adapter_name=self.adapter_name,
        )

    def prefix_config(self) -> PrefixConfig:
        return PrefixConfig(
            num_virtual_tokens=self.num_virtual_tokens,
            init_std=self.prefix_init_std,
            adapter_name=self.adapter_name,
        )


def _gate(features: int, like: torch.Tensor) -> nn.Linear:
    return nn.Linear(features, 1, dtype=like.dtype, device=like.device)


class GatedLoRALinear(LoRALinear):
    """LoRA whose low-rank update is scaled per token by G_L = sigmoid(W_GL x)."""

    method = "unipelt"

    def __init__(self, base_layer: nn.Module, config: UniPELTConfig) -> None:
        parts = [QKV.index(p) for p in config.lora_parts]
        super().__init__(
            base_layer, config.r, config.alpha, parts=parts, n_parts=3,
            adapter_name=config.adapter_name,
        )  # fmt: skip
        self.lora_gate = _gate(self.in_features, self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer(x)
        if not self.active:
            return base
        low_rank = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.effective_B())
        return base + torch.sigmoid(self.lora_gate(x)) * self.scaling * low_rank

    def check_mergeable(self) -> None:
        """Refused up front, so that merging a model that holds this layer changes nothing."""
        raise RuntimeError(
            f"UniPELT's LoRA ({self.adapter_name!r}) cannot be merged: its gate depends on the input"
        )


class GatedAdapter(SerialAdapter):
    """A serial adapter whose output is scaled per token by G_A = sigmoid(W_GA h)."""

    method = "unipelt"

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        self.gate = _gate(base_linear(base_layer).out_features, self.adapter.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        if not self.active:
            return h
        return h + torch.sigmoid(self.gate(h)) * self.scaling * self.adapter(h)


class _GateTap:
    """A forward pre-hook on an attention layer: computes that layer's prefix gate from
    the attention's input x (B, T, C) before the attention asks for its prefix."""

    def __init__(self, prefix: GatedPrefix, index: int) -> None:
        self.prefix, self.index = prefix, index

    def __call__(self, attn: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"]
        cache = args[2] if len(args) > 2 else kwargs.get("cache")
        if not self.prefix.active or (cache is not None and cache.length > 0):
            return  # switched off, or a generation step: keep the gate of the prompt
        gate = torch.sigmoid(self.prefix.gates[self.index](x)).mean(dim=1)  # (B, 1)
        self.prefix.gate_values[self.index] = gate


class GatedPrefix(PrefixTuning):
    """Prefix tuning whose keys and values are scaled per example by G_P (one gate per layer)."""

    method = "unipelt"

    def __init__(self, gpt: nn.Module, config: PrefixConfig) -> None:
        super().__init__(gpt, config)
        like = self.prefix
        self.gates = nn.ModuleList(_gate(gpt.config.n_embd, like) for _ in range(self.n_layer))
        self.gate_values: list[torch.Tensor | None] = [None] * self.n_layer

    def layer_kv(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = super().layer_kv(index, batch_size)
        gate = self.gate_values[index]
        if gate is None or gate.size(0) != batch_size:
            raise RuntimeError(
                "the prefix gate was not computed for this batch (no attention input)"
            )
        self.gate_values[index] = gate.detach()  # kept for cached steps; no graph held
        gate = gate.view(batch_size, 1, 1, 1).to(k.dtype)
        return gate * k, gate * v


def apply_unipelt(model: nn.Module, config: UniPELTConfig | None = None) -> nn.Module:
    """Gated LoRA on q, v of every c_attn, a gated adapter after every MLP and gated
    prefixes in every attention layer, in place; freeze the rest. Everything is resolved,
    built and checked before the model changes."""
    config = config or UniPELTConfig()
    check_extra(model, config.trainable_extra)
    gpt = find_gpt(model)
    if config.adapter_name in getattr(gpt, "prefix_tuning", {}):
        raise ValueError(f"the model already has a prefix adapter named {config.adapter_name!r}")
    prefix_hooks(gpt)  # checks that no foreign prefix is in the way
    prefix = GatedPrefix(gpt, config.prefix_config())
    adapter_config = config.adapter_config()
    plan = plan_wraps(model, ["c_attn"], lambda _, m: GatedLoRALinear(m, config))
    plan += plan_wraps(model, ["mlp.c_proj"], lambda _, m: GatedAdapter(m, adapter_config))
    install(model, plan)
    add_prefix_adapter(gpt, prefix)
    for i, block in enumerate(gpt.transformer.h):
        block.attn.register_forward_pre_hook(_GateTap(prefix, i), with_kwargs=True)
    freeze_base(model, config.trainable_extra)
    remember_config(model, config.adapter_name, "unipelt", asdict(config))
    return model
