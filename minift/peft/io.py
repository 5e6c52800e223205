"""Saving and loading only what PEFT trained: the adapters (and the task head).

A folder holds adapter_model.safetensors (the adapter's tensors, named as in the model)
and adapter_config.json (the methods applied, in order, with their configs). Loading
re-applies those methods to a fresh base model, then copies the tensors in, checking
every name and shape first: a file that does not fit the model changes nothing.
"""

from __future__ import annotations

import copy
import pathlib

import torch
import torch.nn as nn

from minift.io import read_json, write_json
from minift.model.checkpoint import load_state, save_state
from minift.peft.core import DEFAULT_ADAPTER, adapter_layers, adapter_parameters
from minift.peft.methods import apply_method

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def canonical(name: str) -> str:
    """A parameter's name without the ``base_layer`` hops that nesting adds, so an adapter's
    tensors keep one name whatever other adapters are wrapped around or under it."""
    return name.replace(".base_layer", "")


def trained_parameters(
    model: nn.Module, adapter_name: str = DEFAULT_ADAPTER
) -> dict[str, nn.Parameter]:
    """canonical name -> parameter, for one named adapter plus every trainable parameter
    that belongs to no adapter (the task head)."""
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    out: dict[str, nn.Parameter] = {}
    adapter_ids = set()
    for _, layer in adapter_layers(model):
        for p in adapter_parameters(layer):
            adapter_ids.add(id(p))
            if layer.adapter_name == adapter_name:
                out[canonical(names[id(p)])] = p
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in adapter_ids:
            out[canonical(name)] = p
    return out


def adapter_state_dict(
    model: nn.Module, adapter_name: str = DEFAULT_ADAPTER
) -> dict[str, torch.Tensor]:
    return {
        k: p.detach().contiguous().cpu() for k, p in trained_parameters(model, adapter_name).items()
    }


def save_adapter(model: nn.Module, path, adapter_name: str = DEFAULT_ADAPTER) -> pathlib.Path:
    configs = getattr(model, "peft_config", {}).get(adapter_name)
    if not configs:
        raise ValueError(f"the model has no adapter named {adapter_name!r} to save")
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_state(adapter_state_dict(model, adapter_name), path / WEIGHTS)
    write_json(path / CONFIG, {"adapter_name": adapter_name, "methods": configs})
    return path


def load_adapter(model: nn.Module, path, adapter_name: str | None = None) -> nn.Module:
    """Re-apply the saved methods to ``model`` and load the saved tensors into it.

    Everything is tried on a copy first, so a file that does not fit leaves ``model``
    exactly as it was."""
    path = pathlib.Path(path)
    if not (path / CONFIG).exists():
        raise FileNotFoundError(f"{path} holds no {CONFIG}")
    saved = read_json(path / CONFIG, "adapter config")
    if not (isinstance(saved, dict) and {"adapter_name", "methods"} <= set(saved)):
        raise ValueError(
            f"{path / CONFIG} is not an adapter config written by save_adapter "
            "(it needs 'adapter_name' and 'methods')"
        )
    state = load_state(path / WEIGHTS)
    name = adapter_name or saved["adapter_name"]

    def apply_all(target: nn.Module) -> dict[str, nn.Parameter]:
        for entry in saved["methods"]:
            apply_method(target, entry["method"], dict(entry["config"], adapter_name=name))
        return trained_parameters(target, name)

    check_fits(apply_all(copy.deepcopy(model)), state, path)
    params = apply_all(model)
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value)
    return model


def check_fits(params: dict[str, nn.Parameter], state: dict[str, torch.Tensor], source) -> None:
    problems = []
    for key, value in state.items():
        if key not in params:
            problems.append(f"unknown tensor {key!r}")
        elif params[key].shape != value.shape:
            problems.append(
                f"{key!r} has shape {tuple(value.shape)}, the model needs {tuple(params[key].shape)}"
            )
    missing = sorted(set(params) - set(state))
    if missing:
        problems.append(f"missing tensors {missing[:3]}")
    if problems:
        names = sorted(params)
        raise ValueError(
            f"adapter weights in {source} do not fit the model: "
            + "; ".join(problems[:5])
            + f". The adapter's tensors on this model are {names[:6]}{' ...' if len(names) > 6 else ''}"
        )
