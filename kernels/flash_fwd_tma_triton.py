"""Flash attention forward with its tiles brought by Hopper's tensor memory accelerator.

The same algorithm as :func:`minift.kernels.flash_fwd_triton.attn_fwd_kernel` (dense
attention, causal or not; the online softmax, the masks and the stored rows are that
module's functions), with Q, K and V read through TMA descriptors instead of pointer
tensors: one thread copies a whole (BLOCK_N, D) tile described once on the host, where the
pointer kernel's threads each compute and mask the addresses of their 16-byte pieces.

Each descriptor spans the 4-D (B, H, T, D) tensor with its own strides, in boxes of
(1, 1, BLOCK, D): a tile never crosses into the next head, rows past the end of a head (or
before its start, for the first query tile when Tq is not a multiple of BLOCK_M in the
key-aligned tiling) arrive as zeros, so any (B, H, T, D) layout with a unit stride in D and
16-byte aligned strides works, transposed views from (B, T, H, D) included.

Compiled for sm_90 on the CPU (Triton 3.8), the 128 x 128 forward loads by bulk copies
only, its Q K^T product reads both operands from shared memory, and it allocates 224 KB,
like the pointer kernel. Whether it is faster is for the tuner to measure on the device:
:func:`minift.kernels.flash_triton.flash_forward` offers it beside the pointer kernel's
tiles where :func:`tma_ready` allows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .flash_fwd_triton import dense_key_blocks, mask_scores, online_softmax, store_rows
from .launch import flat_grid
from .tma import TensorDescriptor, describable, unavailable_on
from .triton_utils import tile_and_head

# The tuner's TMA candidates (BLOCK_M, BLOCK_N, warps, stages), 16-bit, likeliest first:
# the pointer kernel's H100 winner and its generic entry (224 and 160 KB at head dim 128),
# then the same tiles with the stages traded the other way, and 128 x 64 tiles on 4 warps
# (Triton's fused-attention tutorial keeps 8 warps on Hopper for 128 x 128 tiles only).
TMA_SPACE = ((128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 4))


def tma_space(dtype: torch.dtype) -> list[dict]:
    """:data:`TMA_SPACE` as launch configurations; fp32 tiles are half as wide."""
    half = dtype == torch.float32
    return [
        dict(TMA=1, BLOCK_M=m // 2 if half else m, BLOCK_N=n // 2 if half else n,
             num_warps=w, num_stages=s)
        for m, n, w, s in TMA_SPACE
    ]  # fmt: skip


@triton.jit
def _tma_step(
    acc, l_i, m_i, q, q_pos, k_desc, v_desc, b, h, start_n, Tk, qk_scale,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    k = k_desc.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2 units
    if MASKED:
        s = mask_scores(s, q_pos, start_n + tl.arange(0, BLOCK_N), Tk, CAUSAL)
    v = v_desc.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
    return online_softmax(acc, l_i, m_i, s, v, PRECISION)


@triton.jit
def attn_fwd_tma_kernel(
    q_desc, k_desc, v_desc, o_ptr, lse_ptr,
    H, Tq, Tk, D, qk_scale, N_TILES,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    tile, bh = tile_and_head(N_TILES, CAUSAL)
    b = bh // H
    h = bh % H
    prefix = Tk - Tq
    q_block = prefix // BLOCK_M + tile  # absolute query tile, as in the pointer kernel
    q_pos = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = q_pos - prefix
    row_ok = (rows >= 0) & (rows < Tq)
    dims = tl.arange(0, BLOCK_D)
    q = q_desc.load([b, h, q_block * BLOCK_M - prefix, 0]).reshape(BLOCK_M, BLOCK_D)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    n_full, n_blocks = dense_key_blocks(q_block, Tk, CAUSAL, BLOCK_M, BLOCK_N)
    for n in range(0, n_full):
        acc, l_i, m_i = _tma_step(
            acc, l_i, m_i, q, q_pos, k_desc, v_desc, b, h, n * BLOCK_N, Tk, qk_scale, CAUSAL,
            False, BLOCK_N, BLOCK_D, PRECISION,
        )  # fmt: skip
    for n in range(n_full, n_blocks):
        acc, l_i, m_i = _tma_step(
            acc, l_i, m_i, q, q_pos, k_desc, v_desc, b, h, n * BLOCK_N, Tk, qk_scale, CAUSAL,
            True, BLOCK_N, BLOCK_D, PRECISION,
        )  # fmt: skip
    store_rows(acc, l_i, m_i, o_ptr, lse_ptr, bh, Tq, D, rows, row_ok, dims, dims < D)


def tma_ready(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sparse: bool) -> str | None:
    """None when :func:`attention_fwd_tma` can run on these tensors; else why not."""
    if sparse:
        return "block-sparse attention reads its own block lists"
    why = unavailable_on(q.device)
    if why:
        return why
    d = q.shape[-1]
    if d < 16 or d & (d - 1):
        return f"head dim {d} is not a power of two of at least 16 (a TMA tile spans all of D)"
    if not all(describable(t) for t in (q, k, v)):
        return "q, k and v need a unit stride in D and 16-byte aligned strides"
    return None


def attention_fwd_tma(q, k, v, o, lse, qk_scale: float, n_tiles: int, flags: dict, cfg: dict):
    """Launch :func:`attn_fwd_tma_kernel` into ``o`` and ``lse`` with ``cfg``'s tiles; the
    compiled kernel. ``flags`` are the pointer kernel's (CAUSAL, PRECISION are used).
    Raises ValueError when :func:`tma_ready` says the tensors cannot be described for TMA."""
    why = tma_ready(q, k, v, sparse=False)
    if why:
        raise ValueError(f"the TMA attention kernel cannot run: {why}")
    bm, bn, d = cfg["BLOCK_M"], cfg["BLOCK_N"], q.shape[-1]
    b, h, tq, _ = q.shape
    descriptor = lambda t, rows: TensorDescriptor.from_tensor(t, [1, 1, rows, d])  # noqa: E731
    return attn_fwd_tma_kernel[flat_grid(n_tiles, b * h)](
        descriptor(q, bm), descriptor(k, bn), descriptor(v, bn), o, lse,
        h, tq, k.shape[2], d, qk_scale, n_tiles,
        CAUSAL=flags["CAUSAL"], PRECISION=flags["PRECISION"], BLOCK_M=bm, BLOCK_N=bn,
        BLOCK_D=d, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
