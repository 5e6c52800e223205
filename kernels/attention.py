r"""Exact attention without the (T, T) matrix: flash attention (Dao et al. 2022; Dao 2023).

Definition, per (batch, head), with scale c (default 1/sqrt(D)) and a visibility mask:

    S = c Q K^T,   P = softmax(S) row-wise over visible keys,   O = P V.

Positions are absolute: key j is at position j, query i at P0 + i where P0 = Tk - Tq
(keys before the queries come from a KV cache or trained prefixes and are visible to
every query). Causal attention lets query i see keys 0 .. P0 + i, the mask aligned to the
end; with Tq == Tk this is ``scaled_dot_product_attention(..., is_causal=True)``.

Online softmax (Milakov & Gimelshein 2018). Visiting key blocks j = 1, 2, ... a row keeps
its running max m, sum l and unnormalised output a:

    m' = max(m, rowmax S_j),  l' = l e^{m - m'} + rowsum e^{S_j - m'},
    a' = a e^{m - m'} + e^{S_j - m'} V_j,          and at the end O = a / l.

Each step rescales the old partial results to the new max, so after the last block O is
exactly softmax(S) V, computed in one pass with O(block) memory. The kernel also saves
lse = m + log l, the log-sum-exp of each row.

Backward. With dO given and P recomputed as exp(S - lse) block by block:

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),   dQ = c dS K,   dK = c dS^T Q,

where the softmax Jacobian gives dS_ij = P_ij (dP_ij - sum_l P_il dP_il), and
sum_l P_il dP_il = sum_l P_il (dO_i . V_l) = dO_i . O_i =: delta_i, a row-sum of
O * dO computed once before the main loops (Dao 2023).
"""

from __future__ import annotations

import math

import torch

from .dispatch import kernel_mode, triton_or_reference, use_triton

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_TRITON_HEAD_DIM = 128
LOG2E = 1.0 / math.log(2.0)  # the Triton kernels keep lse in base 2: lse_2 = lse_e * LOG2E


def causal_mask(tq: int, tk: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i (at position Tk - Tq + i) may see key j."""
    q_pos = torch.arange(tk - tq, tk, device=device)
    return torch.arange(tk, device=device)[None, :] <= q_pos[:, None]


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The definition: softmax(c Q K^T over visible keys) V, differentiated by autograd.

    ``mask`` (broadcastable to (B, H, Tq, Tk), True = visible) is combined with the causal
    mask. A row that sees no key at all outputs zeros (softmax over nothing).
    """
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    visible = _visibility(q.shape[2], k.shape[2], causal, mask, q.device)
    s = (q @ k.transpose(-2, -1)) * scale
    if visible is not None:
        s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1)
    if visible is not None:
        p = p.nan_to_num(0.0)  # rows with no visible key: softmax of all -inf is NaN
    return p @ v


def _visibility(tq, tk, causal, mask, device):
    visible = causal_mask(tq, tk, device) if causal else None
    if mask is not None:
        visible = mask if visible is None else mask & visible
    return visible


def _forward_torch(q, k, v, causal, scale, mask):
    """Reference forward returning O and the natural-log lse (the backward's inputs)."""
    visible = _visibility(q.shape[2], k.shape[2], causal, mask, q.device)
    s = (q @ k.transpose(-2, -1)) * scale
    if visible is not None:
        s = s.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    return _probs(s, lse) @ v, lse


def _probs(s, lse):
    # lse = -inf marks a row with no visible key; +inf turns its exp(s - lse) into 0.
    return torch.exp(s - lse.masked_fill(lse == float("-inf"), float("inf")).unsqueeze(-1))


def _backward_torch(do, q, k, v, o, lse, causal, scale, mask):
    """The backward of the module docstring, with P recomputed from lse."""
    visible = _visibility(q.shape[2], k.shape[2], causal, mask, q.device)
    s = (q @ k.transpose(-2, -1)) * scale
    if visible is not None:
        s = s.masked_fill(~visible, float("-inf"))
    p = _probs(s, lse)
    delta = (o * do).sum(-1, keepdim=True)
    dv = p.transpose(-2, -1) @ do
    ds = p * (do @ v.transpose(-2, -1) - delta)
    return scale * ds @ k, scale * ds.transpose(-2, -1) @ q, dv


def _token_mask(mask):
    """The token mask, built on demand: the Triton path carries a function making it, so
    the (H, Tq, Tk) mask exists only if a failed launch falls back to the reference."""
    return mask() if callable(mask) else mask


