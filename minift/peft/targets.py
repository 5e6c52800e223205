"""Which modules a PEFT method changes, and which parameters train.

Targets follow PEFT's rule: a target matches every module whose name ends with it
(``c_proj`` matches ``attn.c_proj`` and ``mlp.c_proj``); an unknown target is an error that
lists the names that exist. ``wrap_targets`` is the skeleton every wrapping method uses:
validate everything (targets, trainable extras, the method's own checks, each wrapper's
construction), then install the wrappers, so a refused call leaves the model unchanged.
``freeze_base`` then leaves only the active adapters (and the named extras) trainable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch.nn as nn

from minift.peft.core import AdapterLayer, adapter_layers, adapter_parameters


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
