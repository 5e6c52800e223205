"""Triton kernels for the fused LoRA linear layer (math in :mod:`minift.kernels.lora`).

Two kernels do all the work:

``_fused_lora_kernel``: Y = X Wt + bias + s (X At) Bt for one (BLOCK_M, BLOCK_N) tile of
    Y. Each X tile loaded for the main product also feeds a (BLOCK_M, R) accumulator of
    X At, and the epilogue adds s (X At) Bt before the single store, so X is read once and
    nothing of Y's size is written twice. The same kernel runs the backward's
    dX = dY W + s (dY B) A, with transposed views of the weights (strides do the
    transposing). Its rank-r side product (X At in the forward, dY B in the backward) is
    written by the programs of the first column of tiles, for the backward to reuse.

``_matmul_kernel``: C = alpha A B for the weight gradients (dA, dB, dW), with the
    column sums of A on the side (db = column sums of dY, fused into dW's pass).

The rank is padded up to BLOCK_R >= 16 with zeros (masked loads) because tl.dot tiles
on the GPU must be at least 16 wide; the extra columns contribute exactly zero.

The recomputation cost: every column of tiles recomputes its rows' X At, which adds
R/BLOCK_N to the matmul FLOPs (r=16, BLOCK_N=128: +12.5%) but no memory traffic; the
kernel is memory-light enough that this extra tensor-core work is mostly hidden.

Launch (:mod:`minift.kernels.launch`): a 1-D grid of output tiles; int64 index vectors
(constexpr WIDE) when a tensor spans more than 2^31 - 1 elements, e.g. a 256k x 16k output
layer, whose ``cols * stride_wn`` would wrap in int32; and the most pipeline stages, up to
the table's, whose tiles fit the device's shared memory (3 stages of 128x128x64 bf16 tiles
take 102 KB on sm_90, within its 227 KB; the consumer GPUs' 99 KB, sm_86/89/120, keep one
buffer fewer, 68 KB, for the same 3 stages).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import autotune
from .buffers import output_buffer
from .dispatch import interpreting
from .launch import (
    cdiv,
    check_grid,
    contiguous,
    layouts,
    lora_smem,
    lora_tma_smem,
    matmul_smem,
    needs_int64,
    record_launch,
    stages_for,
)
from .lora_library import lora_forward_library
from .lora_tma_triton import lora_tma, tma_ready, tma_space
from .triton_utils import (
    check_dot_tiles,
    dot_precision,
    dot_tile,
    grouped_tile,
    load_tile,
    store_tile,
    widen,
)


@triton.jit
def _fused_lora_kernel(
    x_ptr, w_ptr, bias_ptr, a_ptr, b_ptr, y_ptr, xa_ptr,
    M, N, K, R, scaling,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ar, stride_ak, stride_bn, stride_br,
    stride_ym, stride_yn, stride_xam, stride_xar,
    HAS_BIAS: tl.constexpr, STORE_XA: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    rows = widen(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), WIDE)
    cols = widen(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), WIDE)
    ranks = widen(tl.arange(0, BLOCK_R), WIDE)
    ks = widen(tl.arange(0, BLOCK_K), WIDE)
    row_ok = rows < M
    col_ok = cols < N
    rank_ok = ranks < R

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # X Wt
    xa = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)  # X At, rank-padded
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        k_ok = k < K
        x = load_tile(x_ptr, rows, k, stride_xm, stride_xk, row_ok, k_ok)
        wt = load_tile(w_ptr, k, cols, stride_wk, stride_wn, k_ok, col_ok)  # (BLOCK_K, BLOCK_N)
        at = load_tile(a_ptr, k, ranks, stride_ak, stride_ar, k_ok, rank_ok)  # padded ranks: 0
        acc = tl.dot(x, wt, acc, input_precision=PRECISION)
        xa = tl.dot(x, at, xa, input_precision=PRECISION)

    # Epilogue: the low-rank term joins the accumulator before the one store of Y.
    bt = load_tile(b_ptr, ranks, cols, stride_br, stride_bn, rank_ok, col_ok)  # (BLOCK_R, BLOCK_N)
    acc = tl.dot((xa * scaling).to(bt.dtype), bt, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    store_tile(y_ptr, rows, cols, stride_ym, stride_yn, acc, row_ok, col_ok)
    if STORE_XA:  # one column of programs writes the rank-r product for the backward
        store_tile(xa_ptr, rows, ranks, stride_xam, stride_xar, xa, row_ok & (pid_n == 0), rank_ok)


@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, sum_ptr,
    M, N, K, alpha,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    ROW_SUMS: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    rows = widen(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), WIDE)
    cols = widen(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), WIDE)
    ks = widen(tl.arange(0, BLOCK_K), WIDE)
    row_ok = rows < M
    col_ok = cols < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        k_ok = k < K
        a = load_tile(a_ptr, rows, k, stride_am, stride_ak, row_ok, k_ok)
        b = load_tile(b_ptr, k, cols, stride_bk, stride_bn, k_ok, col_ok)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if ROW_SUMS:
            sums += tl.sum(a.to(tl.float32), axis=1)
    store_tile(c_ptr, rows, cols, stride_cm, stride_cn, acc * alpha, row_ok, col_ok)
    if ROW_SUMS:
        tl.store(sum_ptr + rows, sums.to(sum_ptr.dtype.element_ty), mask=row_ok & (pid_n == 0))


MAX_RANK = 128  # the largest BLOCK_R: higher ranks take the reference


def _config(dtype: torch.dtype) -> dict:
    """Tile sizes: 128x128 output tiles on the GPU; 16s in the interpreter (tiny tests)."""
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=4, num_warps=4, num_stages=1)
    block_k = 32 if dtype == torch.float32 else 64
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=block_k, GROUP_M=8, num_warps=8, num_stages=3)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) tried on a GPU after the fixed table
# (:mod:`.autotune`), likeliest first. Wider N tiles halve the fused kernel's recomputed
# x A^T (R / BLOCK_N of the main matmul's FLOPs); 256-wide tiles fit Hopper's 227 KB only;
# small tiles are for few tokens (decoding) and the thin dA, dB products; 4-5 stages trade
# shared memory for latency hiding where the tiles are small enough.
SPACE = (
    (128, 256, 64, 8, 3),
    (128, 128, 64, 8, 4),
    (256, 128, 64, 8, 3),
    (128, 128, 32, 4, 4),
    (64, 128, 64, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 64, 64, 4, 3),
    (128, 64, 32, 4, 5),
)


def _space(dtype: torch.dtype) -> list[dict]:
    """Tuning candidates; fp32 halves BLOCK_K (the same bytes a stage as 16-bit tiles)."""
    half = dtype in (torch.float32, torch.float64)
    return [
        dict(
            BLOCK_M=m,
            BLOCK_N=n,
            BLOCK_K=k // 2 if half else k,
            GROUP_M=8,
            num_warps=w,
            num_stages=s,
        )  # fmt: skip
        for m, n, k, w, s in SPACE
    ]


ROUTE_KEYS = ("UNFUSED", "TMA", "PERSISTENT")  # a launch's route, not the kernel's tiles


def fused_lora(
    x: torch.Tensor,
    w_t: torch.Tensor,
    bias: torch.Tensor | None,
    a_t: torch.Tensor,
    b_t: torch.Tensor,
    scaling: float,
    store_xa: bool = True,
    **config,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Y = x w_t + bias + scaling (x a_t) b_t and the side product x a_t (when ``store_xa``).

    x (M, K); w_t (K, N); a_t (K, R); b_t (R, N): any strides, so transposed views of the
    weights cost nothing. ``config`` overrides the tile sizes of :func:`_config`.
    """
    (m, k), n, r = x.shape, w_t.shape[1], a_t.shape[1]
    cfg = {**_config(x.dtype), "BLOCK_R": dot_tile(r, MAX_RANK), **config}
    check_dot_tiles(**{key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_R")})
    if r > cfg["BLOCK_R"]:
        raise ValueError(f"LoRA rank {r} exceeds the kernel's largest BLOCK_R ({cfg['BLOCK_R']})")
    elem = x.element_size()

    def smem_of(c: dict) -> tuple[int, int]:
        smem = lora_tma_smem if c.get("TMA") else lora_smem
        return smem(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["BLOCK_R"], elem)

    if "num_stages" not in config:
        cfg["num_stages"] = stages_for(x.device, *smem_of(cfg), cfg["num_stages"])
    wide = needs_int64(x, w_t, a_t, b_t, contiguous(m, n), contiguous(m, r))

    def launch(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.get("UNFUSED"):  # cuBLAS: y = x Wt (+ bias), then y += s u Bt in place
            record_launch("fused_lora", None, dict(cfg))
            return lora_forward_library(x, w_t, bias, a_t, b_t, scaling)
        if cfg.get("TMA"):
            return lora_tma(x, w_t, bias, a_t, b_t, scaling, cfg)
        cfg = {key: v for key, v in cfg.items() if key not in ROUTE_KEYS}  # =0: these tiles
        y = output_buffer((m, n), x.dtype, x.device)
        xa = output_buffer((m, r), x.dtype, x.device) if store_xa else y  # y: an unused dummy
        grid = check_grid((cdiv(m, cfg["BLOCK_M"]) * cdiv(n, cfg["BLOCK_N"]),))
        compiled = _fused_lora_kernel[grid](
            x, w_t, bias if bias is not None else y, a_t, b_t, y, xa,
            m, n, k, r, float(scaling),
            x.stride(0), x.stride(1), w_t.stride(1), w_t.stride(0), a_t.stride(1), a_t.stride(0),
            b_t.stride(1), b_t.stride(0), y.stride(0), y.stride(1), xa.stride(0), xa.stride(1),
            HAS_BIAS=bias is not None, STORE_XA=store_xa, PRECISION=dot_precision(x.dtype),
            WIDE=wide, **cfg,
        )  # fmt: skip
        record_launch("fused_lora", compiled, {**cfg, "WIDE": wide})
        return y, xa

    def candidates() -> list[dict]:  # listed only when a decision is made
        # The routes likeliest to win at large shapes come first: a tuning budget cut short
        # then has timed them (TMA only where the operands allow it; lora_tma_triton).
        tma = [] if tma_ready(x, w_t, n) else tma_space(x.dtype)
        return [*tma, autotune.UNFUSED, *_space(x.dtype)]

    cfg = autotune.launch_config(
        "fused_lora", x.device, x.dtype, dict(M=m, N=n, K=k, R=r),
        dict(bias=bias is not None, store_xa=store_xa, wide=wide, layout=layouts(x, w_t, a_t, b_t)), cfg,
        candidates, config, dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), smem_of, launch,
    )  # fmt: skip
    y, xa = launch(cfg)
    return y, (xa if store_xa else None)


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float = 1.0,
    out_dtype: torch.dtype | None = None,
    row_sums: bool = False,
    **config,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """C = alpha a b (a (M, K), b (K, N), any strides), and a's row sums when asked."""
    (m, k), n = a.shape, b.shape[1]
    cfg = {**_config(a.dtype), **config}
    check_dot_tiles(**{key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K")})
    elem = a.element_size()
    smem_of = lambda c: matmul_smem(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], elem)  # noqa: E731
    if "num_stages" not in config:
        cfg["num_stages"] = stages_for(a.device, *smem_of(cfg), cfg["num_stages"])
    out_dtype = out_dtype or a.dtype
    wide = needs_int64(a, b, contiguous(m, n))

    def launch(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.get("UNFUSED"):  # the library's matmul (cuBLAS), in the output's dtype
            a_, b_ = (a, b) if out_dtype == a.dtype else (a.to(out_dtype), b.to(out_dtype))
            c = torch.mm(a_, b_)
            if alpha != 1.0:
                c.mul_(alpha)
            record_launch("matmul", None, dict(cfg))
            return c, (a_.sum(1) if row_sums else c)
        cfg = {key: v for key, v in cfg.items() if key not in ROUTE_KEYS}  # UNFUSED=0: tiles
        c = output_buffer((m, n), out_dtype, a.device)
        sums = output_buffer((m,), out_dtype, a.device) if row_sums else c
        grid = check_grid((cdiv(m, cfg["BLOCK_M"]) * cdiv(n, cfg["BLOCK_N"]),))
        compiled = _matmul_kernel[grid](
            a, b, c, sums, m, n, k, float(alpha),
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
            ROW_SUMS=row_sums, PRECISION=dot_precision(a.dtype), WIDE=wide, **cfg,
        )  # fmt: skip
        record_launch("matmul", compiled, {**cfg, "WIDE": wide})
        return c, sums

    cfg = autotune.launch_config(
        "matmul", a.device, a.dtype, dict(M=m, N=n, K=k),
        dict(row_sums=row_sums, out=str(out_dtype).removeprefix("torch."), wide=wide,
             layout=layouts(a, b)), cfg,
        lambda: [autotune.UNFUSED, *_space(a.dtype)], config, dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), smem_of, launch,
    )  # fmt: skip
    c, sums = launch(cfg)
    return c, (sums if row_sums else None)
