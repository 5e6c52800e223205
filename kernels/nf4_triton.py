"""Triton kernel for the NF4 linear layer (math in :mod:`minift.kernels.nf4`).

One program computes a (BLOCK_M, BLOCK_N) tile of Y = X W^T + b. For each BLOCK_K slice it
loads the X tile and decodes the matching (BLOCK_N, BLOCK_K) tile of W from the packed
bytes: flat index f = n K + k, byte f // 2, nibble by the parity of f, level by a gather
from the 16-entry code book, times the scale of block f // 64. Nothing of W's full size is
ever written. The fixed table keeps tiles of 16 (fast in the interpreter, and what the GPU
tests check); on a GPU :mod:`.autotune` tries larger ones (:func:`_space`). The decode's
gathers are pipelined too: 8 bytes of shared memory per weight element a stage
(:func:`.launch.nf4_smem`), so the larger tiles take fewer stages.

Each program decodes its whole (K, BLOCK_N) slab of W, so the decoding is repeated once per
row tile: M / BLOCK_M times in all. For a few rows (decoding tokens) that is once or twice
and the kernel reads 4.13 bits a weight instead of 16; for a training batch of thousands of
rows the repeated decode (gathers, not tensor-core work) dominates, and decoding W once
(:func:`nf4_dequantize`) before cuBLAS wins: the tuner times both (``UNFUSED``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import autotune
from .launch import cdiv, nf4_smem, record_launch
from .triton_utils import check_dot_tiles, dot_precision, load_tile, store_tile


@triton.jit
def _nf4_matmul_kernel(
    x_ptr, packed_ptr, scales_ptr, code_ptr, bias_ptr, y_ptr,
    M, N, K, stride_xm, stride_xk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, F64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if F64 else tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        k_ok = k < K
        x = load_tile(x_ptr, rows, k, stride_xm, stride_xk, row_ok, k_ok)
        # The (BLOCK_N, BLOCK_K) tile of W in W's own order, k fastest: neighbouring lanes
        # read neighbouring bytes (one row of W is K / 2 consecutive bytes), where a
        # (BLOCK_K, BLOCK_N) tile would send them K / 2 bytes apart. tl.trans feeds the dot.
        ok = col_ok[:, None] & k_ok[None, :]
        f = cols[:, None].to(tl.int64) * K + k[None, :]  # flat indices into W
        byte = tl.load(packed_ptr + f // 2, mask=ok, other=0).to(tl.int32)
        nibble = tl.where(f % 2 == 0, byte >> 4, byte & 15)
        level = tl.load(code_ptr + nibble, mask=ok, other=0.0)
        scale = tl.load(scales_ptr + f // 64, mask=ok, other=0.0)
        w = (level * scale).to(x.dtype)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(acc.dtype)[None, :]
    store_tile(y_ptr, rows, cols, stride_ym, stride_yn, acc, row_ok, col_ok)


@triton.jit
def _nf4_dequantize_kernel(
    packed_ptr, scales_ptr, code_ptr, w_ptr, numel, BLOCK: tl.constexpr,
):  # fmt: skip
    """W (flat, numel values) from BLOCK packed bytes per program: byte j holds values 2j
    (high nibble) and 2j + 1 (low), both in block 2j // 64 (64 is even)."""
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    f = 2 * j
    ok = f < numel
    byte = tl.load(packed_ptr + j, mask=ok, other=0).to(tl.int32)
    scale = tl.load(scales_ptr + f // 64, mask=ok, other=0.0)
    high = tl.load(code_ptr + (byte >> 4), mask=ok, other=0.0) * scale
    low = tl.load(code_ptr + (byte & 15), mask=ok, other=0.0) * scale
    # values 2j, 2j + 1 side by side: one contiguous store of 2 BLOCK values
    out = 2 * tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, 2 * BLOCK)
    tl.store(w_ptr + out, tl.interleave(high, low).to(w_ptr.dtype.element_ty), mask=out < numel)


