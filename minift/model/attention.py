"""Multi-head self-attention, causal (GPT) or bidirectional (BERT-style encoder).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V          (Vaswani et al. 2017)

M is 0 where a query may look and -inf elsewhere. Three things decide M here:
- causality: query i sees keys up to its own position. With a KV cache (or trained
  prefixes) the keys are longer than the queries, by P earlier positions; the mask is then
  aligned to the end, so query i sees keys 0 .. P + i;
- padding: keys whose attention_mask is 0 are hidden from every query;
- a query always sees its own key, so a fully padded row still has a finite softmax
  (its output is garbage that the loss and the pooling ignore).

Dense attention has three paths that compute the same function: minift's Triton flash
kernel (CUDA), PyTorch's fused scaled_dot_product_attention (neither materialises the
T x T matrix) and an explicit one that returns the attention probabilities, for lessons
and for attention-transfer distillation.

With a sparse pattern (``GPTConfig.sparse``, minift.model.sparse) query i sees only the
keys its block layout allows; the padding and packing rules above still apply, and no
T x T mask is built unless the masked reference path (or the probabilities) is asked for.
Its three paths: that masked reference, the block-sparse Triton kernel and the
linear-memory gather path. ``SelfAttention.choose_path`` picks one of the six per call.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.model.config import GPTConfig
from minift.model.layers import Rotary
from minift.model.sparse import SparsePattern, masked_sparse_attention, sparse_mask
from minift.model.sparse_efficient import efficient_sparse_attention

if TYPE_CHECKING:
    from minift.model.kv_cache import LayerKV


@dataclass
class AttentionInputs:
    """What every attention layer of one forward pass shares: positions and the mask."""

    positions: torch.Tensor  # (B, T) position of each query token
    mask: torch.Tensor | None  # (B, 1, Tq, Tk) bool, True = may attend; None = no mask needed
    causal_no_mask: bool  # SDPA's is_causal shortcut applies (square, no padding)
    # Sparse patterns build their own masks from these (dense attention reads mask only):
    key_padding: torch.Tensor | None = None  # (B, Tk), 1 = real token
    segment_ids: torch.Tensor | None = None  # (B, T) packed segments


def build_attention_mask(
    causal: bool,
    q_len: int,
    past_len: int,
    key_padding: torch.Tensor | None,
    device: torch.device,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, bool]:
    """Boolean mask (B or 1, 1, q_len, past_len + q_len), or None with a flag for SDPA's
    is_causal fast path. key_padding: (B, past_len + q_len), 1 for real tokens, 0 for pads.
    segment_ids: (B, q_len) for packed rows: a token sees only keys of its own segment."""
    k_len = past_len + q_len
    if segment_ids is not None:
        if past_len:
            raise ValueError("segment_ids (packed sequences) cannot be combined with a KV cache")
        same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
        base, _ = build_attention_mask(causal, q_len, 0, key_padding, device)
        if base is None:
            base = torch.ones(q_len, q_len, dtype=torch.bool, device=device)
            base = base.tril() if causal else base
        return base & same, False
    if key_padding is None:
        if not causal or q_len == 1:
            return None, False  # everything visible (a single new query sees all keys)
        if past_len == 0:
            return None, True
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        # End-aligned: query i sits at absolute position past_len + i.
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=past_len)
    mask = mask[None, None]
    if key_padding is not None:
        mask = mask & key_padding.bool()[:, None, None, :]
        diagonal = torch.zeros(q_len, k_len, dtype=torch.bool, device=device)
        diagonal[torch.arange(q_len), past_len + torch.arange(q_len)] = True
        mask = mask | diagonal[None, None]
    return mask, False


def with_visible_prefix(inputs: AttentionInputs, P: int, q_len: int, k_len: int) -> AttentionInputs:
    """The same attention inputs with P extra keys in front that every query may see."""
    if inputs.mask is None and not inputs.causal_no_mask:
        return inputs  # everything was visible and stays so
    if inputs.mask is None:  # plain causal: end-aligned over the longer key axis
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=inputs.positions.device)
        mask = mask.tril(diagonal=k_len - q_len)[None, None]
    else:
        m = inputs.mask
        ones = torch.ones(*m.shape[:-1], P, dtype=torch.bool, device=m.device)
        mask = torch.cat([ones, m], dim=-1)
    return dataclasses.replace(inputs, mask=mask, causal_no_mask=False)


def _use_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """The kernels' one dispatch rule (CUDA + Triton, or MINIFT_KERNELS), for head dims
    the kernel supports."""
    if not 16 <= q.size(-1) <= 128:
        return False
    from minift.kernels import use_triton

    return use_triton(q, k, v)


def _use_block_sparse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> bool:
    """The dispatch rule for the block-sparse kernel, for the block sizes and head dims the
    Triton kernel takes (a power of two >= 16; 16..128)."""
    if block_size < 16 or block_size & (block_size - 1) or not 16 <= q.size(-1) <= 128:
        return False
    from minift.kernels import use_triton

    return use_triton(q, k, v)


def explicit_attention(q, k, v, inputs: AttentionInputs, dropout: float, training: bool):
    """The readable path: the (B, H, Tq, Tk) probabilities are materialised and returned."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    mask = inputs.mask
    if inputs.causal_no_mask:
        T = q.size(-2)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    return F.dropout(probs, dropout, training) @ v, probs


