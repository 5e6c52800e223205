"""From what a caller passes (padding mask, packed segments, a KV cache) to the
AttentionInputs every layer of one forward pass shares: the padding of every key, each
query's position, and the mask (or, for a sparse pattern, what it builds its masks from).

Positions count real tokens: a left-padded sequence gets the positions it would have
alone, and a cached decoding step continues where the cache stopped.
"""

from __future__ import annotations

import torch

from minift.model.attention import AttentionInputs, build_attention_mask
from minift.model.config import GPTConfig
from minift.model.kv_cache import KVCache
from minift.model.sparse import check_right_padded


def key_padding_mask(
    attention_mask: torch.Tensor | None, cache: KVCache | None, B: int, T: int, device
) -> torch.Tensor | None:
    """The padding mask (B, past + T) over all keys (cached ones first), or None when
    nothing is padded. attention_mask: (B, T) or (B, past + T), 1 = real token."""
    past = cache.length if cache is not None else 0
    prev = cache.key_padding if cache is not None else None
    if attention_mask is None:
        if prev is None:
            return None
        attention_mask = torch.ones(B, T, dtype=prev.dtype, device=device)
    if attention_mask.shape == (B, past + T):
        return attention_mask
    if attention_mask.shape != (B, T):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({B}, {T})"
            + (f" or ({B}, {past + T}) with {past} cached positions" if past else "")
        )
    if past == 0:
        return attention_mask
    if prev is None:
        prev = torch.ones(B, past, dtype=attention_mask.dtype, device=device)
    return torch.cat([prev.to(attention_mask.dtype), attention_mask], dim=1)


def default_positions(B, T, past, key_padding, cache, device) -> torch.Tensor:
    """Positions 0.. (after the cache) without padding; with padding, the count of real
    tokens before each position, so left padding does not shift them."""
    if key_padding is None:
        if cache is not None and cache.next_position is not None:
            return cache.next_position[:, None] + torch.arange(T, device=device)[None]
        return (past + torch.arange(T, device=device)).unsqueeze(0).expand(B, T)
    pos = key_padding.long().cumsum(dim=1) - 1
    return pos[:, -T:].clamp(min=0)


def check_token_ids(idx: torch.Tensor, vocab_size: int) -> None:
    """Token ids must be integers in [0, vocab_size): an id from another tokenizer would
    otherwise fail deep inside the embedding (an IndexError on the CPU, a device-side
    assert on a GPU)."""
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"token ids must be integers, got a {idx.dtype} tensor")
    if idx.numel() == 0:
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise ValueError(
            f"token id {bad} is outside the model's vocabulary of {vocab_size} ids: was the "
            "text encoded with another tokenizer than the model's?"
        )


def attention_inputs(
    config: GPTConfig,
    idx: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: KVCache | None = None,
    segment_ids: torch.Tensor | None = None,
) -> AttentionInputs:
    """The AttentionInputs of a forward pass over idx (B, T). A dense model gets its mask
    (or None with SDPA's is_causal shortcut); a sparse pattern builds its masks per block
    from key_padding and segment_ids, so no (T, T) mask is made here."""
    (B, T), device = idx.shape, idx.device
    past = cache.length if cache is not None else 0
    if past + T > config.block_size:
        raise ValueError(f"sequence of {past + T} tokens exceeds block_size {config.block_size}")
    key_padding = key_padding_mask(attention_mask, cache, B, T, device)
    if position_ids is None:
        position_ids = default_positions(B, T, past, key_padding, cache, device)
    if segment_ids is not None and past:
        raise ValueError("segment_ids (packed sequences) cannot be combined with a KV cache")
    if config.is_sparse:
        check_right_padded(key_padding)
        mask, causal_fast = None, False
    else:
        mask, causal_fast = build_attention_mask(
            config.causal, T, past, key_padding, device, segment_ids
        )
    return AttentionInputs(
        positions=position_ids, mask=mask, causal_no_mask=causal_fast,
        key_padding=key_padding, segment_ids=segment_ids if config.is_sparse else None,
    )  # fmt: skip
