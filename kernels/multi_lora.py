r"""Many LoRA adapters in one batch: the segmented gather matmul of Punica and S-LoRA.

Serving many users from one base model means a batch whose rows belong to different
users, each with their own adapter (A_l, B_l, s_l). For row m of x (M, K) with adapter
l = ids[m] the low-rank term is

    y_m = s_l (x_m A_l^T) B_l^T                 A_l (r, K), B_l (N, r), y (M, N),

and y_m = 0 for a row with no adapter (ids[m] = -1). The base model's x W^T + b is the
same for every row and stays one ordinary matmul; only this term differs per row.

A loop over adapters (select the rows of adapter l, two matmuls, scatter back) launches
2L small matmuls and copies rows around. Punica's SGMV kernel (Chen et al. 2023,
"Punica: Multi-Tenant LoRA Serving") and S-LoRA (Sheng et al. 2023) instead sort the rows
by adapter once, cut each adapter's run of rows ("segment") into row tiles, and launch
one kernel over all tiles: each program reads its tile's adapter id, gathers its rows of
x through the sort order, and applies that adapter's A and B. Here shrink (x A^T) and
expand (u B^T) run in the same program, as in :mod:`.lora`'s fused kernel.

Backward, with g = dL/dy, u_m = x_m A_l^T and (gB)_m = g_m B_l for the rows of adapter l:

    dL/dx_m = s_l (g_m B_l) A_l                 the forward's form with A <- B^T, B <- A^T,
    dL/dB_l = s_l sum_{m in l} g_m^T u_m        (N, r): a segmented outer-product sum,
    dL/dA_l = s_l sum_{m in l} (gB)_m^T x_m     (r, K): the same, on the side product g B.

So the Triton backward is the forward kernel once more (on transposed views, storing g B)
and one segmented reduction kernel for each weight gradient.
"""

from __future__ import annotations

import torch

from .dispatch import kernel_mode, triton_or_reference, use_triton
from .segments import Segments, segments

__all__ = ["MAX_TRITON_RANK", "MultiLoRAFunction", "Segments", "multi_lora", "multi_lora_loop",
           "multi_lora_reference", "one_adapter", "segments"]  # fmt: skip

MAX_TRITON_RANK = 128  # BLOCK_R's cap in multi_lora_triton; higher ranks take the reference


# ------------------------------------------------------------------------ references
def multi_lora_reference(
    x: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    ids: torch.Tensor,
    scaling: torch.Tensor,
) -> torch.Tensor:
    """The definition, row by row: gather each row's (A, B, s), batched matmuls, autograd.

    Memory M r (K + N): fine for tests, wasteful for serving. Rows with id -1 get 0.
    """
    has = ids >= 0
    safe = ids.clamp(min=0)
    u = torch.bmm(lora_A[safe], x.unsqueeze(-1)).squeeze(-1)  # (M, r)
    y = torch.bmm(lora_B[safe], u.unsqueeze(-1)).squeeze(-1)  # (M, N)
    # scaling may live on the CPU (a list of floats turned tensor) while the rows are on a GPU
    scale = scaling.to(device=y.device, dtype=y.dtype)
    return y * (scale[safe] * has.to(y.dtype)).unsqueeze(-1)


def multi_lora_loop(
    x: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    ids: torch.Tensor,
    scaling: torch.Tensor,
) -> torch.Tensor:
    """What serving does without the kernel: one pair of matmuls per adapter present."""
    y = x.new_zeros(x.shape[0], lora_B.shape[1])
    for adapter in torch.unique(ids[ids >= 0]).tolist():
        rows = (ids == adapter).nonzero().squeeze(1)
        part = (x[rows] @ lora_A[adapter].t()) @ lora_B[adapter].t()
        y = y.index_copy(0, rows, part * scaling[adapter].to(y.dtype))
    return y


def one_adapter(
    x: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    adapter: int,
    scaling: torch.Tensor,
) -> torch.Tensor:
    """The term when every row uses ``adapter`` (a batch of one user): s_l (x A_l^T) B_l^T as
    two library matmuls, differentiated by autograd. On the H100 the segmented kernel took
    twice as long as these for one user (0.96 against 0.46 ms at 1,024 tokens: its sort and
    tile table are fixed costs), so :func:`multi_lora` routes such a batch here."""
    scale = scaling[adapter].to(device=x.device, dtype=x.dtype)
    return (x @ lora_A[adapter].t()) @ lora_B[adapter].t() * scale


