"""AdapterFusion: a learned attention over task adapters (Pfeiffer et al. 2021).

Pfeiffer, Kamath, Rueckle, Cho and Gurevych 2021, "AdapterFusion: Non-Destructive Task
Composition for Transfer Learning". Two stages:

1. *knowledge extraction*: one bottleneck adapter per source task, each trained alone on a
   frozen base (the serial adapters of minift's peft package, "pfeiffer" or "houlsby"
   layout), under its own adapter name;
2. *knowledge composition*: for a target task the base and every adapter stay frozen and a
   fusion layer at each adapter site learns which adapters to read, per token.

At a site, h is the output of the wrapped layer (the MLP's c_proj in the "pfeiffer"
layout), the adapters' common input. With a_i = s_i A_i(h), adapter i's output (what the
adapter alone would add to h), the fusion layer computes

    q   = W_Q h + b_Q                     the query, from the block's output
    k_i = W_K a_i,   v_i = W_V a_i        a key and a value per adapter
    p   = softmax_i(q . k_i / T)          attention over the N adapters (T = 1 in the paper)
    y   = h + sum_i p_i v_i               the residual h, plus the mix of the adapters

W_Q, W_K, W_V are C x C (C the hidden width). As in the paper, W_Q and W_K start random
and W_V as the identity (plus small noise), so that at the start y is h plus a mixture of
the adapters' own outputs. A key bias would add the same q . b_K to every score and
cancel in the softmax, so the key has none; the query has a bias, a learned prior over
the adapters. Only the fusion parameters (and the target task's head) train.

With W_V = I and p one-hot on adapter j, y = h + s_j A_j(h): exactly adapter j alone
(tests/test_adapter_fusion.py checks it). The paper also keeps W_V near the identity; the
reference implementation (adapter-transformers) adds lambda ||I - W_V||^2 to the loss, here
``fusion_regularization(model)``.

A technique package imports no other, so this module does not import the peft package: a
serial adapter layer is recognised by its parts, a string ``adapter_name``, a
``base_layer`` it wraps, an ``adapter`` module and a ``scaling``, and computes
base_layer(x) + scaling * adapter(base_layer(x)). Several named adapters on one layer nest
(each wraps the previous); ``apply_adapter_fusion`` replaces such a chain by one
``FusedAdapters`` layer that feeds the same h to every adapter and fuses their outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


class AdapterFusion(nn.Module):
    """y = h + sum_i softmax_i((W_Q h + b_Q) . W_K a_i / T) W_V a_i over N adapter outputs."""

    def __init__(
        self,
        dim: int,
        temperature: float = 1.0,
        value_noise: float = 1e-6,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"the fusion width must be >= 1, got {dim}")
        if not temperature > 0:
            raise ValueError(f"the fusion temperature must be > 0, got {temperature}")
        kw = dict(dtype=dtype, device=device)
        self.temperature = float(temperature)
        self.query = nn.Linear(dim, dim, bias=True, **kw)  # PyTorch's default (random) init
        self.key = nn.Linear(dim, dim, bias=False, **kw)
        self.value = nn.Linear(dim, dim, bias=False, **kw)
        with torch.no_grad():
            self.value.weight.copy_(torch.eye(dim, **kw))
            self.value.weight.add_(torch.randn_like(self.value.weight) * value_noise)
        self.last_weights: torch.Tensor | None = None  # p of the last call, detached

    def forward(self, h: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """h: (..., C); outputs: (..., N, C), the N adapters' outputs a_i. Returns (..., C)."""
        if outputs.dim() != h.dim() + 1 or outputs.shape[-1] != h.shape[-1]:
            raise ValueError(
                f"adapter outputs must be (..., N, C) for h of shape (..., C); got "
                f"{tuple(outputs.shape)} for h {tuple(h.shape)}"
            )
        q = self.query(h)  # (..., C)
        k = self.key(outputs)  # (..., N, C)
        v = self.value(outputs)  # (..., N, C)
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) / self.temperature  # (..., N)
        p = F.softmax(scores, dim=-1)
        self.last_weights = p.detach()
        return h + (p.unsqueeze(-1) * v).sum(dim=-2)

    def value_distance(self) -> torch.Tensor:
        """||I - W_V||_F^2, the distance of the value matrix from its identity start."""
        eye = torch.eye(self.value.in_features, dtype=self.value.weight.dtype, device=self.value.weight.device)  # fmt: skip
        return (eye - self.value.weight).pow(2).sum()


