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
from collections.abc import Callable, Iterable, Iterator
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


def base_linear(module: nn.Module) -> nn.Linear | None:
    """The nn.Linear at the bottom of a chain of wrappers (or the module itself)."""
    while isinstance(module, AdapterLayer) and getattr(module, "base_layer", None) is not None:
        module = module.base_layer
    return module if isinstance(module, nn.Linear) else None


def linear_names(model: nn.Module) -> list[str]:
    """Names of the linear layers PEFT may target: plain nn.Linear modules, or wrappers
    around one (so a second adapter can wrap the first); never an adapter's internals."""
    names = []
    for name, module in model.named_modules():
        if name and base_linear(module) is not None and not _inside_adapter(model, name):
            names.append(name)
    return names


def _inside_adapter(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(
        isinstance(model.get_submodule(".".join(parts[:i])), AdapterLayer)
        for i in range(1, len(parts))
    )


def match_targets(
    model: nn.Module,
    targets: str | Iterable[str],
    exclude: Iterable[str] = ("lm_head", "head"),
) -> list[str]:
    """Names of the linear layers that ``targets`` select.

    A target matches every module whose name ends with it, at a dot boundary (PEFT's rule:
    ``c_proj`` matches ``attn.c_proj`` and ``mlp.c_proj``). ``"all-linear"`` takes every
    linear layer except the output layers in ``exclude``. An unmatched target is a
    ValueError that lists the names that exist.
    """
    candidates = [
        n for n in linear_names(model) if n.split(".")[-1] not in exclude and n not in exclude
    ]
    if targets == "all-linear":
        return candidates
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("no target modules given")
    chosen, unmatched = [], []
    for t in targets:
        hits = [n for n in candidates if n == t or n.endswith("." + t)]
        if not hits:
            unmatched.append(t)
        chosen += [h for h in hits if h not in chosen]
    if unmatched:
        suffixes = sorted({n.split(".")[-1] for n in candidates})
        raise ValueError(
            f"target module(s) {unmatched} match no linear layer; layer names end with {suffixes} "
            f"(e.g. {candidates[:3]})"
        )
    return chosen


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def match_modules(model: nn.Module, targets: Iterable[str]) -> list[str]:
    """Names of the modules (any kind) that ``targets`` select by PEFT's suffix rule,
    never inside an adapter layer; an unmatched target is a ValueError."""
    names = [n for n, _ in model.named_modules() if n and not _inside_adapter(model, n)]
    chosen, unmatched = [], []
    for t in targets:
        hits = [n for n in names if n == t or n.endswith("." + t)]
        unmatched += [] if hits else [t]
        chosen += [h for h in hits if h not in chosen]
    if unmatched:
        leaves = sorted({n.split(".")[-1] for n in names})
        raise ValueError(f"target module(s) {unmatched} match no module; names end with {leaves}")
    return chosen


def _names(names: str | Iterable[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def check_extra(model: nn.Module, trainable_extra: str | Iterable[str]) -> None:
    """Raise (before any change) if a trainable_extra name selects no module."""
    match_modules(model, [t for t in _names(trainable_extra) if "." in t])


MakeLayer = Callable[[str, nn.Module], nn.Module]


def plan_wraps(
    model: nn.Module,
    targets: str | Iterable[str],
    make_layer: MakeLayer,
    *,
    modules: bool = False,
    check: Callable[[list[str]], None] | None = None,
) -> list[tuple[str, nn.Module]]:
    """(name, wrapper) for every module ``targets`` select (linear layers, or any module
    with ``modules=True``), built but not yet in the model: steps 2-4 of wrap_targets."""
    names = match_modules(model, _names(targets)) if modules else match_targets(model, targets)
    nested = [(a, b) for a in names for b in names if b.startswith(a + ".")]
    if nested:
        raise ValueError(
            f"the targets select both {nested[0][0]} and {nested[0][1]} inside it; "
            "a call wraps each module once, so choose one of them"
        )
    if check is not None:
        check(names)
    plan = []
    for name in names:
        module = model.get_submodule(name)
        try:
            layer = make_layer(name, module)
        except (TypeError, ValueError) as err:
            raise type(err)(f"cannot wrap {name}: {err}") from err
        _check_not_there(name, module, layer)
        plan.append((name, layer))
    return plan


def _check_not_there(name: str, module: nn.Module, new: nn.Module) -> None:
    """Refuse a second adapter of the same kind and name on one layer: their parameters
    would have the same names, and a saved adapter could not tell them apart."""
    while module is not None:
        same_kind = isinstance(module, type(new)) or isinstance(new, type(module))
        if same_kind and getattr(module, "adapter_name", None) == new.adapter_name:
            raise ValueError(
                f"{name} already has a {type(module).__name__} adapter named "
                f"{new.adapter_name!r}; give the new one another adapter_name"
            )
        module = getattr(module, "base_layer", None)


def install(model: nn.Module, plan: list[tuple[str, nn.Module]]) -> None:
    """Put planned wrappers into the model (the only step that changes it)."""
    for name, layer in plan:
        replace_module(model, name, layer)


def wrap_targets(
    model: nn.Module,
    targets: str | Iterable[str],
    make_layer: MakeLayer,
    *,
    trainable_extra: str | Iterable[str] = (),
    modules: bool = False,
    check: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """The skeleton of every wrapping method: validate everything, then change the model.

    1. every trainable extra exists; 2. every target matches by PEFT's suffix rule (an
    unknown one is a ValueError listing the names that exist); 3. ``check(names)`` vets the
    selection; 4. ``make_layer(name, module)`` builds each wrapper, its constructor checking
    the layer and the options (an error names the layer); 5. only then are the wrappers put
    in place. Returns the wrapped names; the caller then freezes the base and records its
    config."""
    check_extra(model, trainable_extra)
    plan = plan_wraps(model, targets, make_layer, modules=modules, check=check)
    install(model, plan)
    return [name for name, _ in plan]


def freeze_base(model: nn.Module, trainable_extra: str | Iterable[str] = ("head",)) -> None:
    """Train only the active adapters' parameters, plus the modules in trainable_extra: a
    plain name is a child of the model (e.g. the task "head"); a dotted name selects by the
    suffix rule (e.g. "transformer.h.3", an unfrozen last block: a hybrid)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for _, layer in adapter_layers(model):
        for p in adapter_parameters(layer):
            p.requires_grad_(layer.active)
    extra = _names(trainable_extra)
    for name, module in model.named_children():
        if name in extra:
            module.requires_grad_(True)
    dotted = [t for t in extra if "." in t]
    for name in match_modules(model, dotted) if dotted else []:
        model.get_submodule(name).requires_grad_(True)


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
