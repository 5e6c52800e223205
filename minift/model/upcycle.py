"""Sparse upcycling: turn a pretrained dense GPT into a mixture of experts."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn as nn

from minift.model.config import MoEConfig
from minift.model.layers import MLP
from minift.model.moe import MoEMLP
from minift.model.params import find_gpt


@torch.no_grad()
def upcycle(model: nn.Module, num_experts: int, top_k: int = 2, **moe_options) -> nn.Module:
    """Sparse upcycling (Komatsuzaki et al. 2022): replace the dense MLP of every MoE layer
    (every ``every``-th block) of a GPT with an MoE whose ``num_experts`` experts are copies
    of it, with a fresh router N(0, 0.02). ``moe_options``: the other MoEConfig fields
    (capacity_factor, aux_weight, z_weight, norm_topk, every); those not given take
    MoEConfig's defaults. With gates that sum to one (top_k > 1, or norm_topk=True) the
    upcycled model computes exactly the dense model at first. Changes the model in place
    (and its config) and returns it; on bad options nothing changes."""
    gpt = find_gpt(model)
    if gpt.config.moe.experts:
        raise ValueError("the model already has MoE layers; upcycle a dense model")
    known = {f.name for f in dataclasses.fields(MoEConfig)} - {"experts", "top_k"}
    unknown = sorted(set(moe_options) - known)
    if unknown:
        raise ValueError(f"unknown MoE option(s) {unknown}; known: {sorted(known)}")
    moe_config = MoEConfig(experts=num_experts, top_k=top_k, **moe_options)
    config = dataclasses.replace(gpt.config, moe=moe_config)
    blocks = [(i, b) for i, b in enumerate(gpt.transformer.h) if config.is_moe_layer(i)]
    for i, block in blocks:
        mlp = block.mlp
        if type(mlp) is not MLP or {type(mlp.c_fc), type(mlp.c_proj)} != {nn.Linear}:
            raise ValueError(
                f"block {i}'s MLP is not a plain MLP of nn.Linear layers ({mlp!r:.60}...): "
                "upcycle before adding adapters or LoRA"
            )
    like = gpt.transformer.wte.weight
    for _, block in blocks:
        moe = MoEMLP(config).to(device=like.device, dtype=like.dtype)
        nn.init.normal_(moe.router.weight, mean=0.0, std=0.02)
        moe.experts = nn.ModuleList(copy.deepcopy(block.mlp) for _ in range(num_experts))
        block.mlp = moe
    gpt.config = config
    return model
