"""Layer-wise fine-tuning: which layers train, when, and how fast.

- Freeze all but the last k blocks (plus the final norm and the task head): the lower
  layers hold general features, the upper ones task-specific ones (Yosinski et al. 2014).
- BitFit (Ben Zaken et al. 2022): train the bias terms only.
- LayerNorm tuning: train only the norms' gains and biases.
- Gradual unfreezing (Howard and Ruder 2018, ULMFiT): start with the head, unfreeze one
  more block from the top every few steps, so the pretrained layers are not disturbed by
  the large early gradients of a random head.
- Discriminative learning rates / layer-wise LR decay (Howard and Ruder 2018; Clark et
  al. 2020): block l of L gets lr * decay^(L - l), the embeddings lr * decay^(L + 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn as nn

from minift.model.params import find_gpt


def _set_trainable(modules: Iterable[nn.Module], flag: bool = True) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def head_modules(model: nn.Module) -> list[nn.Module]:
    head = getattr(model, "head", None)
    return [head] if isinstance(head, nn.Module) else []


def freeze_all_but_last(model: nn.Module, k: int) -> nn.Module:
    """Train the last k blocks, the final norm and the task head; freeze the rest."""
    gpt = find_gpt(model)
    n = len(gpt.transformer.h)
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and the number of blocks ({n}), got {k}")
    _set_trainable([model], False)
    _set_trainable(list(gpt.transformer.h)[n - k :] + [gpt.transformer.ln_f] + head_modules(model))
    return model


def bitfit(model: nn.Module) -> nn.Module:
    """Train every bias (and the task head); freeze every weight."""
    gpt = find_gpt(model)
    _set_trainable([model], False)
    biases = [p for name, p in gpt.named_parameters() if name.endswith(".bias")]
    if not biases:
        raise ValueError("BitFit needs biases, and this model has none (config.bias=False)")
    for p in biases:
        p.requires_grad_(True)
    _set_trainable(head_modules(model))
    return model


def norm_tuning(model: nn.Module) -> nn.Module:
    """Train only the normalisation layers' parameters (and the task head)."""
    gpt = find_gpt(model)
    _set_trainable([model], False)
    norms = [m for name, m in gpt.named_modules() if name.split(".")[-1].startswith("ln_")]
    _set_trainable(norms + head_modules(model))
    return model


def layer_index(name: str, n_layer: int) -> int:
    """Depth of a parameter: 0 for embeddings, l + 1 for block l, n_layer + 1 above."""
    parts = name.split(".")
    if "h" in parts:
        return int(parts[parts.index("h") + 1]) + 1
    if any(p in parts for p in ("wte", "wpe")):
        return 0
    return n_layer + 1  # final norm, lm_head, task head


def layerwise_lr_groups(
    model: nn.Module, lr: float, decay: float = 0.8, weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer groups with lr * decay^(top - depth): the top trains at lr, each block
    below at decay times the rate of the block above. Every parameter gets a group, frozen
    ones included, so that gradual unfreezing can switch them on later."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    n = len(find_gpt(model).transformer.h)
    top = n + 1
    groups: dict[tuple[int, bool], dict] = {}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        depth = layer_index(name.removeprefix("backbone."), n)
        decayed = p.dim() >= 2
        key = (depth, decayed)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * decay ** (top - depth),
                "weight_decay": weight_decay if decayed else 0.0,
                "depth": depth,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


class GradualUnfreezing:
    """Call as on_step(step, trainer): every ``every`` steps one more block unfreezes,
    from the top down. At step 0 only the head (and final norm) trains."""

    def __init__(self, model: nn.Module, every: int) -> None:
        if every <= 0:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.model, self.every = model, every
        self.gpt = find_gpt(model)
        freeze_all_but_last(model, 0)
        self.unfrozen = 0

    def blocks_unfrozen_at(self, step: int) -> int:
        return min(len(self.gpt.transformer.h), step // self.every)

    def __call__(self, step: int, trainer=None) -> None:
        target = self.blocks_unfrozen_at(step)
        if target > self.unfrozen:
            freeze_all_but_last(self.model, target)
            self.unfrozen = target
