"""Tensor parallelism as Megatron-LM does it (Shoeybi et al. 2019), with PyTorch's
``torch.distributed.tensor.parallel`` as the engine.

Each of T processes holds 1/T of every block's matrices and sees the whole batch. In the
MLP, c_fc is split by output columns (each process computes its slice of the hidden units;
GELU is elementwise, so it needs nothing from the others) and c_proj by input rows (each
process multiplies its slice; one all-reduce sums the partial outputs):

    h_r = GELU(x W_fc[:, cols_r]),    y = sum_r h_r W_proj[rows_r, :]     (one all-reduce)

Attention splits the same way by heads: process r computes q, k, v and attention for its
n_head / T heads, and c_proj's rows for those heads, with one all-reduce at the end. So a
block costs two all-reduces forward (and two backward), and no process ever holds a whole
matrix.

GPT-2 fuses q, k, v into one c_attn of 3d outputs, [q | k | v]; split by plain column
blocks, process 0 would get q and half of k. :func:`parallelize_gpt` therefore first
reorders c_attn's rows so that each process's contiguous block holds [q_r | k_r | v_r] for
its heads (:func:`qkv_order`), and sets each attention layer's head count to its local one.
"""

from __future__ import annotations

import torch

from minift.errors import UserError
from minift.train import distributed as D


def qkv_order(n_embd: int, n_head: int, world: int) -> torch.Tensor:
    """Row permutation of a fused [q | k | v] weight that puts rank r's heads' q, k and v
    rows together, ranks in order."""
    per = n_embd // world  # rows of q (and of k, of v) that one rank owns
    parts = [torch.arange(s * n_embd + r * per, s * n_embd + (r + 1) * per)
             for r in range(world) for s in range(3)]  # fmt: skip
    return torch.cat(parts)


def parallelize_gpt(model: torch.nn.Module) -> torch.nn.Module:
    """Shard every block's attention and MLP over the processes of the current group."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    info = D.current()
    if info.world_size < 2:
        raise UserError("tensor parallelism needs at least 2 processes (launch with torchrun)")
    config = model.config
    if config.n_head % info.world_size:
        raise UserError(
            f"n_head {config.n_head} does not split over {info.world_size} processes; "
            "tensor parallelism gives each process whole heads"
        )
    if config.mlp != "gelu" or config.moe.experts or config.is_sparse:
        raise UserError(
            "tensor parallelism here covers the GPT-2 block (GELU MLP, dense attention)"
        )
    device = next(model.parameters()).device.type
    mesh = init_device_mesh(device, (info.world_size,))
    order = qkv_order(config.n_embd, config.n_head, info.world_size)
    for block in model.transformer.h:
        attn = block.attn
        with torch.no_grad():
            attn.c_attn.weight.copy_(attn.c_attn.weight[order])
            if attn.c_attn.bias is not None:
                attn.c_attn.bias.copy_(attn.c_attn.bias[order])
        attn.n_head = config.n_head // info.world_size
        plan = {
            "attn.c_attn": ColwiseParallel(),
            "attn.c_proj": RowwiseParallel(),
            "mlp.c_fc": ColwiseParallel(),
            "mlp.c_proj": RowwiseParallel(),
        }
        parallelize_module(block, mesh, plan)
    return model
