"""Triton kernels for many LoRA adapters in one batch (math in :mod:`minift.kernels.multi_lora`).

``_sgmv_kernel``: Y[rows] = s_l (X[rows] At_l) Bt_l for one (BLOCK_M rows of one adapter,
    BLOCK_N columns) tile. The launcher cuts every adapter's segment of the sorted rows
    into tiles and lists them (adapter, first, end); program p takes tile p // (column
    tiles). Rows are gathered through the sort order, so x is never permuted in memory
    (the "gather" of segmented gather matrix-vector multiplication). The rank-r product
    X At_l is kept in registers between shrink and expand, and stored once (by the first
    column of programs) for the backward.

``_segmented_outer_kernel``: C_l = s_l P[rows of l]^T Q[rows of l] for every adapter l,
    one (BLOCK_P, BLOCK_Q) tile of C_l per program, looping over the segment's rows. It
    gives dB_l (P = dY, Q = X A^T) and dA_l (P = dY B, Q = X).

One launch per kernel call whatever the number of adapters, against 2L launches for a
loop over adapters. Ranks are padded to BLOCK_R >= 16 with masked zero loads, as in
:mod:`.lora_triton`. Adapter offsets are int64 (L x r x K may pass 2^31 elements for
many adapters); row and column offsets widen only when a tensor needs it (WIDE).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import autotune
from .buffers import output_buffer
from .dispatch import interpreting
from .launch import cdiv, check_grid, contiguous, matmul_smem, needs_int64, record_launch, sgmv_smem
from .triton_utils import check_dot_tiles, dot_precision, dot_tile, load_tile, store_tile, widen

MAX_RANK = 128


@triton.jit
def _sgmv_kernel(
    x_ptr, a_ptr, b_ptr, s_ptr, y_ptr, u_ptr, order_ptr, tile_adapter_ptr, tile_first_ptr,
    tile_end_ptr,
    N, K, R,
    stride_xm, stride_xk, stride_al, stride_ar, stride_ak, stride_bl, stride_bn, stride_br,
    stride_ym, stride_yn, stride_um, stride_ur,
    F64: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n_col_tiles = tl.cdiv(N, BLOCK_N)
    tile = pid // n_col_tiles
    pid_n = pid % n_col_tiles
    adapter = tl.load(tile_adapter_ptr + tile).to(tl.int64)
    first = tl.load(tile_first_ptr + tile)
    end = tl.load(tile_end_ptr + tile)

    pos = first + tl.arange(0, BLOCK_M)
    row_ok = pos < end
    rows = widen(tl.load(order_ptr + pos, mask=row_ok, other=0), WIDE)  # the gather
    cols = widen(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), WIDE)
    ranks = tl.arange(0, BLOCK_R)
    ks = widen(tl.arange(0, BLOCK_K), WIDE)
    col_ok = cols < N
    rank_ok = ranks < R
    a_base = a_ptr + adapter * stride_al
    b_base = b_ptr + adapter * stride_bl
    acc_type = tl.float64 if F64 else tl.float32

    u = tl.zeros((BLOCK_M, BLOCK_R), dtype=acc_type)  # shrink: X At_l
    k_end = tl.where(first < end, K, 0)  # an empty tile (past the real ones) skips the loop
    for k0 in range(0, k_end, BLOCK_K):
        k = k0 + ks
        k_ok = k < K
        x = load_tile(x_ptr, rows, k, stride_xm, stride_xk, row_ok, k_ok)  # the gathered rows
        at = load_tile(a_base, k, ranks, stride_ak, stride_ar, k_ok, rank_ok)  # A_l^T; padded: 0
        u = tl.dot(x, at, u, input_precision=PRECISION, out_dtype=acc_type)

    bt = load_tile(b_base, ranks, cols, stride_br, stride_bn, rank_ok, col_ok)  # expand: B_l^T
    scale = tl.load(s_ptr + adapter).to(acc_type)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_type)
    acc = tl.dot((u * scale).to(bt.dtype), bt, acc, input_precision=PRECISION, out_dtype=acc_type)
    store_tile(y_ptr, rows, cols, stride_ym, stride_yn, acc, row_ok, col_ok)  # the scatter back
    store_tile(u_ptr, rows, ranks, stride_um, stride_ur, u, row_ok & (pid_n == 0), rank_ok)


@triton.jit
def _segmented_outer_kernel(
    p_ptr, q_ptr, s_ptr, c_ptr, order_ptr, starts_ptr,
    P, Q,
    stride_pm, stride_pp, stride_qm, stride_qq, stride_cl, stride_cp, stride_cq,
    F64: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n_p, n_q = tl.cdiv(P, BLOCK_P), tl.cdiv(Q, BLOCK_Q)
    adapter = pid // (n_p * n_q)
    pid_p = (pid % (n_p * n_q)) // n_q
    pid_q = pid % n_q
    first = tl.load(starts_ptr + adapter)
    end = tl.load(starts_ptr + adapter + 1)
    pcols = widen(pid_p * BLOCK_P + tl.arange(0, BLOCK_P), WIDE)
    qcols = widen(pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q), WIDE)
    p_ok = pcols < P
    q_ok = qcols < Q
    acc_type = tl.float64 if F64 else tl.float32

    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=acc_type)
    for m0 in range(first, end, BLOCK_M):  # this adapter's rows only; none: C_l = 0
        pos = m0 + tl.arange(0, BLOCK_M)
        row_ok = pos < end
        rows = widen(tl.load(order_ptr + pos, mask=row_ok, other=0), WIDE)
        pt = load_tile(p_ptr, pcols, rows, stride_pp, stride_pm, p_ok, row_ok)  # P^T: no tl.trans
        q = load_tile(q_ptr, rows, qcols, stride_qm, stride_qq, row_ok, q_ok)
        acc = tl.dot(pt, q, acc, input_precision=PRECISION, out_dtype=acc_type)
    scale = tl.load(s_ptr + adapter).to(acc_type)
    c_base = c_ptr + adapter.to(tl.int64) * stride_cl
    store_tile(c_base, pcols, qcols, stride_cp, stride_cq, acc * scale, p_ok, q_ok)


def _precision(dtype: torch.dtype) -> str:
    """float64 multiplies in full precision; the others as :func:`.triton_utils.dot_precision`."""
    return "ieee" if dtype == torch.float64 else dot_precision(dtype)


def _config(dtype: torch.dtype) -> dict:
    """64-row tiles on the GPU (segments are short: a few sequences per user); 16s in the
    interpreter, so tests cross tile edges with small tensors."""
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)
    block_k = 32 if dtype in (torch.float32, torch.float64) else 64
    return dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=block_k, num_warps=4, num_stages=2)


def _space(dtype: torch.dtype) -> list[dict]:
    """Tuning candidates (:mod:`.autotune`) for the shrink-expand kernel: short segments
    (few rows per adapter) want short row tiles, since a segment's last tile is mostly
    masked; long ones want the fixed 64-row tiles with more stages or wider columns."""
    half = dtype in (torch.float32, torch.float64)
    rows = ((32, 128, 64, 4, 3), (16, 128, 64, 4, 3), (64, 128, 64, 4, 3), (64, 64, 64, 4, 3),
            (64, 256, 64, 8, 2), (32, 64, 128, 4, 2))  # fmt: skip
    return [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k // 2 if half else k, num_warps=w, num_stages=s)
            for m, n, k, w, s in rows]  # fmt: skip


def _outer_space() -> list[dict]:
    """Candidates for the segmented outer products (dA, dB): (BLOCK_M rows a step, the
    (BLOCK_P, BLOCK_Q) output tile), each adapter's rows summed in one program."""
    rows = ((64, 64, 64, 4, 3), (32, 128, 64, 8, 2), (64, 32, 128, 4, 3), (16, 64, 64, 4, 4),
            (64, 128, 128, 8, 2))  # fmt: skip
    return [dict(BLOCK_M=m, BLOCK_P=p, BLOCK_Q=q, num_warps=w, num_stages=s)
            for m, p, q, w, s in rows]  # fmt: skip


