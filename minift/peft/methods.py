"""Every fine-tuning method by name, registered once, in the table at the bottom.

A method is its options (a config dataclass: LoRAConfig for lora, ...), its default
learning rate, a description, and prepare(model, config, run): which freezes or wraps a
fresh copy of the base model (with its task head) in place, and may hand back optimizer
groups or a per-step callback. `minift finetune --method M` builds its command-line
options from the config's fields, and a saved adapter is re-applied through the same table
(apply_method), so each setting has one default: the config's field default, or the
method's own value in ``defaults`` (LoRA's targets here are the attention matrices).

The default learning rates of the demo's methods come from scripts/sweep_lr.py (a grid of
factors of 3 around the previous default, grown toward the better edge, chosen on a run
with seed 1; the demo's 160 steps on the shipped base, heads started from the label
words; docs/results/lr_sweep.json, which tests/test_method_registry.py checks against
this table): methods that train few parameters take larger steps. The demo itself starts
every head at the probe (LP-FT), with rates swept for that start
(minift.recipes.demo.PROBE_HEAD_LR). llrd, gradual, layernorm and unipelt are not in the demo
and keep hand-set rates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn

from minift.model.gpt import GPT
from minift.model.heads import SequenceClassifier
from minift.model.params import find_gpt
from minift.peft.adapters import AdapterConfig, apply_adapters
from minift.peft.ia3 import IA3Config, apply_ia3, merge_ia3
from minift.peft.layerwise import (
    GradualUnfreezing,
    bitfit,
    freeze_all_but_last,
    layerwise_lr_groups,
    norm_tuning,
)
from minift.peft.lora import LoRAConfig, apply_lora, merge_lora
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning
from minift.peft.probe import fit_probe_head
from minift.peft.prompt import PromptConfig, apply_prompt_tuning
from minift.peft.unipelt import UniPELTConfig, apply_unipelt

# r = 8 on the attention matrices trains under 2% of the base's parameters.
ATTENTION = ("c_attn", "attn.c_proj")


@dataclass(frozen=True)
class RunContext:
    """What a method may need from the run it is prepared for."""

    lr: float
    steps: int
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class Preparation:
    """What a method's prepare() may hand back besides changing the model in place."""

    param_groups: list[dict] | None = None  # None: every trainable parameter, decay on matrices
    on_step: Callable | None = None  # called as on_step(step, trainer) after each step
    # fit(model, train_batches) -> report: the trainable part is fitted to its optimum in
    # closed form before training (the linear probe), and no optimizer steps follow.
    fit: Callable[[nn.Module, list[dict]], dict] | None = None


@dataclass(frozen=True)
class Method:
    name: str
    config: type  # the dataclass of its options
    lr: float  # default learning rate
    description: str
    prepare: Callable[[nn.Module, Any, RunContext | None], Preparation | None]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # its own values for config fields
    adapter: bool = False  # PEFT: saved as an adapter, re-applied by apply_method
    merge: Callable[[nn.Module], nn.Module] | None = None  # folds the adapter into the weights

    def option_defaults(self) -> dict[str, Any]:
        """Each option's default for this method (the config's, or the method's own)."""
        config = self.config()
        return {f.name: self.defaults.get(f.name, getattr(config, f.name)) for f in fields(config)}

    def make_config(self, options: Mapping[str, Any] | None = None) -> Any:
        """The config with ``options`` over the method's defaults; an unknown option is a
        ValueError naming the valid ones (the config itself checks the values)."""
        options = dict(options or {})
        valid = [f.name for f in fields(self.config)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {self.name!r}; its options are {valid}"
            )
        return self.config(**{**self.defaults, **options})


# ------------------------------------------------------------ options of the layer-wise methods
@dataclass
class NoOptions:
    """A method without options."""


@dataclass
class LastKConfig:
    k: int = 1  # blocks that train, from the top (0: only the final norm and the head)


@dataclass
class ProbeConfig:
    l2: float | None = None  # L2 penalty on the head (none: 3-fold CV on the training rows)


@dataclass
class LLRDConfig:
    decay: float = 0.7  # block l of L trains at lr * decay^(L - l)


@dataclass
class GradualConfig:
    every: int | None = None  # steps between unfreezings (none: steps // (n_layer + 1))
    decay: float = 1.0  # layer-wise LR decay on top (1: one rate for all)


@dataclass
class HybridConfig:
    r: int = 8  # LoRA rank
    alpha: float = 16.0  # LoRA scaling alpha / r
    target_modules: list[str] = field(default_factory=lambda: list(ATTENTION))  # LoRA's layers
    prefix_tokens: int = 5  # trained key/value prefixes per layer


# ------------------------------------------------------------ prepare functions
def _full(model: nn.Module, config: NoOptions, run: RunContext) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def _scratch(model: nn.Module, config: NoOptions, run: RunContext) -> None:
    torch.manual_seed(run.seed)
    backbone = model.backbone if isinstance(model, SequenceClassifier) else model
    backbone.load_state_dict(GPT(backbone.config).state_dict())
    if isinstance(model, SequenceClassifier):
        model.init_head()  # from the fresh embeddings: nothing pretrained may leak in
    _full(model, config, run)


