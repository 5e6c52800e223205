"""Sparse attention patterns in the model: which keys each query may see, as a mask.

Dense attention costs O(T^2) time and memory. A sparse pattern lets query i see only a
set S(i) of keys, |S(i)| << T, chosen so that information can still cross the sequence
in a few layers:

    Attn(Q, K, V)_i = sum_{j in S(i)} softmax_j(q_i . k_j / sqrt(d)) v_j

The patterns are the block layouts of minift.kernels.layouts (one definition, shared with
the Triton kernel): the sequence is cut into blocks of ``sparse.block_size`` tokens and
``layout[h, I, J]`` says whether the queries of block I may see the keys of block J.

- sliding window with dilation (Beltagy et al. 2020, Longformer),
- strided and fixed (Child et al. 2019, Sparse Transformer),
- global blocks that see and are seen by all (Longformer; BigBird),
- BigBird: window + global + random blocks (Zaheer et al. 2020).

The token mask of a pattern, M[h, i, j] for query position i and key position j, is

    M = layout[h, i // bs, j // bs]  and  (j <= i when causal)
        and key j is not padding  and  i, j in the same packed segment
        or  i == j  (when there is padding or packing, as in dense attention)

Positions are absolute: with a KV cache the queries are the last Tq of the Tk keys.
Trained prefixes (prefix tuning) add P keys in front that every query sees.

The layout is built once at the model's block_size and cropped to the current length, so
a query sees the same keys in a full forward pass and in a cached decoding step (BigBird's
random blocks would otherwise be redrawn whenever the number of blocks changes).

Two paths compute the same thing: :func:`masked_sparse_attention` (the readable reference:
dense attention under the T x T mask) and :func:`minift.model.sparse_efficient.
efficient_sparse_attention` (linear memory: it gathers only the key blocks each query
block may see). On CUDA with Triton the block-sparse flash kernel takes over.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minift.kernels.attention import causal_mask
from minift.kernels.layouts import global_layout, layout_to_mask, make_layout
from minift.model.config import GPTConfig


def pattern_layout(config: GPTConfig, seq_len: int | None = None) -> torch.Tensor:
    """The block layout (1 or n_head, nb, nb) of ``config``'s pattern over ``seq_len``
    tokens (default block_size; must be a multiple of sparse.block_size)."""
    seq_len = seq_len or config.block_size
    sp, causal = config.sparse, config.causal
    bs, pattern = sp.block_size, sp.pattern
    if pattern == "dense":
        return make_layout("dense", seq_len, bs, causal=causal)
    if pattern == "sliding_window":
        layout = make_layout(
            pattern, seq_len, bs, window=sp.window, dilation=sp.dilation,
            causal=causal,
        )  # fmt: skip
    elif pattern in ("strided", "fixed"):
        extra = {"n_summary": sp.summary} if pattern == "fixed" else {}
        layout = make_layout(pattern, seq_len, bs, stride=sp.stride, causal=causal, **extra)
    elif pattern == "global":
        return make_layout(pattern, seq_len, bs, n_global=sp.n_global, causal=causal)
    elif pattern == "bigbird":
        return make_layout(
            pattern, seq_len, bs, window=sp.window, n_global=sp.n_global, n_random=sp.n_random,
            seed=sp.seed, causal=causal,
            n_heads=config.n_head,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown sparse.pattern {pattern!r}")
    if sp.n_global:  # Longformer: a local pattern plus a few global blocks
        layout = layout | global_layout(seq_len, bs, sp.n_global, causal=causal)
    return layout


class SparsePattern:
    """A config's pattern with its layout built once (at block_size) and kept per device.

    Not a module and holds no parameters: switching a pretrained model to a pattern adds
    nothing to its state dict, and the same weights load into a dense or a sparse config.
    """

    def __init__(self, config: GPTConfig) -> None:
        if not config.is_sparse:
            raise ValueError("SparsePattern needs a sparse pattern, got 'dense'")
        self.config = config
        self.block_size = config.sparse.block_size
        self.causal = config.causal
        self.impl = config.sparse.impl
        self._layouts: dict[torch.device, torch.Tensor] = {}

    def layout(self, n_keys: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The layout cropped to the ceil(n_keys / sparse.block_size) blocks n_keys cover."""
        device = torch.device(device)
        if device not in self._layouts:
            self._layouts[device] = pattern_layout(self.config).to(device)
        nb = math.ceil(n_keys / self.block_size)
        full = self._layouts[device]
        if nb > full.shape[-1]:
            raise ValueError(
                f"{n_keys} keys exceed the pattern's block_size {self.config.block_size}"
            )
        return full[:, :nb, :nb]

    def __repr__(self) -> str:
        c = self.config.sparse
        return (
            f"SparsePattern({c.pattern!r}, block={c.block_size}, window={c.window}, "
            f"stride={c.stride}, global={c.n_global}, random={c.n_random}, impl={c.impl!r})"
        )


