"""What the GPT returns (:class:`ModelOutput`) and its language-model loss: next-token
cross-entropy over the targets that are not IGNORE_INDEX."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minift.model.kv_cache import KVCache
from minift.model.moe import RouterStats

IGNORE_INDEX = -100  # targets with this value add nothing to the loss (PyTorch's default)


@dataclass
class ModelOutput:
    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then each block's output
    attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, Tq, Tk) per block
    cache: KVCache | None = None
    last_hidden: torch.Tensor | None = None  # the final-norm output that feeds lm_head
    # Mixture of experts: the weighted router losses (mean over MoE layers; included in
    # loss while training) and each MoE layer's RouterStats. None without MoE layers.
    aux_loss: torch.Tensor | None = None
    router_stats: list[RouterStats] | None = None


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not IGNORE_INDEX, in float32 for half
    precision logits and in their own precision otherwise (a float64 model keeps float64)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