def _layerwise(model: nn.Module, config: LastKConfig, run: RunContext) -> None:
    freeze_all_but_last(model, config.k)


def _probe(model: nn.Module, config: ProbeConfig, run: RunContext) -> Preparation:
    freeze_all_but_last(model, 0)
    find_gpt(model).transformer.ln_f.requires_grad_(False)
    return Preparation(fit=lambda m, batches: fit_probe_head(m, batches, config.l2))


def _llrd(model: nn.Module, config: LLRDConfig, run: RunContext) -> Preparation:
    model.requires_grad_(True)
    return Preparation(layerwise_lr_groups(model, run.lr, config.decay, run.weight_decay))


def _gradual(model: nn.Module, config: GradualConfig, run: RunContext) -> Preparation:
    n = len(find_gpt(model).transformer.h)
    every = config.every if config.every is not None else max(1, run.steps // (n + 1))
    schedule = GradualUnfreezing(model, every)
    groups = layerwise_lr_groups(model, run.lr, config.decay, run.weight_decay)
    return Preparation(param_groups=groups, on_step=schedule)


def _hybrid(model: nn.Module, config: HybridConfig, run: RunContext) -> None:
    lora = LoRAConfig(r=config.r, alpha=config.alpha, target_modules=config.target_modules)
    apply_lora(model, lora)
    apply_prefix_tuning(model, PrefixConfig(num_virtual_tokens=config.prefix_tokens))


def _peft(apply: Callable) -> Callable:
    """prepare() of a PEFT method: wrap the model in place; nothing else to hand back."""

    def prepare(model: nn.Module, config: Any, run: RunContext | None) -> None:
        apply(model, config)

    return prepare


def _layers(choose: Callable) -> Callable:
    """prepare() of a method that only chooses which parameters train."""

    def prepare(model: nn.Module, config: NoOptions, run: RunContext) -> None:
        choose(model)

    return prepare


LORA_DEFAULTS = {"target_modules": list(ATTENTION)}

BUILTIN: tuple[Method, ...] = (  # name, options, default lr, description, prepare, ...
    Method("full", NoOptions, 3e-3, "every parameter trains", _full),
    Method("scratch", NoOptions, 1e-3, "same architecture, random init, all trains", _scratch),
    Method("layerwise", LastKConfig, 3e-3, "train the last k blocks (and head) only", _layerwise),
    Method("bitfit", NoOptions, 1e-2, "train the biases only (BitFit)", _layers(bitfit)),
    Method("layernorm", NoOptions, 1e-2, "train the norms only", _layers(norm_tuning)),
    Method("probe", ProbeConfig, 3e-2, "frozen features, a linear head fitted to convergence",
           _probe),
    Method("llrd", LLRDConfig, 2e-3, "full fine-tuning, layer-wise LR decay", _llrd),
    Method("gradual", GradualConfig, 2e-3, "gradual unfreezing from the top", _gradual),
    Method("lora", LoRAConfig, 5e-3, "LoRA: a trained low-rank update", _peft(apply_lora),
           defaults=LORA_DEFAULTS, adapter=True, merge=merge_lora),
    Method("dora", LoRAConfig, 5e-3, "DoRA: LoRA + a magnitude per row", _peft(apply_lora),
           defaults={**LORA_DEFAULTS, "use_dora": True}, adapter=True, merge=merge_lora),
    Method("adapter", AdapterConfig, 1e-2, "bottleneck adapters", _peft(apply_adapters),
           adapter=True),
    Method("ia3", IA3Config, 1e-1 / 3, "IA3: learned scales on k, v, MLP", _peft(apply_ia3),
           adapter=True, merge=merge_ia3),
    Method("prefix", PrefixConfig, 9e-2, "prefix tuning: trained key/value prefixes",
           _peft(apply_prefix_tuning), adapter=True),
    Method("prompt", PromptConfig, 1e-1, "prompt tuning: trained input embeddings",
           _peft(apply_prompt_tuning), adapter=True),
    Method("unipelt", UniPELTConfig, 1e-2, "UniPELT: gated LoRA + adapter + prefix",
           _peft(apply_unipelt), adapter=True),
    Method("hybrid", HybridConfig, 5e-3, "LoRA + prefix tuning on one model", _hybrid,
           adapter=True),
)  # fmt: skip
METHODS: dict[str, Method] = {m.name: m for m in BUILTIN}


def register_method(method: Method) -> Method:
    """Add a method (a lesson's variant, an experiment) to the table. The built-in methods
    cannot be replaced; a name registered here again is replaced (a re-run cell)."""
    if method.name in {m.name for m in BUILTIN}:
        raise ValueError(f"{method.name!r} is a built-in method; choose another name")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def apply_method(model: nn.Module, method: str, config: Mapping[str, Any]) -> nn.Module:
    """Re-apply a PEFT method recorded in a model's peft_config (e.g. a saved adapter)."""
    m = get_method(method)
    if not m.adapter:
        adapters = sorted(n for n, x in METHODS.items() if x.adapter)
        raise ValueError(f"{method!r} is not a PEFT adapter method; those are {adapters}")
    m.prepare(model, m.make_config(config), None)
    return model