# ------------------------------------------------------------------------ backends
def _forward_torch(x, lora_A, lora_B, seg, scaling):
    """Per segment: u = x A_l^T, y = s_l u B_l^T (u saved for dB)."""
    y = x.new_zeros(x.shape[0], lora_B.shape[1])
    u = x.new_zeros(x.shape[0], lora_A.shape[1])
    starts = seg.starts.tolist()
    for lid in range(len(starts) - 1):
        rows = seg.order[starts[lid] : starts[lid + 1]].long()
        if len(rows):
            u[rows] = x[rows] @ lora_A[lid].t()
            y[rows] = (u[rows] @ lora_B[lid].t()) * scaling[lid].item()
    return y, u


def _backward_torch(g, x, lora_A, lora_B, u, seg, scaling, needs):
    dx = torch.zeros_like(x) if needs[0] else None
    da = torch.zeros_like(lora_A) if needs[1] else None
    db = torch.zeros_like(lora_B) if needs[2] else None
    starts = seg.starts.tolist()
    for lid in range(len(starts) - 1):
        rows = seg.order[starts[lid] : starts[lid + 1]].long()
        if not len(rows):
            continue
        s = scaling[lid].item()
        gb = g[rows] @ lora_B[lid]  # (rows, r)
        if dx is not None:
            dx[rows] = s * (gb @ lora_A[lid])
        if da is not None:
            da[lid] = s * (gb.t() @ x[rows])
        if db is not None:
            db[lid] = s * (g[rows].t() @ u[rows])
    return dx, da, db


def _forward_triton(x, lora_A, lora_B, seg, scaling):
    from .multi_lora_triton import sgmv

    return sgmv(x, lora_A, lora_B, seg, scaling)


def _backward_triton(g, x, lora_A, lora_B, u, seg, scaling, needs):
    from .multi_lora_triton import segmented_outer, sgmv

    dx = da = db = None
    if needs[0] or needs[1]:
        # dx = s (g B_l) A_l: the forward on A' = B^T (L, r, N) and B' = A^T (L, K, r),
        # whose side product g A'^T = g B is what dA needs.
        dx, gb = sgmv(g, lora_B.transpose(1, 2), lora_A.transpose(1, 2), seg, scaling)
        if needs[1]:
            da = segmented_outer(gb, x, seg, scaling, lora_A.dtype)
        dx = dx if needs[0] else None
    if needs[2]:
        db = segmented_outer(g, u, seg, scaling, lora_B.dtype)
    return dx, da, db


_BACKENDS = {
    "torch": (_forward_torch, _backward_torch),
    "triton": (_forward_triton, _backward_triton),
}


class MultiLoRAFunction(torch.autograd.Function):
    """y_m = s_l (x_m A_l^T) B_l^T, l = ids[m], with the backward of the module docstring.

    ``seg`` is :func:`segments` of the ids; ``backend`` "torch" (a loop over segments,
    checked by gradcheck) or "triton" (two kernels, one launch each per pass). No gradient
    flows to ids or scaling.
    """

    @staticmethod
    def forward(ctx, x, lora_A, lora_B, seg, scaling, backend="torch"):
        args = (x, lora_A, lora_B, seg, scaling)
        forward, _ = _BACKENDS[backend]
        if backend == "triton":
            key = ("multi_lora", x.dtype, lora_A.shape[1])
            y, u = triton_or_reference(key, lambda: forward(*args), lambda: _forward_torch(*args))
        else:
            y, u = forward(*args)
        ctx.save_for_backward(x, lora_A, lora_B, u, scaling)
        ctx.seg, ctx.backend = seg, backend
        return y

    @staticmethod
    def backward(ctx, g):
        x, lora_A, lora_B, u, scaling = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        args = (g.contiguous(), x, lora_A, lora_B, u, ctx.seg, scaling, needs)
        _, backward = _BACKENDS[ctx.backend]
        if ctx.backend == "triton":
            key = ("multi_lora backward", x.dtype, lora_A.shape[1], needs)
            grads = triton_or_reference(
                key, lambda: backward(*args), lambda: _backward_torch(*args)
            )
        else:
            grads = backward(*args)
        return (*grads, None, None, None)


