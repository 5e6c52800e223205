"""The fine-tuning methods of `minift finetune --method ...` and of the demo.

Each entry prepares a fresh copy of the base model (with its task head) in place. The
default learning rates come from a sweep on the default task (60 steps, normal base, see
docs/benchmarks.md): methods that train few parameters take larger steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from minift.model.gpt import GPT
from minift.model.heads import SequenceClassifier
from minift.model.params import find_gpt
from minift.peft.adapters import AdapterConfig, apply_adapters
from minift.peft.ia3 import IA3Config, apply_ia3
from minift.peft.layerwise import (
    GradualUnfreezing,
    bitfit,
    freeze_all_but_last,
    layerwise_lr_groups,
    norm_tuning,
)
from minift.peft.lora import LoRAConfig, apply_lora
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning
from minift.peft.prompt import PromptConfig, apply_prompt_tuning
from minift.peft.unipelt import UniPELTConfig, apply_unipelt


@dataclass
class Preparation:
    """What a method's prepare() may hand back besides changing the model in place."""

    param_groups: list[dict] | None = None  # None: every trainable parameter, decay on matrices
    on_step: Callable | None = None  # called as on_step(step, trainer) after each step


@dataclass
class Method:
    """prepare(model, config) freezes/wraps the model in place; it may return a Preparation
    (optimizer groups, a per-step callback). config.lr is already resolved."""

    name: str
    prepare: Callable[[torch.nn.Module, Any], Preparation | None]
    lr: float
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(name: str, lr: float, description: str = ""):
    def wrap(fn):
        METHODS[name] = Method(name, fn, lr, description)
        return fn

    return wrap


@register_method("full", lr=1e-3, description="every parameter trains")
def _full(model: torch.nn.Module, config: Any) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


@register_method(
    "scratch", lr=1e-3, description="same architecture, random init, every parameter trains"
)
def _scratch(model: torch.nn.Module, config: Any) -> None:
    torch.manual_seed(config.seed)
    backbone = model.backbone if isinstance(model, SequenceClassifier) else model
    fresh = GPT(backbone.config)
    backbone.load_state_dict(fresh.state_dict())
    if isinstance(model, SequenceClassifier):
        model.init_head()  # from the fresh embeddings: nothing pretrained may leak in
    _full(model, config)


def _lora_config(config, **extra) -> LoRAConfig:
    # The attention matrices only: r=8 then trains under 2% of the base's parameters.
    opts = {"r": 8, "alpha": 16, "target_modules": ["c_attn", "attn.c_proj"], **extra}
    opts.update(config.options)
    return LoRAConfig(**opts)


@register_method("lora", lr=5e-3, description="LoRA r=8 on the attention matrices")
def _lora(model, config) -> None:
    apply_lora(model, _lora_config(config))


@register_method("dora", lr=5e-3, description="DoRA: LoRA with a learned magnitude per output row")
def _dora(model, config) -> None:
    apply_lora(model, _lora_config(config, use_dora=True))


@register_method("layerwise", lr=3e-3, description="train the last block (and head) only")
def _layerwise(model, config) -> None:
    freeze_all_but_last(model, int(config.options.get("k", 1)))


@register_method("bitfit", lr=1e-2, description="train the biases only (BitFit)")
def _bitfit(model, config) -> None:
    bitfit(model)


@register_method("layernorm", lr=1e-2, description="train the LayerNorm parameters only")
def _layernorm(model, config) -> None:
    norm_tuning(model)


@register_method("probe", lr=3e-2, description="frozen backbone features, a linear probe")
def _probe(model, config) -> None:
    freeze_all_but_last(model, 0)
    for p in find_gpt(model).transformer.ln_f.parameters():
        p.requires_grad_(False)


@register_method("llrd", lr=2e-3, description="full fine-tuning with layer-wise LR decay")
def _llrd(model, config) -> Preparation:
    for p in model.parameters():
        p.requires_grad_(True)
    decay = float(config.options.get("decay", 0.7))
    return Preparation(
        param_groups=layerwise_lr_groups(model, config.lr, decay, config.weight_decay)
    )


@register_method("gradual", lr=2e-3, description="gradual unfreezing from the top (ULMFiT)")
def _gradual(model, config) -> Preparation:
    n = len(find_gpt(model).transformer.h)
    every = int(config.options.get("every", max(1, config.steps // (n + 1))))
    schedule = GradualUnfreezing(model, every)
    decay = float(config.options.get("decay", 1.0))
    groups = layerwise_lr_groups(model, config.lr, decay, config.weight_decay)
    return Preparation(param_groups=groups, on_step=schedule)


@register_method("adapter", lr=1e-2, description="Houlsby bottleneck adapters (reduction 16)")
def _adapter(model, config) -> None:
    apply_adapters(model, AdapterConfig(**config.options))


@register_method("ia3", lr=1e-1, description="IA3: learned scales on keys, values, MLP activations")
def _ia3(model, config) -> None:
    apply_ia3(model, IA3Config(**config.options))


@register_method(
    "prefix", lr=3e-2, description="prefix tuning: 10 trained key/value prefixes per layer"
)
def _prefix(model, config) -> None:
    apply_prefix_tuning(model, PrefixConfig(**config.options))


@register_method("prompt", lr=1e-1, description="prompt tuning: 10 trained input embeddings")
def _prompt(model, config) -> None:
    apply_prompt_tuning(model, PromptConfig(**config.options))


@register_method("unipelt", lr=1e-2, description="UniPELT: gated LoRA + adapter + prefix")
def _unipelt(model, config) -> None:
    apply_unipelt(model, UniPELTConfig(**config.options))


@register_method("hybrid", lr=5e-3, description="LoRA + prefix tuning on one model")
def _hybrid(model, config) -> None:
    apply_lora(model, _lora_config(config))
    apply_prefix_tuning(
        model, PrefixConfig(num_virtual_tokens=int(config.options.get("prefix_tokens", 5)))
    )