DEQUANTIZE_BLOCK = 1024  # packed bytes per program: 2,048 values, a plain streaming kernel


def nf4_dequantize(packed, scales, code, shape, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in ``dtype`` from the packed codes and block scales, in one pass: reads
    4.13 bits a value and writes the dtype's width (the bf16 weight a cuBLAS matmul needs)."""
    n, k = shape
    w = torch.empty(n, k, device=packed.device, dtype=dtype)
    if w.numel():
        grid = (cdiv(packed.numel(), DEQUANTIZE_BLOCK),)
        _nf4_dequantize_kernel[grid](
            packed.contiguous(), scales.float().contiguous(), code.float().contiguous(), w,
            n * k, BLOCK=DEQUANTIZE_BLOCK,
        )  # fmt: skip
    return w


def _config(dtype: torch.dtype) -> dict:
    """The fixed table: 16s everywhere (Triton's default warps and stages on CUDA)."""
    return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=3)


def _space(dtype: torch.dtype) -> list[dict]:
    """Tuning candidates: a few rows (decoding) first, with narrow weight tiles so that a
    4096-wide layer still gives 128-256 programs for an H100's 132 SMs (16 x 64 tiles give
    64), then square tiles for prompts and training batches; stages limited by the gathers'
    shared memory."""
    rows = ((16, 32, 64, 4, 4), (16, 16, 128, 4, 3), (16, 64, 64, 4, 3), (32, 64, 64, 4, 3),
            (64, 64, 64, 4, 3), (64, 128, 64, 4, 2), (128, 64, 64, 4, 2), (128, 128, 64, 8, 2))  # fmt: skip
    return [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=w, num_stages=s)
            for m, n, k, w, s in rows]  # fmt: skip


def nf4_matmul(x, packed, scales, code, shape, bias=None, **config):
    """Y = x dequant(W)^T + bias for an NF4 weight of ``shape`` (N, K); ``config`` overrides
    the tile sizes of :func:`_config` (``UNFUSED=1``: dequantize, then the library matmul;
    ``UNFUSED=0``: the fused kernel only, its tiles still tuned)."""
    n, k = shape
    m = x.shape[0]
    x = x.contiguous()
    packed, scales, code = (
        packed.contiguous(),
        scales.float().contiguous(),
        code.float().contiguous(),
    )
    cfg = {**_config(x.dtype), **config}
    check_dot_tiles(**{key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K")})

    def launch(cfg: dict) -> torch.Tensor:
        if cfg.get("UNFUSED"):  # the whole weight in x's dtype, then the library's matmul
            w = nf4_dequantize(packed, scales, code, shape, x.dtype)
            record_launch("nf4_matmul", None, dict(cfg))
            return torch.nn.functional.linear(x, w, bias)
        cfg = {key: v for key, v in cfg.items() if key != "UNFUSED"}  # UNFUSED=0: tiles only
        y = torch.empty(m, n, device=x.device, dtype=x.dtype)
        grid = (cdiv(m, cfg["BLOCK_M"]), cdiv(n, cfg["BLOCK_N"]))
        compiled = _nf4_matmul_kernel[grid](
            x, packed, scales, code, bias if bias is not None else x, y,
            m, n, k, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
            HAS_BIAS=bias is not None, F64=x.dtype == torch.float64,
            PRECISION=dot_precision(x.dtype), **cfg,
        )  # fmt: skip
        record_launch("nf4_matmul", compiled, dict(cfg))
        return y

    elem = x.element_size()
    cfg = autotune.launch_config(
        "nf4_matmul", x.device, x.dtype, dict(M=m, N=n, K=k), dict(bias=bias is not None), cfg,
        lambda: [*_space(x.dtype), autotune.UNFUSED], config, dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k),
        lambda c: nf4_smem(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], elem), launch,
    )  # fmt: skip
    return launch(cfg)
