"""Triton kernel for the NF4 linear layer (math in :mod:`minift.kernels.nf4`).

One program computes a (BLOCK_M, BLOCK_N) tile of Y = X W^T + b. For each BLOCK_K slice it
loads the X tile and decodes the matching (BLOCK_K, BLOCK_N) tile of W^T from the packed
bytes: flat index f = n K + k, byte f // 2, nibble by the parity of f, level by a gather
from the 16-entry code book, times the scale of block f // 64. Nothing of W's full size is
ever written. Tiles of 16 keep the interpreter fast on CPU; on a GPU larger tiles pay off
(not tuned here: this task had no GPU to measure on).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_utils import dot_precision


@triton.jit
def _nf4_matmul_kernel(
    x_ptr, packed_ptr, scales_ptr, code_ptr, bias_ptr, y_ptr,
    M, N, K, stride_xm, stride_xk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        k_ok = k < K
        x = tl.load(
            x_ptr + rows[:, None] * stride_xm + k[None, :] * stride_xk,
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        ok = k_ok[:, None] & col_ok[None, :]
        f = cols[None, :].to(tl.int64) * K + k[:, None]  # (BLOCK_K, BLOCK_N) flat indices of W
        byte = tl.load(packed_ptr + f // 2, mask=ok, other=0).to(tl.int32)
        nibble = tl.where(f % 2 == 0, byte >> 4, byte & 15)
        level = tl.load(code_ptr + nibble, mask=ok, other=0.0)
        scale = tl.load(scales_ptr + f // 64, mask=ok, other=0.0)
        wt = (level * scale).to(x.dtype)
        acc = tl.dot(x, wt, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


def nf4_matmul(x, packed, scales, code, shape, bias=None, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16):
    n, k = shape
    m = x.shape[0]
    x = x.contiguous()
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N))
    _nf4_matmul_kernel[grid](
        x, packed.contiguous(), scales.float().contiguous(), code.float().contiguous(),
        bias if bias is not None else x, y,
        m, n, k, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, PRECISION=dot_precision(x.dtype),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
    )  # fmt: skip
    return y
