"""Flash attention forward in Triton (math in :mod:`minift.kernels.attention`).

One program owns BLOCK_M queries of one (batch, head) and streams over key blocks,
keeping the running row max m, row sum l and unnormalised output acc of the online
softmax in registers; the (T, T) score matrix never exists in memory. It stores O and
the log-sum-exp (base 2) that the backward uses to recompute probabilities.

Positions are absolute: key j sits at position j and query i at P + i, with
P = Tk - Tq (the prefix of cached or trained keys). The causal rule "key <= query" then
aligns the mask to the end, and query tiles are cut at multiples of BLOCK_M of the
absolute position, so a block-sparse layout indexes queries and keys alike.

The same kernel serves block-sparse attention: with SPARSE, a program visits only the
key blocks listed for its (layout head, query block) instead of the dense range. The
tiles may be smaller than the layout's blocks (a power-of-two fraction of them), so the
GPU tile sizes stay free whatever block size the layout uses.

Launch (:mod:`minift.kernels.launch`): one flat grid axis of query tiles x batch-heads
(CUDA's second axis stops at 65,535 batch-heads), and index vectors widened to int64 by
the constexpr WIDE when some offset can pass 2^31 - 1 elements.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .launch import cdiv
from .triton_utils import tile_and_head, widen


@triton.jit
def mask_scores(s, q_pos, k_pos, Tk, CAUSAL: tl.constexpr):
    """Scores of keys past the end, or (CAUSAL) after the query, set to -inf."""
    keep = (k_pos < Tk)[None, :]
    if CAUSAL:
        keep = keep & (k_pos[None, :] <= q_pos[:, None])
    return tl.where(keep, s, float("-inf"))


@triton.jit
def online_softmax(acc, l_i, m_i, s, v, PRECISION: tl.constexpr):
    """One online-softmax update with a block's scores ``s`` (log2 units) and values ``v``."""
    # m_new is finite for every stored row, so exp2(-inf - -inf) never happens: blocks are
    # visited in increasing order and the first always holds a key the row may see (key
    # 0 when dense; when sparse, the first listed block, at or before the row's own block
    # under the causal rule, else holding at least one real key). A row with no listed
    # block never gets here. Only rows outside the queries, never stored, can turn NaN.
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def dense_key_blocks(
    q_block, Tk, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr
):
    """(n_full, n_blocks): key blocks [0, n_full) every row of query tile ``q_block`` sees
    whole (no mask), [n_full, n_blocks) the causal diagonal and the ragged end (masked)."""
    n_blocks = tl.cdiv(Tk, BLOCK_N)
    n_full = Tk // BLOCK_N
    if CAUSAL:
        n_blocks = tl.minimum(n_blocks, tl.cdiv((q_block + 1) * BLOCK_M, BLOCK_N))
        n_full = tl.minimum(n_full, (q_block * BLOCK_M + 1) // BLOCK_N)
    return n_full, n_blocks


@triton.jit
def store_rows(acc, l_i, m_i, o_ptr, lse_ptr, bh, Tq, D, rows, row_ok, dims, d_ok):
    """O = acc / l and lse = m + log2 l for the tile's rows; a row with no visible key (only
    in sparse layouts) outputs 0 with lse = -inf."""
    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    out_rows = bh.to(tl.int64) * Tq + rows
    mask = row_ok[:, None] & d_ok[None, :]
    tl.store(o_ptr + out_rows[:, None] * D + dims[None, :], o.to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(lse_ptr + out_rows, lse, mask=row_ok)


@triton.jit
def _fwd_step(
    acc, l_i, m_i, q, q_pos, k_base, v_base, stride_kt, stride_vt, start_n, Tk, qk_scale,
    dims, d_ok,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
):  # fmt: skip
    """One online-softmax update with the key block starting at ``start_n``."""
    k_pos = widen(start_n + tl.arange(0, BLOCK_N), WIDE)
    kv_mask = (k_pos < Tk)[:, None] & d_ok[None, :]
    k = tl.load(k_base + k_pos[:, None] * stride_kt + dims[None, :], mask=kv_mask, other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2 units
    if MASKED:  # only the blocks on the diagonal or past the end of the keys pay for this
        s = mask_scores(s, q_pos, k_pos, Tk, CAUSAL)
    v = tl.load(v_base + k_pos[:, None] * stride_vt + dims[None, :], mask=kv_mask, other=0.0)
    return online_softmax(acc, l_i, m_i, s, v, PRECISION)


@triton.jit
def attn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, cols_ptr, counts_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    H, Tq, Tk, D, qk_scale, LAYOUT_HEADS, NB, N_TILES,
    CAUSAL: tl.constexpr, SPARSE: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, LAYOUT_BLOCK: tl.constexpr,
):  # fmt: skip
    tile, bh = tile_and_head(N_TILES, CAUSAL)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    prefix = Tk - Tq
    q_block = prefix // BLOCK_M + tile  # absolute query tile
    q_pos = widen(q_block * BLOCK_M + tl.arange(0, BLOCK_M), WIDE)
    rows = q_pos - prefix
    row_ok = (rows >= 0) & (rows < Tq)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < D

    q_mask = row_ok[:, None] & d_ok[None, :]
    q_base = q_ptr + b * stride_qb + h * stride_qh
    q = tl.load(q_base + rows[:, None] * stride_qt + dims[None, :], mask=q_mask, other=0.0)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    if SPARSE:  # listed layout blocks only, each cut into LAYOUT_BLOCK // BLOCK_N key tiles
        row = (h % LAYOUT_HEADS) * NB + q_block * BLOCK_M // LAYOUT_BLOCK
        # One flat loop over (listed block, tile within it): the compiler pipelines the
        # innermost loop only, so nested loops drained the pipeline at every layout block
        # (a 128-key block in 64-key tiles is a 2-step loop: no load overlapped a product).
        tiles_per_block: tl.constexpr = LAYOUT_BLOCK // BLOCK_N
        for t in range(tl.load(counts_ptr + row) * tiles_per_block):
            block_start = tl.load(cols_ptr + row * NB + t // tiles_per_block) * LAYOUT_BLOCK
            acc, l_i, m_i = _fwd_step(
                acc, l_i, m_i, q, q_pos, k_base, v_base, stride_kt, stride_vt,
                block_start + (t % tiles_per_block) * BLOCK_N, Tk, qk_scale, dims, d_ok, CAUSAL,
                True, BLOCK_N, PRECISION, WIDE,
            )  # fmt: skip
    else:
        n_full, n_blocks = dense_key_blocks(q_block, Tk, CAUSAL, BLOCK_M, BLOCK_N)
        for n in range(0, n_full):
            acc, l_i, m_i = _fwd_step(
                acc, l_i, m_i, q, q_pos, k_base, v_base, stride_kt, stride_vt, n * BLOCK_N, Tk,
                qk_scale, dims, d_ok, CAUSAL, False, BLOCK_N, PRECISION, WIDE,
            )  # fmt: skip
        for n in range(n_full, n_blocks):
            acc, l_i, m_i = _fwd_step(
                acc, l_i, m_i, q, q_pos, k_base, v_base, stride_kt, stride_vt, n * BLOCK_N, Tk,
                qk_scale, dims, d_ok, CAUSAL, True, BLOCK_N, PRECISION, WIDE,
            )  # fmt: skip

    store_rows(acc, l_i, m_i, o_ptr, lse_ptr, bh, Tq, D, rows, row_ok, dims, d_ok)


@triton.jit
def attn_delta_kernel(
    o_ptr, do_ptr, delta_ptr, n_rows, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr
):
    """delta_i = sum_d O_id dO_id for each row of the flattened (B*H*Tq, D) tensors."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    mask = (rows < n_rows)[:, None] & (dims < D)[None, :]
    offsets = rows[:, None] * D + dims[None, :]
    o = tl.load(o_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(delta_ptr + rows, tl.sum(o * do, 1), mask=rows < n_rows)


def q_tiles(tq: int, tk: int, block_m: int) -> int:
    """Number of absolute query tiles holding at least one of the Tq queries."""
    return cdiv(tk, block_m) - (tk - tq) // block_m
