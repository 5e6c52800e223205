"""Finding the GPT inside a wrapped model, and counting its parameters.

Every wrapper minift builds (a classifier, a reward model, a PEFT-wrapped model) keeps the
transformer as a submodule, so techniques reach it through :func:`find_gpt` instead of
knowing each wrapper's attribute names. Counting goes through the set of distinct tensors,
so a tied embedding / lm_head pair counts once, as in the GPT-2 paper's figures.
"""

from __future__ import annotations

import torch.nn as nn

from minift.model.gpt import GPT


def find_gpt(model: nn.Module):
    """The minift GPT inside ``model`` (the model itself, or e.g. a classifier's backbone)."""
    for module in model.modules():
        if isinstance(module, GPT):
            return module
    raise ValueError(f"{type(model).__name__} contains no minift GPT to attach to")


def distinct_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list({id(p): p for p in model.parameters()}.values())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) element counts, a shared tensor counted once."""
    params = distinct_parameters(model)
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def parameter_report(model: nn.Module) -> str:
    """PEFT's one-line summary: trainable, all, and the trainable share in percent."""
    trainable, total = count_parameters(model)
    return (
        f"trainable params: {trainable:,} || all params: {total:,} || "
        f"trainable%: {100 * trainable / max(1, total):.4f}"
    )