def sparse_mask(
    layout: torch.Tensor,
    block_size: int,
    tq: int,
    tk: int,
    causal: bool,
    key_padding: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    n_prefix: int = 0,
) -> torch.Tensor:
    """The token mask (B or 1, 1 or H, tq, n_prefix + tk) of the module docstring.

    layout covers at least tk keys; key_padding (B, tk) 1 = real; segment_ids (B, tq)
    with tq == tk (packing has no cache)."""
    mask = layout_to_mask(layout, block_size, tq, tk)  # (Hl, tq, tk)
    if causal:
        mask = mask & causal_mask(tq, tk, mask.device)
    mask = mask.unsqueeze(0)
    if key_padding is not None or segment_ids is not None:
        if key_padding is not None:
            mask = mask & key_padding.bool()[:, None, None, :]
        if segment_ids is not None:
            mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
        own = torch.arange(tk - tq, tk, device=mask.device)
        mask = mask | (own[:, None] == torch.arange(tk, device=mask.device)[None, :])
    if n_prefix:
        mask = torch.cat([mask.new_ones(*mask.shape[:-1], n_prefix), mask], dim=-1)
    return mask


def masked_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference: softmax(q k^T / sqrt(d), masked) v with the full (Tq, Tk) mask."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    probs = scores.masked_fill(~mask, float("-inf")).float().softmax(dim=-1).to(q.dtype)
    return F.dropout(probs, dropout) @ v, probs


def check_right_padded(key_padding: torch.Tensor | None) -> None:
    """Sparse patterns are laid out from index 0; left padding would shift the blocks under
    the real tokens (a different attention than the same text unpadded), so refuse it."""
    if key_padding is None:
        return
    real = key_padding.bool()
    if bool((real[:, 1:] & ~real[:, :-1]).any()):
        raise ValueError(
            "sparse attention patterns need right padding (real tokens first): a pad "
            "before a real token shifts the block layout; pad on the right, or use "
            "the dense pattern for left-padded batched generation"
        )


def density(config: GPTConfig, seq_len: int | None = None) -> float:
    """Fraction of the attended query-key pairs (causal pairs in a causal model) that the
    pattern keeps, over seq_len rounded up to whole blocks (default block_size)."""
    if not config.is_sparse:
        return 1.0
    bs = config.sparse.block_size
    nb = math.ceil((seq_len or config.block_size) / bs)
    layout = SparsePattern(config).layout(nb * bs).float()
    if not config.causal:
        return float(layout.mean())
    # Causal pairs per block pair: bs^2 below the diagonal, bs (bs + 1) / 2 on it.
    below = torch.ones(nb, nb).tril(-1) * bs * bs + torch.eye(nb) * bs * (bs + 1) / 2
    return float((layout * below).sum(dim=(-2, -1)).mean() / below.sum())
