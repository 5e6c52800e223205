"""What a PEFT method records on the model it wraps, so that a saved adapter can be
re-applied: model.peft_config[adapter_name] lists the methods applied, in order, with
their configs as dicts. The methods themselves are in one table, minift.peft.methods
(apply_method re-applies a recorded entry)."""

from __future__ import annotations

from typing import Any

import torch.nn as nn


def remember_config(
    model: nn.Module, adapter_name: str, method: str, config: dict[str, Any]
) -> None:
    """Record what was applied under adapter_name (a list: hybrids stack several methods)."""
    registry = model.__dict__.setdefault("peft_config", {})
    registry.setdefault(adapter_name, []).append({"method": method, "config": config})
