"""The PEFT methods by name, so that a saved adapter can be re-applied from its JSON config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

PEFT_METHODS: dict[str, tuple[type, Callable]] = {}


def register_peft_method(name: str, config_cls: type):
    """Register ``apply(model, config) -> model`` under ``name`` with its config dataclass."""

    def wrap(fn: Callable) -> Callable:
        PEFT_METHODS[name] = (config_cls, fn)
        return fn

    return wrap


def remember_config(
    model: nn.Module, adapter_name: str, method: str, config: dict[str, Any]
) -> None:
    """Record what was applied under adapter_name (a list: hybrids stack several methods)."""
    registry = model.__dict__.setdefault("peft_config", {})
    registry.setdefault(adapter_name, []).append({"method": method, "config": config})


def apply_method(model: nn.Module, method: str, config: dict[str, Any]) -> nn.Module:
    if method not in PEFT_METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; known: {sorted(PEFT_METHODS)}")
    config_cls, fn = PEFT_METHODS[method]
    return fn(model, config_cls(**config))
