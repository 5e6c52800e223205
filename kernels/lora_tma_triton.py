"""The fused LoRA product on Hopper's tensor memory accelerator (TMA): a persistent matmul
whose operand tiles arrive by bulk copies, with the rank-r term added in its epilogue.

Why a second kernel. On the first H100 run (docs/gpu/2026-11-28-h100) the frozen layer's
4096^3 bf16 product ran at 782 TFLOP/s in cuBLAS and at ~554 in the best tile of
:func:`minift.kernels.lora_triton._fused_lora_kernel`, whose loads are ``cp.async`` copies
of pointer tensors: every thread computes and masks the addresses of its own 16-byte
pieces of each tile (compiled for sm_90 on the CPU: 36 ``cp.async.cg`` in its PTX).
With TMA, one thread issues a copy of a whole tile described once on the host (base, shape,
strides, tile shape); the hardware computes the addresses, zero-fills what lies past the
tensor's edge (so no masks) and clips the store of a partial tile. Persistent programs
(``PERSISTENT=1``: one per SM, each walking tiles ``n_programs`` apart) replace a launch of
one short program per tile; the tuner also offers one program per tile (``PERSISTENT=0``).

The split. Here u = x A^T is computed first (one thin product, memory-bound: it reads x
once more, ~32 MB at 4096 x 4096 bf16) and only the epilogue sees the adapters:

    y_tile = x_tile W^T_tile  (the K loop: TMA tiles, asynchronous wgmma)
             + s u_tile B^T_tile + bias_tile  (one (BLOCK_M, R) x (R, BLOCK_N) dot, once)

so the main loop is a plain matmul, with none of the fused kernel's per-step (BLOCK_K, R)
loads and narrow second dot. Which of the two routes (or cuBLAS) is faster on a device is
measured by the tuner (:mod:`.autotune`), never assumed: this file has not been timed yet.

Requirements (checked by :func:`tma_ready`, else the candidate is not offered): TMA needs
16-byte aligned bases and row strides and a unit last stride, and tiles of at most 256 per
dimension; the device must be sm_90 or later (the interpreter emulates descriptors, so the
CPU tests run this kernel too). W may be read in either memory order: the forward reads the
weight (N, K) K-contiguous and transposes the tile in shared memory (``W_NK``); the
backward's dx pass reads W as (N_out, K_in) = its (K, N) operand, N-contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .buffers import output_buffer
from .launch import cdiv, check_grid, needs_int64, record_launch
from .tma import TMA_ALIGN, TensorDescriptor, describable, unavailable_on
from .triton_utils import dot_precision, grouped_tile, load_tile, widen

TMA_MAX_BOX = 256  # elements per tile dimension


# The tuner's TMA candidates (lora_triton.fused_lora offers them), 16-bit K tiles:
# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages, persistent). 128 x 256 is the fused kernel's
# H100 winner; its 3 stages (144 KB) and the 64 KB tile the TMA store goes through fill
# sm_90's 227 KB (the compiler allocates 208 KB; tests/test_kernels_compile.py).
TMA_SPACE = (
    (128, 256, 64, 8, 3, 1),
    (128, 256, 64, 8, 3, 0),
    (128, 128, 64, 8, 4, 1),
)


def tma_space(dtype: torch.dtype) -> list[dict]:
    """:data:`TMA_SPACE` as launch configurations; fp32 halves BLOCK_K (same bytes a stage)."""
    half = dtype in (torch.float32, torch.float64)
    return [
        dict(TMA=1, PERSISTENT=p, BLOCK_M=m, BLOCK_N=n, BLOCK_K=k // 2 if half else k,
             GROUP_M=8, num_warps=w, num_stages=s)
        for m, n, k, w, s, p in TMA_SPACE
    ]  # fmt: skip


@triton.jit
def _lora_tma_kernel(
    x_desc, w_desc, y_desc, u_ptr, b_ptr, bias_ptr,
    M, N, K, R, scaling, n_programs,
    stride_um, stride_ur, stride_bn, stride_br,
    HAS_BIAS: tl.constexpr, W_NK: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    n_rows = tl.cdiv(M, BLOCK_M)
    n_cols = tl.cdiv(N, BLOCK_N)
    ranks = widen(tl.arange(0, BLOCK_R), WIDE)
    rank_ok = ranks < R
    for tile in tl.range(tl.program_id(0), n_rows * n_cols, n_programs):
        pid_m, pid_n = grouped_tile(tile, n_rows, n_cols, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):  # tiles past K arrive zero-filled: no masks
            x = x_desc.load([off_m, k0])
            if W_NK:
                w = w_desc.load([off_n, k0]).T  # (BLOCK_K, BLOCK_N), transposed in smem
            else:
                w = w_desc.load([k0, off_n])
            acc = tl.dot(x, w, acc, input_precision=PRECISION)

        # Epilogue: s u B^T for this tile (u precomputed, rank padded with zeros), the bias.
        rows = widen(off_m + tl.arange(0, BLOCK_M), WIDE)
        cols = widen(off_n + tl.arange(0, BLOCK_N), WIDE)
        col_ok = cols < N
        u = load_tile(u_ptr, rows, ranks, stride_um, stride_ur, rows < M, rank_ok)
        bt = load_tile(b_ptr, ranks, cols, stride_br, stride_bn, rank_ok, col_ok)
        acc = tl.dot((u.to(tl.float32) * scaling).to(bt.dtype), bt, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        y_desc.store([off_m, off_n], acc.to(b_ptr.dtype.element_ty))  # clipped at the edges


def tma_ready(x: torch.Tensor, w_t: torch.Tensor, n: int) -> str | None:
    """None when :func:`lora_tma` can run on these operands; else why not, in a few words."""
    why = unavailable_on(x.device)
    if why:
        return why
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"TMA tiles of {x.dtype} are not supported here"
    if x.dim() != 2 or not describable(x):
        return "x is not contiguous along K with 16-byte aligned rows"
    if not (describable(w_t) or describable(w_t.t())):
        return "the weight has no contiguous, 16-byte aligned dimension"
    if (n * x.element_size()) % TMA_ALIGN:
        return f"an output row of {n} elements is not a multiple of 16 bytes"
    return None


def _num_programs(device: torch.device, n_tiles: int) -> int:
    """One program per SM (persistent), never more than there are tiles."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        sms = 4  # the interpreter: a few programs, each walking several tiles
    return max(1, min(sms, n_tiles))


