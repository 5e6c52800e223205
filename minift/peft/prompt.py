"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning").

P trained embeddings, a *soft prompt*, go in front of the token embeddings of every
input, and only they train:

    h_0 = [E_prompt ; wte[x_1], ..., wte[x_T]] + positions

It is the input-only cousin of prefix tuning (minift.peft.prefix): P C parameters in all,
the fewest of any method, at the cost of a longer sequence. The model's hook does the
bookkeeping: ``GPT.soft_prompt(batch_size)`` gives the (B, P, C) embeddings, and the
model widens masks, targets and positions, returns outputs for the caller's positions
only, and lets generation and the KV cache account for the P extra positions.

Initialisation matters (Lester et al., sec. 3.2): random vocabulary rows (``init_text``
None) or the embeddings of a real text's tokens, e.g. a description of the task
("Classify the package:"), repeated or cut to P tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from minift.peft.core import DEFAULT_ADAPTER, AdapterLayer, find_gpt
from minift.peft.registry import remember_config
from minift.peft.targets import check_extra, freeze_base


@dataclass
class PromptConfig:
    num_virtual_tokens: int = 10  # P
    init_text: list[int] | None = None  # token ids of a text; None: random vocabulary rows
    trainable_extra: list[str] = field(default_factory=lambda: ["head"])
    adapter_name: str = DEFAULT_ADAPTER

    def __post_init__(self) -> None:
        P = self.num_virtual_tokens
        if isinstance(P, bool) or not isinstance(P, int) or P <= 0:
            raise ValueError(f"num_virtual_tokens must be a positive integer, got {P!r}")
        if self.init_text is not None and not self.init_text:
            raise ValueError(
                "init_text is empty; give token ids, or None for random vocabulary rows"
            )

    @classmethod
    def from_text(cls, text: str, enc, **kwargs) -> PromptConfig:
        """A config initialised from ``text`` encoded by ``enc`` (one virtual token per
        text token unless num_virtual_tokens says otherwise)."""
        ids = enc.encode_ordinary(text)
        kwargs.setdefault("num_virtual_tokens", len(ids))
        return cls(init_text=ids, **kwargs)


class SoftPrompt(AdapterLayer):
    """P trained embeddings (P x C), the same for every example."""

    method = "prompt"

    def __init__(self, embedding: torch.Tensor, adapter_name: str = DEFAULT_ADAPTER) -> None:
        super().__init__(adapter_name)
        self.embedding = nn.Parameter(embedding)

    @property
    def num_tokens(self) -> int:
        return self.embedding.size(0)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)


class SoftPrompts(nn.Module):
    """What ``GPT.soft_prompt`` holds: the active soft prompts, one after the other.

    With none active it gives zero tokens, which leaves the model's computation exactly
    that of the base model (the prompts stay registered, so they can be switched back on)."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts = nn.ModuleDict()

    def active_prompts(self) -> list[SoftPrompt]:
        return [p for p in self.prompts.values() if p.active]

    @property
    def num_tokens(self) -> int:
        return sum(p.num_tokens for p in self.active_prompts())

    def forward(self, batch_size: int) -> torch.Tensor:
        parts = [p(batch_size) for p in self.active_prompts()]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            first = next(iter(self.prompts.values())).embedding
            return first.new_zeros(batch_size, 0, first.size(1))
        return torch.cat(parts, dim=1)


@torch.no_grad()
def initial_prompt(gpt: nn.Module, config: PromptConfig) -> torch.Tensor:
    """(P, C) starting embeddings: rows of the token embedding, of random tokens or of
    ``init_text`` (repeated or cut to P tokens)."""
    wte = gpt.transformer.wte.weight
    P, vocab = config.num_virtual_tokens, wte.size(0)
    if P >= gpt.config.block_size:
        raise ValueError(f"{P} virtual tokens leave no room in block_size {gpt.config.block_size}")
    if config.init_text is None:
        ids = torch.randint(0, vocab, (P,), device=wte.device)
    else:
        bad = [i for i in config.init_text if not 0 <= i < vocab]
        if bad:
            raise ValueError(
                f"init_text holds token ids {bad[:5]} outside the vocabulary [0, {vocab})"
            )
        ids = (list(config.init_text) * math.ceil(P / len(config.init_text)))[:P]
        ids = torch.tensor(ids, device=wte.device)
    return wte[ids].detach().clone()


def apply_prompt_tuning(model: nn.Module, config: PromptConfig | None = None) -> nn.Module:
    """Put a trained soft prompt in front of every input of ``model``; freeze the rest."""
    config = config or PromptConfig()
    check_extra(model, config.trainable_extra)
    gpt = find_gpt(model)
    hook = gpt.soft_prompt
    if hook is not None and not isinstance(hook, SoftPrompts):
        raise ValueError("the model already has a soft prompt that is not prompt tuning's")
    if hook is not None and config.adapter_name in hook.prompts:
        raise ValueError(f"the model already has a soft prompt named {config.adapter_name!r}")
    prompt = SoftPrompt(initial_prompt(gpt, config), config.adapter_name)
    if hook is None:
        gpt.soft_prompt = hook = SoftPrompts()
    hook.prompts[config.adapter_name] = prompt
    freeze_base(model, config.trainable_extra)
    remember_config(model, config.adapter_name, "prompt", asdict(config))
    return model
