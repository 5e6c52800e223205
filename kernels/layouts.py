"""Block layouts for sparse attention: which key blocks each query block may see.

A layout is a boolean tensor (n_heads, n_blocks, n_blocks): ``layout[h, i, j]`` is True
when, in head h, the queries of block i may attend to the keys of block j (block i
covers positions i*block_size .. (i+1)*block_size - 1). Every pattern parameter below is
counted in blocks, as in BigBird and the block-sparse kernels of DeepSpeed and Triton, so
a layout and its token mask (:func:`layout_to_mask`) describe exactly the same attention.

``causal=True`` keeps only blocks on or below the diagonal (key block <= query block);
the attention kernels then apply the token-level causal rule inside diagonal blocks.

Patterns (d = i - j, the distance from query block i back to key block j):

- sliding window, dilation r (Beltagy et al. 2020, "Longformer"): d = t r for
  t = 0 .. window-1 (and -window+1 .. -1 too when not causal).
- strided (Child et al. 2019, "Generating Long Sequences with Sparse Transformers"):
  the last ``stride`` blocks (|d| < stride), plus every block a multiple of ``stride``
  away (d mod stride = 0): the union of the paper's two strided heads.
- fixed (Child et al. 2019): blocks of the same chunk of ``stride`` blocks
  (i // stride == j // stride), plus the last ``n_summary`` blocks of every chunk
  (j mod stride >= stride - n_summary), which act as the chunk summaries.
- global (Beltagy et al. 2020; Zaheer et al. 2020): the first ``n_global`` blocks see,
  and are seen by, all blocks.
- BigBird (Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences"): a sliding
  window, global blocks, and ``n_random`` extra key blocks per query block drawn
  uniformly (independently per head, from a seeded generator) among those not yet seen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def num_blocks(seq_len: int, block_size: int) -> int:
    """seq_len // block_size, with a clear error when the blocks do not tile the sequence."""
    if block_size < 1 or seq_len < 1:
        raise ValueError(f"seq_len ({seq_len}) and block_size ({block_size}) must be positive")
    if seq_len % block_size:
        padded = -(-seq_len // block_size) * block_size
        raise ValueError(
            f"block_size {block_size} does not divide seq_len {seq_len}: pad the sequence "
            f"to {padded} or pick a block size that divides it"
        )
    return seq_len // block_size


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1 block, got {value}")


def _distance(n: int) -> torch.Tensor:
    """d[i, j] = i - j: how far key block j lies behind query block i."""
    idx = torch.arange(n)
    return idx[:, None] - idx[None, :]


def _finish(layout: torch.Tensor, causal: bool, n_heads: int) -> torch.Tensor:
    _positive(n_heads=n_heads)
    if causal:
        layout = layout & (_distance(layout.shape[-1]) >= 0)
    if layout.dim() == 2:
        layout = layout.expand(n_heads, *layout.shape)
    return layout.contiguous()


def dense_layout(
    seq_len: int, block_size: int, causal: bool = False, n_heads: int = 1
) -> torch.Tensor:
    """Every block sees every block (the layout of ordinary attention)."""
    n = num_blocks(seq_len, block_size)
    return _finish(torch.ones(n, n, dtype=torch.bool), causal, n_heads)


def sliding_window_layout(
    seq_len: int,
    block_size: int,
    window: int,
    dilation: int = 1,
    causal: bool = False,
    n_heads: int = 1,
) -> torch.Tensor:
    """Each query block sees ``window`` blocks on each side, own block included, every
    ``dilation``-th one: key blocks i - t*dilation (and i + t*dilation when not causal)."""
    _positive(window=window, dilation=dilation)
    d = _distance(num_blocks(seq_len, block_size))
    layout = (d.abs() < window * dilation) & (d % dilation == 0)
    return _finish(layout, causal, n_heads)


def strided_layout(
    seq_len: int, block_size: int, stride: int, causal: bool = True, n_heads: int = 1
) -> torch.Tensor:
    """Sparse Transformer strided pattern: |i - j| < stride, or i - j a multiple of stride."""
    _positive(stride=stride)
    d = _distance(num_blocks(seq_len, block_size))
    return _finish((d.abs() < stride) | (d % stride == 0), causal, n_heads)


def fixed_layout(
    seq_len: int,
    block_size: int,
    stride: int,
    n_summary: int = 1,
    causal: bool = True,
    n_heads: int = 1,
) -> torch.Tensor:
    """Sparse Transformer fixed pattern: same chunk of ``stride`` blocks, or a summary block
    (one of the last ``n_summary`` blocks of any chunk)."""
    _positive(stride=stride, n_summary=n_summary)
    if n_summary > stride:
        raise ValueError(f"n_summary ({n_summary}) cannot exceed stride ({stride})")
    idx = torch.arange(num_blocks(seq_len, block_size))
    same_chunk = (idx[:, None] // stride) == (idx[None, :] // stride)
    summary = (idx % stride >= stride - n_summary)[None, :]
    return _finish(same_chunk | summary, causal, n_heads)


def global_layout(
    seq_len: int, block_size: int, n_global: int, causal: bool = False, n_heads: int = 1
) -> torch.Tensor:
    """The first ``n_global`` blocks see all blocks and are seen by all blocks.

    A building block: on its own, any other block sees only the global blocks, not even
    itself. Combine it with a window (``make_layout("longformer", ...)``, BigBird) for a
    pattern a model can use."""
    n = num_blocks(seq_len, block_size)
    _positive(n_global=n_global)
    if n_global > n:
        raise ValueError(f"n_global ({n_global}) exceeds the number of blocks ({n})")
    idx = torch.arange(n)
    return _finish((idx[:, None] < n_global) | (idx[None, :] < n_global), causal, n_heads)


def bigbird_layout(
    seq_len: int,
    block_size: int,
    window: int = 2,
    n_global: int = 1,
    n_random: int = 1,
    seed: int = 0,
    causal: bool = False,
    n_heads: int = 1,
) -> torch.Tensor:
    """BigBird: sliding window + global blocks + ``n_random`` random key blocks per query
    block (fewer where fewer unseen blocks remain), drawn per head from ``seed``.

    window=2 is the paper's three-block window (own block and one each side)."""
    if n_random < 0 or n_global < 0:
        raise ValueError(f"n_random ({n_random}) and n_global ({n_global}) must be >= 0")
    base = sliding_window_layout(seq_len, block_size, window, causal=causal, n_heads=n_heads)
    if n_global:
        base = base | global_layout(seq_len, block_size, n_global, causal=causal, n_heads=n_heads)
    n = base.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(n_heads, n, n, generator=generator)
    allowed = ~base & (_distance(n) >= 0) if causal else ~base
    scores = scores.masked_fill(~allowed, -1.0)  # seen or forbidden blocks never win
    top = scores.topk(min(n_random, n), dim=-1)
    random = torch.zeros_like(base).scatter_(-1, top.indices, top.values >= 0)
    return (base | random).contiguous()


PATTERNS: dict[str, Callable[..., torch.Tensor]] = {
    "dense": dense_layout,
    "sliding_window": sliding_window_layout,
    "strided": strided_layout,
    "fixed": fixed_layout,
    "global": global_layout,
    "bigbird": bigbird_layout,
}


def make_layout(pattern: str, seq_len: int, block_size: int, **options) -> torch.Tensor:
    """Build a layout by name (for configs): ``make_layout("bigbird", 4096, 64, n_random=3)``."""
    if pattern not in PATTERNS:
        raise ValueError(
            f"unknown sparse attention pattern {pattern!r}; known: {', '.join(PATTERNS)}"
        )
    return PATTERNS[pattern](seq_len, block_size, **options)


def layout_to_mask(
    layout: torch.Tensor,
    block_size: int,
    tq: int | None = None,
    tk: int | None = None,
) -> torch.Tensor:
    """The token mask (n_heads, Tq, Tk) of a block layout: True where query may see key.

    Keys are positions 0 .. Tk-1 and queries the last Tq of them (Tk - Tq + i), as in
    :func:`minift.kernels.attention`; defaults: Tk = Tq = the layout's full length.
    """
    if layout.dim() == 2:
        layout = layout.unsqueeze(0)
    if layout.dim() != 3 or layout.dtype != torch.bool:
        raise ValueError(
            f"layout must be a bool (n_heads, n_blocks, n_blocks) tensor, got {layout.dtype} {tuple(layout.shape)}"
        )
    full = layout.shape[-1] * block_size
    tk = full if tk is None else tk
    tq = tk if tq is None else tq
    if not 0 < tq <= tk <= full or layout.shape[-2] * block_size < tk:
        raise ValueError(
            f"layout of {tuple(layout.shape)} blocks of {block_size} cannot cover Tq={tq}, Tk={tk}"
        )
    mask = layout.repeat_interleave(block_size, dim=-2).repeat_interleave(block_size, dim=-1)
    return mask[:, tk - tq : tk, :tk]
