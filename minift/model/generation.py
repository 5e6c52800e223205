"""Autoregressive generation with a KV cache, and the sampling rules.

Each step feeds only the newest token: its query attends to the keys and values cached
from every earlier step, so a step costs O(T) instead of re-running the O(T^2) prefix.
The tokens are the same as re-running the whole sequence each step (tested).
"""

from __future__ import annotations

import math

import torch


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Set to -inf every logit outside the top-k, then outside the nucleus of top-p.

    top-k (Fan et al. 2018) keeps the k largest; top-p (Holtzman et al. 2020) keeps the
    smallest set of tokens whose probabilities sum to at least p. top_k of None or 0 and
    top_p of None or 1.0 keep everything.
    """
    if top_k:
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Refuse settings that would sample nonsense or fail inside torch, naming the valid range."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 or None: no top-k filter), got {top_k}")
    if top_p is not None and not (0 < top_p <= 1):  # also refuses NaN
        raise ValueError(f"top_p must be in (0, 1] (1 or None: no nucleus filter), got {top_p}")


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from (B, V) logits; temperature 0 means greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend idx (B, T) by up to max_new_tokens tokens and return (B, T + new).

    attention_mask (B, T) marks left padding (0) in a batch of prompts of different
    lengths. A sequence that emits eos_token_id is finished: its later tokens are
    pad_token_id (eos if unset), and generation stops when every sequence is finished.
    Past block_size the context is cropped to the last block_size tokens (learned
    positions allow no more), which the cache cannot do, so those steps run uncached.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(
            f"the prompt must be (batch, time) with at least one token, got shape "
            f"{tuple(idx.shape)}; start an empty prompt with the end-of-text id"
        )
    # Soft-prompt tokens (prompt tuning) take cache and block room in front of the text.
    block = model.text_room()
    B = idx.size(0)
    if attention_mask is None:
        attention_mask = torch.ones_like(idx)
    fill = pad_token_id if pad_token_id is not None else eos_token_id
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    cache = None
    if use_cache and idx.size(1) + max_new_tokens <= block:
        cache = model.new_cache(B, model.config.block_size - block + idx.size(1) + max_new_tokens)
    padded = bool((attention_mask == 0).any())
    prompt_mask = attention_mask[:, -block:] if padded else None
    out = model(idx[:, -block:], attention_mask=prompt_mask, cache=cache)
    for step in range(max_new_tokens):
        nxt = sample_next(out.logits[:, -1, :], temperature, top_k, top_p, generator)
        if eos_token_id is not None:
            nxt = torch.where(finished[:, None], torch.full_like(nxt, fill), nxt)
            finished |= nxt.squeeze(1) == eos_token_id
        idx = torch.cat([idx, nxt], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(nxt)], dim=1)
        if (eos_token_id is not None and bool(finished.all())) or step == max_new_tokens - 1:
            break
        if cache is not None:
            out = model(nxt, cache=cache)  # the cache remembers the prompt's padding
        else:
            mask = attention_mask[:, -block:] if padded else None
            out = model(idx[:, -block:], attention_mask=mask)
    return idx
