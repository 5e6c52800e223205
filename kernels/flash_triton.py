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

from . import autotune
from .buffers import output_buffer
from .dispatch import interpreting
from .flash_bwd_triton import attn_dkdv_kernel, attn_dq_kernel
from .flash_fwd_tma_triton import attention_fwd_tma, tma_ready, tma_space
from .flash_fwd_triton import attn_delta_kernel, attn_fwd_kernel, q_tiles
from .launch import (
    attention_smem,
    cdiv,
    contiguous,
    device_limits_of,
    flat_grid,
    needs_int64,
    record_launch,
    stages_for,
)
from .sparse_index import SparseIndex
from .triton_utils import MIN_DOT, check_dot_tiles, dot_precision, dot_tile, next_pow2

LOG2E = 1.4426950408889634  # scores are kept in base 2 so the kernels can use exp2


# Measured on an H100 (sm_90, bf16, head dim 128, T = 4096, causal; Triton 3.6; the tuner's
# times in docs/gpu/2026-11-28-h100/autotune.json): against the generic entries below, the
# forward's 128 x 128 tiles took 73 us instead of 120, the dK/dV pass's 64 x 64 tiles with 4
# warps and 2 stages 145 us instead of 276. Hopper's 227 KB of shared memory holds them.
# The dQ pass was never timed there (the tuning budget ran out); its entry mirrors the
# forward's shape (a 128-query tile streaming 64-key blocks, two warpgroups each with 64
# rows, which is what one wgmma covers) instead of the generic 64 x 32 with 8 warps, whose
# warpgroups split 32 key columns into 16-wide products. An untimed choice: the next GPU
# run's tuner compares it with the rest of the space.
HOPPER_16BIT_WIDE_HEAD = {
    "fwd": dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3),
    "dkdv": dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
    "dq": dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
}


def _tiles(
    dtype: torch.dtype, head_dim: int, pass_: str, capability: tuple[int, int] | None = None
) -> dict:
    """Tile sizes and launch options per pass (for a GPU of ``capability`` when given); 16s
    in the interpreter (tiny tests)."""
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
    big = head_dim > 64
    warps = 8 if big else 4
    if dtype == torch.float32:  # fp32 tiles take twice the shared memory
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=warps, num_stages=2)
    if big and capability is not None and capability[0] == 9 and pass_ in HOPPER_16BIT_WIDE_HEAD:
        return dict(HOPPER_16BIT_WIDE_HEAD[pass_])
    if pass_ == "fwd":
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=warps, num_stages=3)
    if pass_ == "dkdv":  # many queries stream past a key block held with its dK, dV
        return dict(BLOCK_M=32, BLOCK_N=64 if big else 128, num_warps=warps, num_stages=3)
    return dict(BLOCK_M=64 if big else 128, BLOCK_N=32, num_warps=warps, num_stages=3)  # dq


# (BLOCK_M, BLOCK_N, num_warps, num_stages) tried on a GPU after the fixed table
# (:mod:`.autotune`), per pass, likeliest first. fwd: wide query tiles reuse each K/V load
# over more rows, narrow key tiles keep the (BLOCK_M, BLOCK_N) scores in registers; dkdv: a
# key block held with its dK, dV accumulators while query tiles stream past (larger key
# blocks, fewer stages); dq: the mirror image. Tiles of 128 x 128 at head dim 128 fit
# Hopper's shared memory only; fp32 tiles are half as wide.
SPACE = {
    "fwd": ((128, 128, 8, 2), (128, 64, 4, 4), (64, 64, 4, 3), (128, 32, 4, 4), (128, 128, 8, 3),
            (64, 32, 4, 4)),
    "dkdv": ((64, 64, 4, 2), (32, 128, 8, 2), (64, 128, 8, 2), (32, 64, 4, 4), (16, 64, 4, 3),
             (32, 128, 4, 4)),
    "dq": ((128, 64, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 8, 3), (32, 64, 4, 3),
           (64, 32, 4, 4), (128, 32, 4, 4)),
}  # fmt: skip
# The last of dkdv and dq are the shapes of Triton's fused-attention tutorial backward (a
# 128-key block with 32-query tiles streaming past, its mirror for dQ; 4 warps, deep
# pipelines), cheap to try since make gpu-check compiles the candidates ahead.


