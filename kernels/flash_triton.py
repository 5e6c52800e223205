"""Launchers for the flash attention kernels: tile sizes, grids, output buffers.

Dense and block-sparse attention pick tiles by pass and head dim (capped at the layout's
block size for sparse layouts, whose per-block lists come from
:func:`minift.kernels.block_sparse.block_index`).
"""

from __future__ import annotations

import math

import torch
import triton

from .block_sparse import SparseIndex
from .buffers import output_buffer
from .dispatch import interpreting
from .flash_bwd_triton import attn_dkdv_kernel, attn_dq_kernel
from .flash_fwd_triton import attn_delta_kernel, attn_fwd_kernel, q_tiles
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


def _common(q, k, v, causal, scale, index, pass_, config):
    head_dim = q.shape[-1]
    cfg = {**_tiles(q.dtype, head_dim, pass_), **config}
    cfg["LAYOUT_BLOCK"] = MIN_DOT  # unused by dense attention
    if index is not None:  # tiles are cut from the layout's blocks
        cfg["LAYOUT_BLOCK"] = index.block_size
        cfg["BLOCK_M"] = min(cfg["BLOCK_M"], index.block_size)
        cfg["BLOCK_N"] = min(cfg["BLOCK_N"], index.block_size)
    cfg["BLOCK_D"] = dot_tile(head_dim, 256)
    check_dot_tiles(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=cfg["BLOCK_D"])
    sm_scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    sizes = (h, tq, tk, head_dim)
    sparse = (index.cols.shape[0], index.cols.shape[1]) if index is not None else (1, 1)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    flags = dict(CAUSAL=causal, SPARSE=index is not None, PRECISION=dot_precision(q.dtype))
    return cfg, sm_scale, sizes, sparse, strides, flags


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
        q, k, v, causal, scale, index, "fwd", config
    )
    b, h, tq, d = q.shape
    o = output_buffer((b, h, tq, d), q.dtype, q.device)
    lse = output_buffer((b, h, tq), torch.float32, q.device)
    lists = (index.cols, index.col_counts) if index is not None else (lse, lse)  # dummies
    grid = (q_tiles(tq, k.shape[2], cfg["BLOCK_M"]), b * h)
    attn_fwd_kernel[grid](
        q, k, v, o, lse, *lists,
        *strides, *sizes, sm_scale * LOG2E, *sparse, **flags, **cfg,
    )  # fmt: skip
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
    delta = output_buffer((b, h, tq), torch.float32, q.device)
    block_rows = 64
    attn_delta_kernel[(triton.cdiv(b * h * tq, block_rows),)](
        o, do, delta, b * h * tq, d, BLOCK_M=block_rows, BLOCK_D=triton.next_power_of_2(d)
    )
    dq = output_buffer(q.shape, q.dtype, q.device)
    dk = output_buffer(k.shape, k.dtype, k.device)
    dv = output_buffer(v.shape, v.dtype, v.device)
    dummy = delta

    cfg, sm_scale, sizes, sparse, strides, flags = _common(
        q, k, v, causal, scale, index, "dkdv", config
    )
    lists = (index.rows, index.row_counts) if index is not None else (dummy, dummy)
    attn_dkdv_kernel[(triton.cdiv(tk, cfg["BLOCK_N"]), b * h)](
        q, k, v, do, lse, delta, dk, dv, *lists,
        *strides, *sizes, sm_scale, sm_scale * LOG2E, *sparse, **flags, **cfg,
    )  # fmt: skip

    cfg, *_ = _common(q, k, v, causal, scale, index, "dq", config)
    lists = (index.cols, index.col_counts) if index is not None else (dummy, dummy)
    attn_dq_kernel[(q_tiles(tq, tk, cfg["BLOCK_M"]), b * h)](
        q, k, v, do, lse, delta, dq, *lists,
        *strides, *sizes, sm_scale, sm_scale * LOG2E, *sparse, **flags, **cfg,
    )  # fmt: skip
    return dq, dk, dv