def sgmv(
    x: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    seg,
    scaling: torch.Tensor,
    **config,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, u): y[m] = s_l (x[m] A_l^T) B_l^T, u[m] = x[m] A_l^T, rows without adapter 0.

    x (M, K); lora_A (L, r, K); lora_B (L, N, r), any strides (transposed views are how
    the backward reuses this); seg: :class:`minift.kernels.multi_lora.Segments`.
    """
    (m, k), n, r = x.shape, lora_B.shape[1], lora_A.shape[1]
    cfg = {**_config(x.dtype), "BLOCK_R": dot_tile(r, MAX_RANK), **config}
    check_dot_tiles(**{key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_R")})
    if r > cfg["BLOCK_R"]:
        raise ValueError(f"LoRA rank {r} exceeds the kernel's largest BLOCK_R ({cfg['BLOCK_R']})")
    if m == 0 or lora_A.shape[0] == 0:  # no rows, or no adapter to apply
        return (torch.zeros((m, n), dtype=x.dtype, device=x.device),
                torch.zeros((m, r), dtype=x.dtype, device=x.device))  # fmt: skip
    wide = needs_int64(x, contiguous(m, n))

    def launch(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.zeros((m, n), dtype=x.dtype, device=x.device)  # rows without adapter: 0
        u = torch.zeros((m, r), dtype=x.dtype, device=x.device)
        tile_adapter, tile_first, tile_end = seg.tiles(cfg["BLOCK_M"])
        grid = check_grid((len(tile_adapter) * cdiv(n, cfg["BLOCK_N"]),))
        compiled = _sgmv_kernel[grid](
            x, lora_A, lora_B, scaling, y, u, seg.order, tile_adapter, tile_first, tile_end,
            n, k, r,
            x.stride(0), x.stride(1), *lora_A.stride(), *lora_B.stride(),
            y.stride(0), y.stride(1), u.stride(0), u.stride(1),
            F64=x.dtype == torch.float64, PRECISION=_precision(x.dtype), WIDE=wide, **cfg,
        )  # fmt: skip
        record_launch("sgmv", compiled, {**cfg, "WIDE": wide})
        return y, u

    elem = x.element_size()
    cfg = autotune.launch_config(
        "sgmv", x.device, x.dtype, dict(M=m, N=n, K=k, R=r, L=lora_A.shape[0]),
        dict(wide=wide), cfg, lambda: _space(x.dtype), config, dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k),
        lambda c: sgmv_smem(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["BLOCK_R"], elem), launch,
    )  # fmt: skip
    return launch(cfg)


def segmented_outer(
    p: torch.Tensor,
    q: torch.Tensor,
    seg,
    scaling: torch.Tensor,
    out_dtype: torch.dtype,
    **config,
) -> torch.Tensor:
    """C (L, P, Q) with C_l = s_l p[rows of l]^T q[rows of l]; p (M, P), q (M, Q)."""
    n_adapters = len(seg.starts) - 1
    pdim, qdim = p.shape[1], q.shape[1]
    base = _config(p.dtype)
    cfg = dict(
        BLOCK_M=base["BLOCK_M"] if interpreting() else 32,
        BLOCK_P=dot_tile(pdim, 16 if interpreting() else 64),
        BLOCK_Q=dot_tile(qdim, 16 if interpreting() else 64),
        num_warps=4,
        num_stages=base["num_stages"],
        **config,
    )
    check_dot_tiles(**{key: cfg[key] for key in ("BLOCK_M", "BLOCK_P", "BLOCK_Q")})
    wide = needs_int64(p, q)

    def launch(cfg: dict) -> torch.Tensor:
        c = output_buffer((n_adapters, pdim, qdim), out_dtype, p.device)
        grid = (n_adapters * cdiv(pdim, cfg["BLOCK_P"]) * cdiv(qdim, cfg["BLOCK_Q"]),)
        compiled = _segmented_outer_kernel[check_grid(grid)](
            p, q, scaling, c, seg.order, seg.starts, pdim, qdim,
            p.stride(0), p.stride(1), q.stride(0), q.stride(1), *c.stride(),
            F64=p.dtype == torch.float64, PRECISION=_precision(p.dtype), WIDE=wide, **cfg,
        )  # fmt: skip
        record_launch("segmented_outer", compiled, {**cfg, "WIDE": wide})
        return c

    elem = p.element_size()
    cfg = autotune.launch_config(
        "segmented_outer", p.device, p.dtype, dict(M=p.shape[0], P=pdim, Q=qdim, L=n_adapters),
        dict(out=str(out_dtype).removeprefix("torch."), wide=wide), cfg, _outer_space, config,
        dict(BLOCK_M=p.shape[0], BLOCK_P=pdim, BLOCK_Q=qdim),
        lambda c: matmul_smem(c["BLOCK_P"], c["BLOCK_Q"], c["BLOCK_M"], elem), launch,
    )  # fmt: skip
    return launch(cfg)