def lora_tma(
    x: torch.Tensor,
    w_t: torch.Tensor,
    bias: torch.Tensor | None,
    a_t: torch.Tensor,
    b_t: torch.Tensor,
    scaling: float,
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Y = x w_t + bias + scaling (x a_t) b_t, and u = x a_t, with ``cfg``'s tiles.

    Same operands as :func:`minift.kernels.lora_triton.fused_lora`; raises ValueError when
    :func:`tma_ready` says the operands cannot be described for TMA.
    """
    (m, k), n, r = x.shape, w_t.shape[1], a_t.shape[1]
    why = tma_ready(x, w_t, n)
    if why:
        raise ValueError(f"the TMA LoRA kernel cannot run: {why}")
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    if max(bm, bn, bk) > TMA_MAX_BOX:
        raise ValueError(f"TMA tiles are at most {TMA_MAX_BOX} wide, got {bm} x {bn} x {bk}")
    u = torch.mm(x, a_t)  # the thin product first (cuBLAS; memory-bound)
    y = output_buffer((m, n), x.dtype, x.device)
    w_nk = not describable(w_t)  # W^T view of a K-contiguous weight: describe the weight itself
    w_desc = (
        TensorDescriptor.from_tensor(w_t.t(), [bn, bk])
        if w_nk
        else TensorDescriptor.from_tensor(w_t, [bk, bn])
    )
    n_tiles = cdiv(m, bm) * cdiv(n, bn)
    programs = _num_programs(x.device, n_tiles) if cfg.get("PERSISTENT", 1) else n_tiles
    grid = check_grid((programs,))
    compiled = _lora_tma_kernel[grid](
        TensorDescriptor.from_tensor(x, [bm, bk]), w_desc, TensorDescriptor.from_tensor(y, [bm, bn]),
        u, b_t, bias if bias is not None else y,
        m, n, k, r, float(scaling), programs,
        u.stride(0), u.stride(1), b_t.stride(1), b_t.stride(0),
        HAS_BIAS=bias is not None, W_NK=w_nk, PRECISION=dot_precision(x.dtype),
        WIDE=needs_int64(u, b_t), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_R=cfg["BLOCK_R"],
        GROUP_M=cfg["GROUP_M"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    record_launch("fused_lora", compiled, dict(cfg))
    return y, u