class FusedAdapters(nn.Module):
    """A layer and N frozen adapters on its output, fused: y = fusion(h, [s_i A_i(h)])
    with h = base_layer(x). It holds the adapters' bottleneck modules (shared with
    nothing else once installed) and remembers the chain it replaced (not as a
    submodule, so no parameter is counted twice) for ``remove_fusion``."""

    def __init__(
        self,
        base_layer: nn.Module,
        names: list[str],
        adapters: list[nn.Module],
        scalings: list[float],
        fusion: AdapterFusion,
        replaced: nn.Module,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter_names = list(names)
        self.adapters = nn.ModuleList(adapters)  # names may hold dots; a list keeps them out
        self.scalings = [float(s) for s in scalings]
        self.fusion = fusion
        self.__dict__["replaced"] = replaced  # unregistered: restored by remove_fusion

    def adapter_outputs(self, h: torch.Tensor) -> torch.Tensor:
        """(..., N, C): a_i = s_i A_i(h) for each adapter."""
        return torch.stack([s * a(h) for s, a in zip(self.scalings, self.adapters)], dim=-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        return self.fusion(h, self.adapter_outputs(h))


def _is_serial_adapter(module: nn.Module) -> bool:
    """A serial adapter layer: base_layer(x) + scaling * adapter(base_layer(x))."""
    return (
        isinstance(getattr(module, "adapter_name", None), str)
        and isinstance(getattr(module, "base_layer", None), nn.Module)
        and isinstance(getattr(module, "adapter", None), nn.Module)
        and isinstance(getattr(module, "scaling", None), (int, float))
    )


def _chains(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(name, [outermost, ..., innermost serial adapter]) for every chain of nested serial
    adapters: the sites where fusion can sit."""
    sites, seen = [], set()
    for name, module in model.named_modules():
        if id(module) in seen or not _is_serial_adapter(module):
            continue
        chain = []
        while _is_serial_adapter(module):
            chain.append(module)
            seen.add(id(module))
            module = module.base_layer
        sites.append((name, chain))
    return sites


def _width(module: nn.Module) -> int:
    """The output width of the linear layer at the bottom of a chain of wrappers."""
    while not isinstance(module, nn.Linear) and getattr(module, "base_layer", None) is not None:
        module = module.base_layer
    if not isinstance(module, nn.Linear):
        raise ValueError(f"fusion follows a linear layer; found {type(module).__name__}")
    return module.out_features


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply_adapter_fusion(
    model: nn.Module,
    adapter_names: Iterable[str],
    *,
    trainable_extra: str | Iterable[str] = ("head",),
    temperature: float = 1.0,
    value_noise: float = 1e-6,
    seed: int | None = None,
) -> list[str]:
    """Fuse the serial adapters called ``adapter_names`` at every site that holds them.

    Each site (a layer wrapped by these adapters) becomes a ``FusedAdapters`` layer; then
    every parameter is frozen except the fusion layers' and those of the model's children
    named in ``trainable_extra`` (the task "head"; an absent name is skipped, as a bare GPT
    has no head). Everything is checked before the model changes: no names, a name given
    twice, an unknown name, a name that is not a serial adapter, a site holding only some
    of the names or other adapters besides them, a model already fused: ValueError.
    ``seed`` (optional) fixes the fusion layers' random start. Returns the sites' names.
    """
    names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
    if not names:
        raise ValueError("AdapterFusion needs at least one adapter to fuse; got none")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"adapter named twice in the fusion: {twice}")
    if any(isinstance(m, FusedAdapters) for m in model.modules()):
        raise ValueError("the model already has AdapterFusion layers; remove_fusion first")
    sites = _chains(model)
    serial = {layer.adapter_name for _, chain in sites for layer in chain}
    unknown = [n for n in names if n not in serial]
    if unknown:
        other = {
            m.adapter_name
            for m in model.modules()
            if isinstance(getattr(m, "adapter_name", None), str)
        }
        not_serial = [n for n in unknown if n in other]
        if not_serial:
            raise ValueError(
                f"adapter(s) {not_serial} are not serial bottleneck adapters; fusion reads "
                "serial adapters (the houlsby or pfeiffer layout)"
            )
        raise ValueError(
            f"no serial adapter named {unknown}; the model has {sorted(serial) or 'none'}"
        )
    wanted, plan = set(names), []
    for site, chain in sites:
        here = [layer.adapter_name for layer in chain]
        if not wanted & set(here):
            continue
        missing = [n for n in names if n not in here]
        extra = [n for n in here if n not in wanted]
        if missing or extra:
            raise ValueError(
                f"{site} holds adapters {here}; a fusion site must hold exactly {names} "
                f"(missing {missing}, not fused {extra})"
            )
        by_name = {layer.adapter_name: layer for layer in chain}
        plan.append((site, chain, [by_name[n] for n in names]))

    extras = [trainable_extra] if isinstance(trainable_extra, str) else list(trainable_extra)
    # built on the CPU (where a seed fixes the start on any device), then moved
    with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        built = []
        for site, chain, layers in plan:
            base = chain[-1].base_layer
            like = next(layers[0].adapter.parameters())
            fusion = AdapterFusion(_width(base), temperature, value_noise, dtype=like.dtype)
            fusion = fusion.to(like.device)
            adapters = [layer.adapter for layer in layers]
            scalings = [layer.scaling for layer in layers]
            built.append((site, FusedAdapters(base, names, adapters, scalings, fusion, chain[0])))
    for site, layer in built:
        _set(model, site, layer)
    freeze_for_fusion(model, extras)
    return [site for site, _ in built]


def freeze_for_fusion(model: nn.Module, trainable_extra: Iterable[str] = ("head",)) -> None:
    """Train only the fusion layers and the model's children named in trainable_extra."""
    model.requires_grad_(False)
    for p in fusion_parameters(model):
        p.requires_grad_(True)
    extra = set(trainable_extra)
    for name, child in model.named_children():
        if name in extra:
            child.requires_grad_(True)


def fusion_layers(model: nn.Module) -> list[tuple[str, FusedAdapters]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FusedAdapters)]


def fusion_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, layer in fusion_layers(model) for p in layer.fusion.parameters()]


def fusion_regularization(model: nn.Module) -> torch.Tensor:
    """sum over sites of ||I - W_V||_F^2 (add lambda times it to the loss to keep W_V near
    the identity, as adapter-transformers does)."""
    terms = [layer.fusion.value_distance() for _, layer in fusion_layers(model)]
    if not terms:
        raise ValueError("the model has no AdapterFusion layers")
    return torch.stack(terms).sum()


def fusion_weights(model: nn.Module) -> dict[str, list[float]]:
    """Per site, the mean attention p over the adapters in the last forward pass: which
    source adapters the target task reads, and where."""
    out = {}
    for name, layer in fusion_layers(model):
        p = layer.fusion.last_weights
        if p is not None:
            out[name] = p.reshape(-1, p.shape[-1]).float().mean(0).tolist()
    return out


def remove_fusion(model: nn.Module) -> nn.Module:
    """Put back the adapter chains the fusion replaced (the fusion layers are dropped);
    which parameters train is left for the caller to choose."""
    for name, layer in fusion_layers(model):
        _set(model, name, layer.replaced)
    return model