class FlashAttentionFunction(torch.autograd.Function):
    """Attention with the saved-lse backward of the module docstring.

    ``backend``: "torch" (the reference autograd Function, checked by gradcheck) or
    "triton". ``sparse`` is None (dense) or a pair (token mask, or a function returning
    it; block lists for "triton") describing a block-sparse layout. A Triton launch that
    fails falls back to the reference (:func:`minift.kernels.dispatch.triton_or_reference`).
    """

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, sparse=None, backend="torch"):
        mask, index = sparse if sparse is not None else (None, None)
        lse_base2 = False  # the reference's lse is natural, the kernels' base 2
        if backend == "triton":

            def triton():
                from .flash_triton import flash_forward

                return (*flash_forward(q, k, v, causal, scale, index), True)

            def reference():
                return (*_forward_torch(q, k, v, causal, scale, _token_mask(mask)), False)

            name = "attention" if index is None else "block_sparse_attention"
            key = (name, q.dtype, q.shape[-1], causal)
            o, lse, lse_base2 = triton_or_reference(key, triton, reference)
        else:
            o, lse = _forward_torch(q, k, v, causal, scale, _token_mask(mask))
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale, ctx.mask, ctx.index = causal, scale, mask, index
        ctx.backend, ctx.lse_base2 = backend, lse_base2
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        causal, scale = ctx.causal, ctx.scale
        if ctx.backend == "triton":

            def triton():
                from .flash_triton import flash_backward

                lse2 = lse if ctx.lse_base2 else lse * LOG2E
                return flash_backward(do.contiguous(), q, k, v, o, lse2, causal, scale, ctx.index)

            def reference():
                lse_e = lse / LOG2E if ctx.lse_base2 else lse
                return _backward_torch(do, q, k, v, o, lse_e, causal, scale, _token_mask(ctx.mask))

            name = "attention" if ctx.index is None else "block_sparse_attention"
            key = (f"{name} backward", q.dtype, q.shape[-1], causal)
            dq, dk, dv = triton_or_reference(key, triton, reference)
        else:
            dq, dk, dv = _backward_torch(do, q, k, v, o, lse, causal, scale, _token_mask(ctx.mask))
        return dq, dk, dv, None, None, None, None


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, triton: bool) -> None:
    """Shape and dtype checks shared by the attention entry points (clear ValueErrors)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be (B, H, T, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q (B, H, Tq, D) and k, v (B, H, Tk, D) disagree: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[2] < q.shape[2]:
        raise ValueError(f"keys ({k.shape[2]}) must be at least as many as queries ({q.shape[2]})")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if triton and q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the Triton attention kernel takes fp16, bf16 or fp32, not {q.dtype}")
    if triton and not 1 <= q.shape[3] <= MAX_TRITON_HEAD_DIM:
        raise ValueError(f"the Triton attention kernel takes head dims up to 128, not {q.shape[3]}")


def triton_takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """The dispatch rule, plus the kernels' limits: in the default mode, inputs the kernels
    do not take (head dims over 128, float64, nothing to compute) run the reference;
    when Triton is forced, :func:`check_qkv` names the limit instead."""
    if not use_triton(q, k, v):
        return False
    if kernel_mode() == "triton":
        return True
    return (
        q.dtype in SUPPORTED_DTYPES
        and 1 <= q.shape[-1] <= MAX_TRITON_HEAD_DIM
        and q.numel() > 0
        and k.numel() > 0
    )


def unit_stride(t: torch.Tensor) -> torch.Tensor:
    """The kernels need stride 1 along D (other strides are free, e.g. transposed views)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Flash attention: softmax(scale Q K^T) V for q (B, H, Tq, D), k, v (B, H, Tk, D).

    Tk >= Tq; the first Tk - Tq keys are a prefix every query sees, and the causal mask is
    aligned to the end (query i sees keys 0 .. Tk - Tq + i). ``scale`` defaults to
    1/sqrt(D). Equal to ``F.scaled_dot_product_attention(q, k, v, is_causal=causal,
    scale=scale)`` when Tq == Tk. Triton on CUDA, the PyTorch reference elsewhere (and for
    what the kernels do not take: head dims over 128, float64).
    """
    triton = triton_takes(q, k, v)
    check_qkv(q, k, v, triton)
    triton = triton and q.numel() > 0  # no programs to launch: the reference handles it
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if triton:
        q, k, v = unit_stride(q), unit_stride(k), unit_stride(v)
    return FlashAttentionFunction.apply(
        q, k, v, bool(causal), scale, None, "triton" if triton else "torch"
    )