class SelfAttention(nn.Module):
    """GPT-2's attention layer: one fused projection c_attn to q, k, v, then c_proj.

    Six paths compute the same function; :meth:`choose_path` picks one per call:
    dense attention through minift's Triton flash kernel, PyTorch's SDPA, or the explicit
    path that returns the probabilities; a sparse pattern through the masked reference,
    the block-sparse Triton kernel, or the linear-memory gather path."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rotary = (
            Rotary(config.head_dim, config.block_size, config.rope_theta)
            if config.pos_emb == "rope"
            else None
        )
        # Optional module returning (k, v) prefixes of shape (B, H, P, D): prefix tuning
        # (minift.peft.prefix) sets it; None leaves attention exactly as it was.
        self.prefix: nn.Module | None = None
        # A sparse attention pattern (no parameters); None: dense attention.
        self.pattern: SparsePattern | None = SparsePattern(config) if config.is_sparse else None

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def project_qkv(self, x: torch.Tensor, positions: torch.Tensor):
        q, k, v = self.c_attn(x).split(self.n_head * self.head_dim, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        inputs: AttentionInputs,
        cache: LayerKV | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self.project_qkv(x, inputs.positions)
        if cache is not None:
            k, v = cache.append(k, v)
        n_prefix = 0
        if self.prefix is not None:
            # Trained key/value prefixes (prefix tuning): P extra keys that every query sees.
            pk, pv = self.prefix(x.size(0))
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
            n_prefix = pk.size(2)
            inputs = with_visible_prefix(inputs, n_prefix, q.size(2), k.size(2))
        y, probs = self.attend(q, k, v, inputs, n_prefix, need_weights)
        B, H, T, D = y.shape
        y = y.transpose(1, 2).reshape(B, T, H * D)
        return self.resid_dropout(self.c_proj(y)), probs

    def choose_path(self, q, k, v, inputs: AttentionInputs, n_prefix: int, dropout: float,
                    need_weights: bool) -> str:  # fmt: skip
        """Which implementation computes this call (all compute the same attention)."""
        if self.pattern is None:
            if need_weights:
                return "explicit"
            if dropout == 0.0 and inputs.mask is None and _use_flash(q, k, v):
                return "flash"
            return "sdpa"
        if inputs.mask is not None:
            raise ValueError(
                "a sparse attention pattern builds its own mask from key_padding and "
                "segment_ids; got AttentionInputs with a dense mask (build them with GPT.forward)"
            )
        if self.pattern.impl == "masked" or need_weights:
            return "sparse_masked"
        extras = n_prefix or dropout or inputs.key_padding is not None
        if not (extras or inputs.segment_ids is not None) and _use_block_sparse(
            q, k, v, self.pattern.block_size
        ):
            return "block_sparse"
        return "sparse_gather"

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        inputs: AttentionInputs,
        n_prefix: int = 0,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(q k^T / sqrt(d) + mask) v for (B, H, T, D) tensors; k, v hold n_prefix
        prefix keys first. Returns the output and (when asked) the probabilities."""
        dropout = self.attn_dropout if self.training else 0.0
        path = self.choose_path(q, k, v, inputs, n_prefix, dropout, need_weights)
        if path == "flash":
            # minift's Triton flash attention (CUDA): no mask tensor, the causal rule (or
            # none, e.g. one decoding query over its cache) is applied inside the kernel.
            from minift.kernels import attention as flash_attention

            return flash_attention(q, k, v, causal=inputs.causal_no_mask), None
        if path == "sdpa":
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=inputs.mask, dropout_p=dropout, is_causal=inputs.causal_no_mask
            )
            return y, None
        if path == "explicit":
            return explicit_attention(q, k, v, inputs, dropout, self.training)
        pattern, padding, segments = self.pattern, inputs.key_padding, inputs.segment_ids
        layout = pattern.layout(k.size(2) - n_prefix, q.device)
        if path == "sparse_masked":
            mask = sparse_mask(
                layout, pattern.block_size, q.size(2), k.size(2) - n_prefix, pattern.causal,
                padding, segments, n_prefix,
            )  # fmt: skip
            return masked_sparse_attention(q, k, v, mask, dropout, need_weights)
        if path == "block_sparse":
            # The Triton kernel skips the blocks the layout leaves out (causal inside).
            from minift.kernels import block_sparse_attention

            return block_sparse_attention(q, k, v, layout, pattern.block_size, pattern.causal), None
        y = efficient_sparse_attention(
            q, k, v, layout, pattern.block_size, pattern.causal, n_prefix, padding, segments,
            dropout,
        )  # fmt: skip
        return y, None
