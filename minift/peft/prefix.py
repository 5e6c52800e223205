"""Prefix tuning (Li and Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation").

Every attention layer l gets P trained key and value vectors, a prefix that every query
attends to as if P earlier tokens had been there:

    Attn_l(Q, K, V) = softmax(Q [P_K^l ; K]^T / sqrt(d) + M) [P_V^l ; V]

The model's weights stay frozen; only P_K, P_V (2 P C numbers per layer) train. Unlike a
soft prompt (minift.peft.prompt), which only enters at the input, the prefix acts on every
layer directly. The model calls ``attn.prefix(batch_size)`` for the (B, H, P, D) keys and
values and handles the masks, the KV cache and positions (the prefix has none).

Reparameterisation: optimising P_K, P_V directly is unstable, so Li and Liang train them
through an MLP, [P_K^l ; P_V^l]_l = MLP(E) for a P x C embedding E, and keep only the
MLP's output after training: ``drop_reparameterization`` bakes it into plain prefix
tensors and deletes the MLP (what is then saved is the prefixes alone).

Initialisation: random, or (``init_text``) the keys and values that the base model itself
computes for a real text, which the paper found much better in low-data settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.peft.core import DEFAULT_ADAPTER, AdapterLayer, disable_adapters, find_gpt
from minift.peft.registry import remember_config
from minift.peft.targets import check_extra, freeze_base


@dataclass
class PrefixConfig:
    num_virtual_tokens: int = 10  # P
    reparameterize: bool = False  # train through Li and Liang's MLP
    reparam_hidden: int | None = None  # the MLP's hidden width (None: n_embd)
    init_text: list[int] | None = None  # token ids: start from the base model's k, v for them
    init_std: float = 1.0  # random init N(0, init_std^2) when there is no init_text
    trainable_extra: list[str] = field(default_factory=lambda: ["head"])
    adapter_name: str = DEFAULT_ADAPTER

    def __post_init__(self) -> None:
        P = self.num_virtual_tokens
        if isinstance(P, bool) or not isinstance(P, int) or P <= 0:
            raise ValueError(f"num_virtual_tokens must be a positive integer, got {P!r}")
        if self.reparam_hidden is not None and self.reparam_hidden <= 0:
            raise ValueError(f"reparam_hidden must be positive, got {self.reparam_hidden}")
        if self.init_text is not None:
            if not self.init_text:
                raise ValueError("init_text is empty; give token ids, or None for a random init")
            if self.reparameterize:
                raise ValueError(
                    "init_text sets the prefixes themselves, which a reparameterising MLP "
                    "would replace; use one or the other"
                )


class PrefixHook(nn.Module):
    """What ``attn.prefix`` holds: the concatenated prefixes of the active prefix adapters
    for one layer. Installed only while one of them is active, so that with every prefix
    switched off the attention runs exactly as in the base model."""

    def __init__(self, attn: nn.Module, index: int) -> None:
        super().__init__()
        self.index = index
        self.sources: list[PrefixTuning] = []  # a plain list: the adapters live on the GPT
        self._attn = [attn]  # not a submodule (the attention owns us)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        kv = [s.layer_kv(self.index, batch_size) for s in self.sources if s.active]
        if len(kv) == 1:
            return kv[0]
        return torch.cat([k for k, _ in kv], dim=2), torch.cat([v for _, v in kv], dim=2)

    def sync(self) -> None:
        self._attn[0].prefix = self if any(s.active for s in self.sources) else None


class PrefixTuning(AdapterLayer):
    """The trained prefixes of every layer, registered on the GPT as ``prefix_tuning[name]``.

    ``prefix`` holds them as (n_layer, 2, P, C): layer, keys/values, virtual token, width.
    With reparameterisation they are MLP(E) instead: E (P x C) -> Linear -> tanh ->
    Linear -> (P, n_layer * 2 * C)."""

    method = "prefix"

    def __init__(self, gpt: nn.Module, config: PrefixConfig) -> None:
        super().__init__(config.adapter_name)
        c = gpt.config
        self.n_layer, self.n_head, self.head_dim = c.n_layer, c.n_head, c.head_dim
        self.num_tokens = config.num_virtual_tokens
        self._hooks: list[PrefixHook] = []
        like = gpt.transformer.wte.weight
        kw = dict(dtype=like.dtype, device=like.device)
        P, C, L = self.num_tokens, c.n_embd, c.n_layer
        if config.reparameterize:
            hidden = config.reparam_hidden or C
            self.embedding = nn.Parameter(torch.randn(P, C, **kw))
            self.mlp = nn.Sequential(
                nn.Linear(C, hidden, **kw), nn.Tanh(), nn.Linear(hidden, L * 2 * C, **kw)
            )
            self.register_parameter("prefix", None)
        elif config.init_text is not None:
            self.prefix = nn.Parameter(text_prefix(gpt, config.init_text, P).to(**kw))
        else:
            self.prefix = nn.Parameter(config.init_std * torch.randn(L, 2, P, C, **kw))

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        # Switching a prefix on or off installs or removes the attention hooks.
        self._active = bool(value)
        for hook in getattr(self, "_hooks", []):
            hook.sync()

    def attach(self, hooks: list[PrefixHook]) -> None:
        self._hooks = hooks
        for hook in hooks:
            hook.sources.append(self)
            hook.sync()

    def layer_prefix(self, index: int) -> torch.Tensor:
        """Layer ``index``'s keys and values, (2, P, C)."""
        if self.prefix is not None:
            return self.prefix[index]
        C = self.n_head * self.head_dim
        rows = slice(index * 2 * C, (index + 1) * 2 * C)  # only this layer's MLP outputs
        first, act, last = self.mlp
        out = F.linear(act(first(self.embedding)), last.weight[rows], last.bias[rows])
        return out.view(self.num_tokens, 2, C).transpose(0, 1)

    def layer_kv(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, P, D) keys and values for layer ``index``."""
        kv = self.layer_prefix(index).view(2, self.num_tokens, self.n_head, self.head_dim)
        kv = kv.transpose(1, 2).unsqueeze(1).expand(2, batch_size, -1, -1, -1)
        return kv[0], kv[1]

    @torch.no_grad()
    def bake(self) -> None:
        """Replace the MLP by its output: plain prefix tensors, nothing else to save."""
        if self.prefix is not None:
            return
        baked = torch.stack([self.layer_prefix(i) for i in range(self.n_layer)])
        requires_grad = self.embedding.requires_grad
        del self.mlp, self.embedding
        self.prefix = nn.Parameter(baked, requires_grad=requires_grad)

    def extra_repr(self) -> str:
        mode = "reparameterized by an MLP" if self.prefix is None else "plain"
        return f"layers={self.n_layer}, virtual_tokens={self.num_tokens}, {mode}, adapter={self.adapter_name!r}"


@torch.no_grad()
def text_prefix(gpt: nn.Module, ids: list[int], P: int) -> torch.Tensor:
    """The base model's own keys and values (n_layer, 2, P, C) for the first P tokens of
    ``ids`` (repeated if shorter), read from its KV cache, every adapter switched off."""
    vocab, block = gpt.config.vocab_size, gpt.config.block_size
    if P > block:
        raise ValueError(f"{P} virtual tokens initialised from text exceed block_size {block}")
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"init_text holds token ids {bad[:5]} outside the vocabulary [0, {vocab})")
    ids = (list(ids) * math.ceil(P / len(ids)))[:P]
    device = gpt.transformer.wte.weight.device
    was_training = gpt.training
    gpt.eval()
    with disable_adapters(gpt):
        cache = gpt.new_cache(1, P)
        gpt(torch.tensor([ids], device=device), cache=cache, compute_logits=False)
    gpt.train(was_training)
    C = gpt.config.n_embd
    kv = [torch.stack([layer.k[0], layer.v[0]]) for layer in cache.layers]  # (2, H, P, D)
    return torch.stack([t.transpose(1, 2).reshape(2, P, C) for t in kv])


def prefix_hooks(gpt: nn.Module) -> list[PrefixHook]:
    """One hook per attention layer, created once and kept on the attention module (a
    plain attribute, so it survives while uninstalled). Checks every layer first."""
    attns = [block.attn for block in gpt.transformer.h]
    for i, attn in enumerate(attns):
        if attn.prefix is not None and not isinstance(attn.prefix, PrefixHook):
            raise ValueError(f"layer {i} already has a prefix that is not prefix tuning's")
    for i, attn in enumerate(attns):
        if "_prefix_hook" not in attn.__dict__:
            object.__setattr__(attn, "_prefix_hook", PrefixHook(attn, i))
    return [attn.__dict__["_prefix_hook"] for attn in attns]


def add_prefix_adapter(gpt: nn.Module, layer: PrefixTuning) -> None:
    """Register ``layer`` on the GPT (``prefix_tuning[name]``) and hook it into attention."""
    if layer.adapter_name in getattr(gpt, "prefix_tuning", {}):
        raise ValueError(f"the model already has a prefix adapter named {layer.adapter_name!r}")
    hooks = prefix_hooks(gpt)
    if "prefix_tuning" not in gpt._modules:
        gpt.add_module("prefix_tuning", nn.ModuleDict())
    gpt.prefix_tuning[layer.adapter_name] = layer
    layer.attach(hooks)


def apply_prefix_tuning(model: nn.Module, config: PrefixConfig | None = None) -> nn.Module:
    """Give every attention layer of ``model`` trained key/value prefixes; freeze the rest."""
    config = config or PrefixConfig()
    check_extra(model, config.trainable_extra)
    gpt = find_gpt(model)
    add_prefix_adapter(gpt, PrefixTuning(gpt, config))
    freeze_base(model, config.trainable_extra)
    remember_config(model, config.adapter_name, "prefix", asdict(config))
    return model


def drop_reparameterization(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    """Bake the reparameterising MLP of each prefix adapter into plain prefixes and drop it;
    the outputs do not change, and the saved config then re-creates plain prefixes."""
    gpt = find_gpt(model)
    for name, layer in getattr(gpt, "prefix_tuning", {}).items():
        if adapter_name is None or name == adapter_name:
            layer.bake()
            for entry in getattr(model, "peft_config", {}).get(name, []):
                if entry["method"] == "prefix":
                    entry["config"]["reparameterize"] = False
    return model
