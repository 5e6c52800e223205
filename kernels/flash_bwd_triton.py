"""Flash attention backward in Triton (math in :mod:`minift.kernels.attention`).

Two kernels, neither needing atomics (Dao 2023, FlashAttention-2):

- ``attn_dkdv_kernel``: one program per key block accumulates that block's dK and dV
  over the query tiles that see it, recomputing P = exp2(S - lse) from the saved
  log-sum-exp instead of storing the (T, T) probabilities.
- ``attn_dq_kernel``: one program per query tile accumulates its dQ over key blocks.

Both read delta_i = sum_d O_id dO_id, precomputed once by ``attn_delta_kernel``.
Positions are absolute as in the forward (queries at P + i, P = Tk - Tq), and the grid
and offsets follow the forward's rules (one flat axis; int64 indices under WIDE).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_utils import tile_and_head, widen


@triton.jit
def _load_q_side(q_base, do_base, lse_base, delta_base, stride_qt, start_m, prefix, Tq, D, dims,
                 d_ok, BLOCK_M: tl.constexpr, WIDE: tl.constexpr):  # fmt: skip
    """Q, dO, lse and delta of the query tile starting at absolute position ``start_m``."""
    q_pos = widen(start_m + tl.arange(0, BLOCK_M), WIDE)
    rows = q_pos - prefix
    row_ok = (rows >= 0) & (rows < Tq)
    mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_base + rows[:, None] * stride_qt + dims[None, :], mask=mask, other=0.0)
    do = tl.load(do_base + rows[:, None] * D + dims[None, :], mask=mask, other=0.0)
    # lse = -inf marks a row with no visible key; +inf makes its exp2(s - lse) exactly 0.
    lse = tl.load(lse_base + rows, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
    return q, do, lse, delta, q_pos, row_ok


@triton.jit
def _dkdv_step(
    dk, dv, k, v, k_pos, q_base, do_base, lse_base, delta_base, stride_qt, start_m, prefix,
    Tq, D, qk_scale, dims, d_ok,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
):  # fmt: skip
    q, do, lse, delta, q_pos, row_ok = _load_q_side(
        q_base, do_base, lse_base, delta_base, stride_qt, start_m, prefix, Tq, D, dims, d_ok,
        BLOCK_M, WIDE,
    )  # fmt: skip
    # Work on the transposed tile (keys x queries), so dK and dV come out of plain dots.
    pt = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale - lse[None, :])
    if MASKED:
        keep = row_ok[None, :]
        if CAUSAL:
            keep = keep & (k_pos[:, None] <= q_pos[None, :])
        pt = tl.where(keep, pt, 0.0)
    dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
    dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
    dst = pt * (dpt - delta[None, :])
    dk = tl.dot(dst.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def attn_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, rows_ptr, counts_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    H, Tq, Tk, D, sm_scale, qk_scale, LAYOUT_HEADS, NB, N_TILES,
    CAUSAL: tl.constexpr, SPARSE: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, LAYOUT_BLOCK: tl.constexpr,
):  # fmt: skip
    # Under the causal mask the first key blocks are seen by the most queries: the natural
    # order already launches the longest work first.
    k_block, bh = tile_and_head(N_TILES, False)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    prefix = Tk - Tq
    start_n = k_block * BLOCK_N
    k_pos = widen(start_n + tl.arange(0, BLOCK_N), WIDE)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < D
    kv_mask = (k_pos < Tk)[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + b * stride_kb + h * stride_kh + k_pos[:, None] * stride_kt + dims[None, :],
                mask=kv_mask, other=0.0)  # fmt: skip
    v = tl.load(v_ptr + b * stride_vb + h * stride_vh + k_pos[:, None] * stride_vt + dims[None, :],
                mask=kv_mask, other=0.0)  # fmt: skip
    q_base = q_ptr + b * stride_qb + h * stride_qh
    do_base = do_ptr + bh.to(tl.int64) * Tq * D
    lse_base = lse_ptr + bh.to(tl.int64) * Tq
    delta_base = delta_ptr + bh.to(tl.int64) * Tq

    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    if SPARSE:  # the transposed layout lists the query blocks that see this key block
        row = (h % LAYOUT_HEADS) * NB + start_n // LAYOUT_BLOCK
        # One flat loop over (listed block, tile within it), pipelined across blocks (the
        # forward's reason: only the innermost loop is pipelined).
        tiles_per_block: tl.constexpr = LAYOUT_BLOCK // BLOCK_M
        for t in range(tl.load(counts_ptr + row) * tiles_per_block):
            block_start = tl.load(rows_ptr + row * NB + t // tiles_per_block) * LAYOUT_BLOCK
            dk, dv = _dkdv_step(
                dk, dv, k, v, k_pos, q_base, do_base, lse_base, delta_base, stride_qt,
                block_start + (t % tiles_per_block) * BLOCK_M, prefix, Tq, D, qk_scale, dims,
                d_ok, CAUSAL, True, BLOCK_M, PRECISION, WIDE,
            )  # fmt: skip
    else:
        # Query tiles: [lo, mid) straddle the start of the queries or the causal diagonal
        # and need the mask, [mid, full) are whole and fully visible, [full, hi) is the
        # ragged last tile. Tiles wholly before the diagonal see nothing and are skipped.
        lo = prefix // BLOCK_M
        mid = tl.cdiv(prefix, BLOCK_M)
        if CAUSAL:
            lo = tl.maximum(lo, start_n // BLOCK_M)
            mid = tl.maximum(mid, tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M))
        hi = tl.cdiv(Tk, BLOCK_M)
        mid = tl.minimum(mid, hi)
        full = tl.maximum(mid, Tk // BLOCK_M)
        for t in range(lo, mid):
            dk, dv = _dkdv_step(
                dk, dv, k, v, k_pos, q_base, do_base, lse_base, delta_base, stride_qt,
                t * BLOCK_M, prefix, Tq, D, qk_scale, dims, d_ok, CAUSAL, True, BLOCK_M, PRECISION,
                WIDE,
            )  # fmt: skip
        for t in range(mid, full):
            dk, dv = _dkdv_step(
                dk, dv, k, v, k_pos, q_base, do_base, lse_base, delta_base, stride_qt,
                t * BLOCK_M, prefix, Tq, D, qk_scale, dims, d_ok, CAUSAL, False, BLOCK_M,
                PRECISION, WIDE,
            )  # fmt: skip
        for t in range(full, hi):
            dk, dv = _dkdv_step(
                dk, dv, k, v, k_pos, q_base, do_base, lse_base, delta_base, stride_qt,
                t * BLOCK_M, prefix, Tq, D, qk_scale, dims, d_ok, CAUSAL, True, BLOCK_M, PRECISION,
                WIDE,
            )  # fmt: skip

    out = (bh.to(tl.int64) * Tk + k_pos)[:, None] * D + dims[None, :]
    tl.store(dk_ptr + out, (dk * sm_scale).to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + out, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_step(
    dq, q, do, lse, delta, q_pos, k_base, v_base, stride_kt, stride_vt, start_n, Tk, qk_scale,
    dims, d_ok,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
):  # fmt: skip
    k_pos = widen(start_n + tl.arange(0, BLOCK_N), WIDE)
    kv_mask = (k_pos < Tk)[:, None] & d_ok[None, :]
    k = tl.load(k_base + k_pos[:, None] * stride_kt + dims[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_base + k_pos[:, None] * stride_vt + dims[None, :], mask=kv_mask, other=0.0)
    p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale - lse[:, None])
    if MASKED:
        keep = (k_pos < Tk)[None, :]
        if CAUSAL:
            keep = keep & (k_pos[None, :] <= q_pos[:, None])
        p = tl.where(keep, p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)


@triton.jit
def attn_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, cols_ptr, counts_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    H, Tq, Tk, D, sm_scale, qk_scale, LAYOUT_HEADS, NB, N_TILES,
    CAUSAL: tl.constexpr, SPARSE: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, LAYOUT_BLOCK: tl.constexpr,
):  # fmt: skip
    tile, bh = tile_and_head(N_TILES, CAUSAL)  # causal: the longest query tiles first
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    prefix = Tk - Tq
    q_block = prefix // BLOCK_M + tile
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < D
    q, do, lse, delta, q_pos, row_ok = _load_q_side(
        q_ptr + b * stride_qb + h * stride_qh, do_ptr + bh.to(tl.int64) * Tq * D,
        lse_ptr + bh.to(tl.int64) * Tq, delta_ptr + bh.to(tl.int64) * Tq, stride_qt,
        q_block * BLOCK_M, prefix, Tq, D, dims, d_ok, BLOCK_M, WIDE,
    )  # fmt: skip
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    if SPARSE:  # one flat loop over (listed block, tile within it), as in dK/dV
        row = (h % LAYOUT_HEADS) * NB + q_block * BLOCK_M // LAYOUT_BLOCK
        tiles_per_block: tl.constexpr = LAYOUT_BLOCK // BLOCK_N
        for t in range(tl.load(counts_ptr + row) * tiles_per_block):
            block_start = tl.load(cols_ptr + row * NB + t // tiles_per_block) * LAYOUT_BLOCK
            dq = _dq_step(
                dq, q, do, lse, delta, q_pos, k_base, v_base, stride_kt, stride_vt,
                block_start + (t % tiles_per_block) * BLOCK_N, Tk, qk_scale, dims, d_ok, CAUSAL,
                True, BLOCK_N, PRECISION, WIDE,
            )  # fmt: skip
    else:  # the same split as the forward: whole visible blocks, then masked ones
        n_blocks = tl.cdiv(Tk, BLOCK_N)
        n_full = Tk // BLOCK_N
        if CAUSAL:
            n_blocks = tl.minimum(n_blocks, tl.cdiv((q_block + 1) * BLOCK_M, BLOCK_N))
            n_full = tl.minimum(n_full, (q_block * BLOCK_M + 1) // BLOCK_N)
        for n in range(0, n_full):
            dq = _dq_step(
                dq, q, do, lse, delta, q_pos, k_base, v_base, stride_kt, stride_vt, n * BLOCK_N,
                Tk, qk_scale, dims, d_ok, CAUSAL, False, BLOCK_N, PRECISION, WIDE,
            )  # fmt: skip
        for n in range(n_full, n_blocks):
            dq = _dq_step(
                dq, q, do, lse, delta, q_pos, k_base, v_base, stride_kt, stride_vt, n * BLOCK_N,
                Tk, qk_scale, dims, d_ok, CAUSAL, True, BLOCK_N, PRECISION, WIDE,
            )  # fmt: skip

    out = (bh.to(tl.int64) * Tq + q_pos - prefix)[:, None] * D + dims[None, :]
    tl.store(dq_ptr + out, (dq * sm_scale).to(dq_ptr.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])  # fmt: skip