def _check(x, lora_A, lora_B, ids, scaling, check_ids: bool) -> tuple[int, int] | None:
    """Named errors for bad operands; the ids' (lowest, highest) when they were read."""
    if lora_A.dim() != 3 or lora_B.dim() != 3:
        raise ValueError(
            f"lora_A must be (adapters, r, in) and lora_B (adapters, out, r), got "
            f"{tuple(lora_A.shape)} and {tuple(lora_B.shape)}"
        )
    n_adapters, r, k = lora_A.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features but lora_A expects {k}")
    if lora_B.shape[0] != n_adapters or lora_B.shape[2] != r:
        raise ValueError(
            f"lora_B must be ({n_adapters}, out, {r}) to match lora_A, got {tuple(lora_B.shape)}"
        )
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"adapter ids must be an integer tensor, got {ids.dtype}")
    span = None
    if check_ids and ids.numel():  # one read-back from the device; serving checks once
        low, high = span = tuple(int(v) for v in torch.stack(torch.aminmax(ids)).tolist())
        if low < -1 or high >= n_adapters:
            raise ValueError(
                f"adapter ids must lie in [-1, {n_adapters - 1}] (-1: no adapter), got "
                f"[{low}, {high}]"
            )
    if scaling.shape != (n_adapters,):
        raise ValueError(
            f"scaling must be ({n_adapters},), one per adapter, got {tuple(scaling.shape)}"
        )
    if len({x.dtype, lora_A.dtype, lora_B.dtype}) > 1:
        raise ValueError(
            f"x, lora_A and lora_B must share one dtype, got {x.dtype}, {lora_A.dtype}, {lora_B.dtype}"
        )
    return span


def multi_lora(
    x: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    ids: torch.Tensor,
    scaling: torch.Tensor | float,
    check_ids: bool = True,
) -> torch.Tensor:
    """Each row's own LoRA term, y_m = s_l (x_m A_l^T) B_l^T with l = ids[m], in one pass.

    x: (..., K); lora_A: (L, r, K); lora_B: (L, N, r); ids: x.shape[:-1] or any prefix of
    it (e.g. (batch,) for one adapter per sequence), -1 for no adapter; scaling: (L,) or
    one float. ``check_ids=False`` skips the range check of ids (a read-back from the GPU)
    for a caller that made it once for many calls. Returns (..., N), to be added to the base
    layer's output. Triton on CUDA
    (float16/bfloat16/float32, ranks up to 128), else the PyTorch loop over segments. When
    the check finds every row on one adapter, :func:`one_adapter` computes the term (a
    caller that skips the check and knows it can call that directly).
    """
    n_adapters = lora_A.shape[0] if lora_A.dim() == 3 else 0
    if not torch.is_tensor(scaling):
        scaling = torch.full((n_adapters,), float(scaling))
    scaling = scaling.detach().to(device=x.device, dtype=torch.float32)
    lead = x.shape[:-1]
    if ids.shape != lead:
        if ids.shape != lead[: ids.dim()]:
            raise ValueError(
                f"adapter ids of shape {tuple(ids.shape)} fit neither x's rows {tuple(lead)} "
                "nor a prefix of them"
            )
        ids = ids.reshape(*ids.shape, *([1] * (len(lead) - ids.dim()))).expand(lead)
    ids = ids.reshape(-1).to(x.device)
    span = _check(x, lora_A, lora_B, ids, scaling, check_ids)
    x2 = x.reshape(-1, x.shape[-1])
    if span is not None and span[0] == span[1] >= 0:  # a batch of one user
        return one_adapter(x2, lora_A, lora_B, span[0], scaling).reshape(*lead, lora_B.shape[1])
    seg = segments(ids.long(), n_adapters)
    forced = kernel_mode() == "triton"
    fits = lora_A.shape[1] <= MAX_TRITON_RANK and x.dtype != torch.float64
    triton = use_triton(x, lora_A, lora_B) and x2.shape[0] > 0 and (fits or forced)
    y = MultiLoRAFunction.apply(x2, lora_A, lora_B, seg, scaling, "triton" if triton else "torch")
    return y.reshape(*lead, lora_B.shape[1])
