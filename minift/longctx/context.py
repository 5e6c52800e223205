"""Turn a pretrained dense model into a long-context sparse one, for fine-tuning.

Sparse attention adds no parameters, so a pattern can be switched on in a model trained
densely: every query keeps its nearby keys (and the global ones), loses the rest, and
fine-tuning adapts the weights to the new pattern. This is how Longformer (Beltagy et al.
2020) was made from RoBERTa, and BigBird from BERT/RoBERTa checkpoints (Zaheer et al. 2020).

Longer documents also need positions beyond the pretrained block_size. Learned position
embeddings are extended by copying the pretrained ones over and over (Beltagy et al.
2020, section 5: position p gets wpe[p mod block_size]), which keeps every local
neighbourhood looking as in pretraining; rotary positions extend for free (their tables
are recomputed for the new length).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from minift.model.config import SparseConfig
from minift.model.layers import Rotary
from minift.model.params import find_gpt
from minift.model.sparse import SparsePattern

PATTERN_OPTIONS = tuple(f.name for f in dataclasses.fields(SparseConfig) if f.name != "pattern")


def set_attention_pattern(model: nn.Module, pattern: str = "dense", **options) -> nn.Module:
    """Switch every attention layer of a GPT (or a model holding one) to ``pattern``, with
    SparseConfig's other fields as options (window=4, block_size=32, n_global=1, ...).
    ``pattern="dense"`` switches back. Options not given take SparseConfig's defaults (the
    call describes the whole pattern). The config is validated first: a bad option raises
    ValueError and leaves the model as it was. Returns the model."""
    gpt = find_gpt(model)
    unknown = sorted(set(options) - set(PATTERN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown attention option(s) {unknown}; known: {list(PATTERN_OPTIONS)}")
    config = dataclasses.replace(gpt.config, sparse=SparseConfig(pattern=pattern, **options))
    gpt.config = config
    for block in gpt.transformer.h:
        block.attn.pattern = SparsePattern(config) if config.is_sparse else None
    return model


@torch.no_grad()
def extend_context(model: nn.Module, block_size: int) -> nn.Module:
    """Raise a GPT's block_size: learned positions are tiled (wpe[p mod old]), rotary tables
    recomputed. Validated before anything changes; returns the model."""
    gpt = find_gpt(model)
    old = gpt.config.block_size
    if block_size < old:
        raise ValueError(f"extend_context only grows the context: {block_size} < {old}")
    config = dataclasses.replace(gpt.config, block_size=block_size)  # validates the pattern too
    if "wpe" in gpt.transformer:
        wpe = gpt.transformer.wpe.weight
        table = nn.Embedding(block_size, wpe.size(1), device=wpe.device, dtype=wpe.dtype)
        table.weight.copy_(wpe[torch.arange(block_size, device=wpe.device) % old])
        table.weight.requires_grad_(wpe.requires_grad)
        gpt.transformer["wpe"] = table
    for block in gpt.transformer.h:
        attn = block.attn
        if attn.rotary is not None:
            like = attn.rotary.cos
            attn.rotary = Rotary(config.head_dim, block_size, config.rope_theta).to(like.device)
        if attn.pattern is not None:
            attn.pattern = SparsePattern(config)
    gpt.config = config
    return model
