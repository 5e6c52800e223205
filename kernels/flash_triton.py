"""Launchers for the flash attention kernels: tile sizes, grids, output buffers.

Dense and block-sparse attention pick tiles by pass and head dim (capped at the layout's
block size for sparse layouts, whose per-block lists come from
:func:`minift.kernels.sparse_index.block_index`). The launch decisions of
:mod:`minift.kernels.launch` apply: a flat grid, int64 offsets when a tensor is big enough
to need them, and pipeline stages that fit the device's shared memory.
"""

from __future__ import annotations

import math

import torch
import triton

from .buffers import output_buffer
from .dispatch import interpreting
from .flash_bwd_triton import attn_dkdv_kernel, attn_dq_kernel
from .flash_fwd_triton import attn_delta_kernel, attn_fwd_kernel, q_tiles
from .launch import (
    attention_smem,
    contiguous,
    flat_grid,
    needs_int64,
    record_launch,
    stages_for,
)
from .sparse_index import SparseIndex
from .triton_utils import MIN_DOT, check_dot_tiles, dot_precision, dot_tile

LOG2E = 1.4426950408889634  # scores are kept in base 2 so the kernels can use exp2


def _tiles(dtype: torch.dtype, head_dim: int, pass_: str) -> dict:
    """Tile sizes and launch options per pass; 16s in the interpreter (tiny tests)."""
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
    big = head_dim > 64
    warps = 8 if big else 4
    if dtype == torch.float32:  # fp32 tiles take twice the shared memory
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=warps, num_stages=2)
    if pass_ == "fwd":
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=warps, num_stages=3)
    if pass_ == "dkdv":  # many queries stream past a key block held with its dK, dV
        return dict(BLOCK_M=32, BLOCK_N=64 if big else 128, num_warps=warps, num_stages=3)
    return dict(BLOCK_M=64 if big else 128, BLOCK_N=32, num_warps=warps, num_stages=3)  # dq


def _common(q, k, v, causal, scale, index, pass_, config, wide):
    head_dim = q.shape[-1]
    cfg = {**_tiles(q.dtype, head_dim, pass_), **config}
    cfg["LAYOUT_BLOCK"] = MIN_DOT  # unused by dense attention
    if index is not None:  # tiles are cut from the layout's blocks
        cfg["LAYOUT_BLOCK"] = index.block_size
        cfg["BLOCK_M"] = min(cfg["BLOCK_M"], index.block_size)
        cfg["BLOCK_N"] = min(cfg["BLOCK_N"], index.block_size)
    cfg["BLOCK_D"] = dot_tile(head_dim, 256)
    check_dot_tiles(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=cfg["BLOCK_D"])
    if "num_stages" not in config:  # the most stages (up to the table's) that fit
        per_stage, fixed = attention_smem(
            pass_, cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_D"], q.element_size()
        )
        cfg["num_stages"] = stages_for(q.device, per_stage, fixed, cfg["num_stages"])
    sm_scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    sizes = (h, tq, tk, head_dim)
    sparse = (index.cols.shape[0], index.cols.shape[1]) if index is not None else (1, 1)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    flags = dict(
        CAUSAL=causal, SPARSE=index is not None, PRECISION=dot_precision(q.dtype), WIDE=wide
    )
    return cfg, sm_scale, sizes, sparse, strides, flags


def _wide(q, k, v, index) -> bool:
    """int64 offsets when any tensor the kernels index (inputs, the contiguous outputs and
    gradients shaped like them, the block lists) spans more than 2^31 - 1 elements."""
    lists = (index.cols, index.rows) if index is not None else ()
    return needs_int64(q, k, v, contiguous(*q.shape), contiguous(*k.shape), *lists)


def flash_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: float | None = None,
    index: SparseIndex | None = None,
    **config,
) -> tuple[torch.Tensor, torch.Tensor]:
    """O (B, H, Tq, D) and the base-2 log-sum-exp (B, H, Tq) fp32 of flash attention.

    q, k, v: (B, H, T, D) with unit stride in D. ``config`` overrides tile sizes.
    """
    cfg, sm_scale, sizes, sparse, strides, flags = _common(
        q, k, v, causal, scale, index, "fwd", config, _wide(q, k, v, index)
    )
    b, h, tq, d = q.shape
    o = output_buffer((b, h, tq, d), q.dtype, q.device)
    lse = output_buffer((b, h, tq), torch.float32, q.device)
    lists = (index.cols, index.col_counts) if index is not None else (lse, lse)  # dummies
    n_tiles = q_tiles(tq, k.shape[2], cfg["BLOCK_M"])
    compiled = attn_fwd_kernel[flat_grid(n_tiles, b * h)](
        q, k, v, o, lse, *lists,
        *strides, *sizes, sm_scale * LOG2E, *sparse, n_tiles, **flags, **cfg,
    )  # fmt: skip
    record_launch("attention fwd", compiled, {**cfg, **flags})
    return o, lse


def flash_backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float | None = None,
    index: SparseIndex | None = None,
    **config,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dQ, dK, dV given dO; ``o`` and ``lse`` come from :func:`flash_forward`.

    ``do`` and ``o`` must be contiguous (the kernels index them as (B*H*Tq, D) rows).
    """
    b, h, tq, d = q.shape
    tk = k.shape[2]
    wide = _wide(q, k, v, index)
    delta = output_buffer((b, h, tq), torch.float32, q.device)
    block_rows = 64
    attn_delta_kernel[flat_grid(triton.cdiv(b * h * tq, block_rows), 1)](
        o, do, delta, b * h * tq, d, BLOCK_M=block_rows, BLOCK_D=triton.next_power_of_2(d)
    )
    dq = output_buffer(q.shape, q.dtype, q.device)
    dk = output_buffer(k.shape, k.dtype, k.device)
    dv = output_buffer(v.shape, v.dtype, v.device)
    dummy = delta

    cfg, sm_scale, sizes, sparse, strides, flags = _common(
        q, k, v, causal, scale, index, "dkdv", config, wide
    )
    lists = (index.rows, index.row_counts) if index is not None else (dummy, dummy)
    n_tiles = triton.cdiv(tk, cfg["BLOCK_N"])
    compiled = attn_dkdv_kernel[flat_grid(n_tiles, b * h)](
        q, k, v, do, lse, delta, dk, dv, *lists,
        *strides, *sizes, sm_scale, sm_scale * LOG2E, *sparse, n_tiles, **flags, **cfg,
    )  # fmt: skip
    record_launch("attention dkdv", compiled, {**cfg, **flags})

    cfg, *_ = _common(q, k, v, causal, scale, index, "dq", config, wide)
    lists = (index.cols, index.col_counts) if index is not None else (dummy, dummy)
    n_tiles = q_tiles(tq, tk, cfg["BLOCK_M"])
    compiled = attn_dq_kernel[flat_grid(n_tiles, b * h)](
        q, k, v, do, lse, delta, dq, *lists,
        *strides, *sizes, sm_scale, sm_scale * LOG2E, *sparse, n_tiles, **flags, **cfg,
    )  # fmt: skip
    record_launch("attention dq", compiled, {**cfg, **flags})
    return dq, dk, dv
