"""What every parameter-efficient method shares: finding targets, wrapping layers,
named adapters, freezing, the trainable-parameter report.

Each method adds *adapter layers*: modules that subclass AdapterLayer and carry an
``adapter_name``. A wrapper (LoRA, IA3, a bottleneck adapter) holds the layer it adapts
as ``base_layer`` and replaces it in the model; an attachment (a prefix, a soft prompt)
is set on a hook of the model. Several named adapters may sit on one model (wrappers
nest); set_adapter chooses which are active, and an inactive adapter layer computes
exactly what its base layer computes. The base weights are never trained: a PEFT model's
trainable parameters are its adapters' (plus the task head).

Every wrapping method applies itself through one skeleton, ``wrap_targets``: check the
trainable extras, resolve the targets, build every wrapper (each constructor checks its
layer and options), and only then put them into the model, so that an error of any kind
leaves the model exactly as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch.nn as nn

from minift.model.params import count_parameters, find_gpt, parameter_report  # noqa: F401

DEFAULT_ADAPTER = "default"


class AdapterLayer(nn.Module):
    """Base class of every module a PEFT method adds to a model."""

    method: str = "adapter"

    def __init__(self, adapter_name: str = DEFAULT_ADAPTER) -> None:
        super().__init__()
        self.adapter_name = adapter_name
        self.active = True

    def check_mergeable(self) -> None:
        """Raise if merge() could not fold this layer into its weight. Layers that merge
        override it; merge_layers calls it on every layer before any weight changes."""


def merge_layers(layers: list, method: str) -> None:
    """Merge every layer or none: each is checked before the first weight changes, so a
    refused merge leaves the model as it was."""
    if any(layer.merged for layer in layers):
        raise RuntimeError(f"some {method} layers are already merged; unmerge before merging again")
    for layer in layers:
        layer.check_mergeable()
    for layer in layers:
        layer.merge()


def unmerge_layers(layers: list) -> None:
    for layer in layers:
        layer.unmerge()


def adapter_layers(
    model: nn.Module, adapter_name: str | None = None
) -> Iterator[tuple[str, AdapterLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer) and (
            adapter_name is None or module.adapter_name == adapter_name
        ):
            yield name, module


def adapter_names(model: nn.Module) -> list[str]:
    return sorted({m.adapter_name for _, m in adapter_layers(model)})


def set_adapter(model: nn.Module, names: str | Iterable[str]) -> None:
    """Activate the adapters called ``names`` and deactivate every other one."""
    wanted = {names} if isinstance(names, str) else set(names)
    unknown = wanted - set(adapter_names(model))
    if unknown:
        raise ValueError(
            f"no adapter named {sorted(unknown)}; the model has {adapter_names(model)}"
        )
    for _, layer in adapter_layers(model):
        layer.active = layer.adapter_name in wanted
        for p in adapter_parameters(layer):  # only the active adapters train
            p.requires_grad_(layer.active)


@contextlib.contextmanager
def disable_adapters(model: nn.Module):
    """Inside this context every adapter is off: the model computes its base output."""
    layers = [layer for _, layer in adapter_layers(model)]
    before = [layer.active for layer in layers]
    for layer in layers:
        layer.active = False
    try:
        yield model
    finally:
        for layer, was in zip(layers, before):
            layer.active = was


def adapter_parameters(layer: AdapterLayer) -> list[nn.Parameter]:
    """The layer's own parameters, not those of the base layer it wraps."""
    base = getattr(layer, "base_layer", None)
    base_ids = {id(p) for p in base.parameters()} if base is not None else set()
    return [p for p in layer.parameters() if id(p) not in base_ids]


def trainable_report(model: nn.Module) -> dict[str, Any]:
    trainable, total = count_parameters(model)
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / max(1, total)}


def print_trainable_parameters(model: nn.Module) -> str:
    line = parameter_report(model)
    print(line)
    return line