def _space(dtype: torch.dtype, pass_: str) -> list[dict]:
    half = dtype == torch.float32
    return [
        dict(
            BLOCK_M=max(16, m // 2) if half else m,
            BLOCK_N=max(16, n // 2) if half else n,
            num_warps=w,
            num_stages=s,
        )  # fmt: skip
        for m, n, w, s in SPACE[pass_]
    ]


def _config(q, k, index, pass_, config, causal, wide, run, routes=tuple) -> dict:
    """The launch configuration of one pass: the table's entry (capped at the layout's
    block size, stages fitted to the device), or the tuned choice on a GPU among it,
    ``routes()`` (other kernels for the same pass, timed first) and the pass's space (both
    listed only when a decision is made: the launch path stays short)."""
    head_dim, tq, tk = q.shape[-1], q.shape[2], k.shape[2]
    _, capability = device_limits_of(q.device)
    cfg = {**_tiles(q.dtype, head_dim, pass_, capability), **config}
    cfg["LAYOUT_BLOCK"] = MIN_DOT  # unused by dense attention
    dims = dict(BLOCK_M=tq, BLOCK_N=tk)
    if index is not None:  # tiles are cut from the layout's blocks
        cfg["LAYOUT_BLOCK"] = index.block_size
        cfg["BLOCK_M"] = min(cfg["BLOCK_M"], index.block_size)
        cfg["BLOCK_N"] = min(cfg["BLOCK_N"], index.block_size)
        dims = dict(BLOCK_M=min(tq, index.block_size), BLOCK_N=min(tk, index.block_size))
    cfg["BLOCK_D"] = dot_tile(head_dim, 256)
    check_dot_tiles(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=cfg["BLOCK_D"])
    elem = q.element_size()
    smem_of = lambda c: attention_smem(pass_, c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_D"], elem)  # noqa: E731
    if "num_stages" not in config:  # the most stages (up to the table's) that fit
        cfg["num_stages"] = stages_for(q.device, *smem_of(cfg), cfg["num_stages"])
    b, h = q.shape[:2]
    variant = dict(causal=bool(causal), sparse_block=index.block_size if index else 0, wide=wide)
    return autotune.launch_config(
        f"attention {pass_}", q.device, q.dtype, dict(BH=b * h, Tq=tq, Tk=tk, D=head_dim),
        variant, cfg, lambda: [*routes(), *_space(q.dtype, pass_)], config, dims, smem_of, run,
    )  # fmt: skip


def _common(q, k, v, causal, scale, index, wide):
    """The launch arguments every pass shares (sizes, strides, flags)."""
    head_dim = q.shape[-1]
    sm_scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    sizes = (h, tq, tk, head_dim)
    sparse = (index.cols.shape[0], index.cols.shape[1]) if index is not None else (1, 1)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    flags = dict(
        CAUSAL=causal, SPARSE=index is not None, PRECISION=dot_precision(q.dtype), WIDE=wide
    )
    return sm_scale, sizes, sparse, strides, flags


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
    wide = _wide(q, k, v, index)
    sm_scale, sizes, sparse, strides, flags = _common(q, k, v, causal, scale, index, wide)
    b, h, tq, d = q.shape
    lists = (index.cols, index.col_counts) if index is not None else None

    def launch(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
        o = output_buffer((b, h, tq, d), q.dtype, q.device)
        lse = output_buffer((b, h, tq), torch.float32, q.device)
        n_tiles = q_tiles(tq, k.shape[2], cfg["BLOCK_M"])
        if cfg.get("TMA"):
            compiled = attention_fwd_tma(q, k, v, o, lse, sm_scale * LOG2E, n_tiles, flags, cfg)
        else:
            tiles = {key: value for key, value in cfg.items() if key != "TMA"}  # TMA=0: these
            compiled = attn_fwd_kernel[flat_grid(n_tiles, b * h)](
                q, k, v, o, lse, *(lists or (lse, lse)),  # dummies when dense
                *strides, *sizes, sm_scale * LOG2E, *sparse, n_tiles, **flags, **tiles,
            )  # fmt: skip
        record_launch("attention fwd", compiled, {**cfg, **flags})
        return o, lse

    # Hopper's TMA kernel first where it can run (a tuning budget cut short has timed it).
    def routes() -> list[dict]:
        return [] if tma_ready(q, k, v, index is not None) else tma_space(q.dtype)

    return launch(_config(q, k, index, "fwd", config, causal, wide, launch, routes))


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
    attn_delta_kernel[flat_grid(cdiv(b * h * tq, block_rows), 1)](
        o, do, delta, b * h * tq, d, BLOCK_M=block_rows, BLOCK_D=next_pow2(d)
    )
    dummy = delta

    sm_scale, sizes, sparse, strides, flags = _common(q, k, v, causal, scale, index, wide)
    lists = (index.rows, index.row_counts) if index is not None else (dummy, dummy)

    def launch_dkdv(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
        dk = output_buffer(k.shape, k.dtype, k.device)
        dv = output_buffer(v.shape, v.dtype, v.device)
        n_tiles = cdiv(tk, cfg["BLOCK_N"])
        compiled = attn_dkdv_kernel[flat_grid(n_tiles, b * h)](
            q, k, v, do, lse, delta, dk, dv, *lists,
            *strides, *sizes, sm_scale, sm_scale * LOG2E, *sparse, n_tiles, **flags, **cfg,
        )  # fmt: skip
        record_launch("attention dkdv", compiled, {**cfg, **flags})
        return dk, dv

    dk, dv = launch_dkdv(_config(q, k, index, "dkdv", config, causal, wide, launch_dkdv))

    q_lists = (index.cols, index.col_counts) if index is not None else (dummy, dummy)

    def launch_dq(cfg: dict) -> torch.Tensor:
        dq = output_buffer(q.shape, q.dtype, q.device)
        n_tiles = q_tiles(tq, tk, cfg["BLOCK_M"])
        compiled = attn_dq_kernel[flat_grid(n_tiles, b * h)](
            q, k, v, do, lse, delta, dq, *q_lists,
            *strides, *sizes, sm_scale, sm_scale * LOG2E, *sparse, n_tiles, **flags, **cfg,
        )  # fmt: skip
        record_launch("attention dq", compiled, {**cfg, **flags})
        return dq

    dq = launch_dq(_config(q, k, index, "dq", config, causal, wide, launch_dq))
    return dq, dk, dv
