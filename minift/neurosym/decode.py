"""Constrained decoding: at every step the logits of tokens the automaton forbids are set
to -inf before sampling (Willard and Louf 2023; the token index is :mod:`.index`).

Masking changes nothing else: among the allowed tokens the model's own probabilities
decide, renormalised. Every finished output matches the expression, because the index
only allows tokens from which a match stays reachable within the budget. The price is
the index lookup and the masking at each step, measured here per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from minift.errors import UserError
from minift.model.generation import sample_next
from minift.neurosym.index import TokenIndex
from minift.tokenizer import eot_id


@dataclass
class Generated:
    text: str  # the continuation, without the prompt and the end token
    tokens: list[int]
    state: int | None  # the index state at the end (None: unconstrained)
    seconds: float  # the whole loop
    mask_seconds: float  # of which building and applying masks

    @property
    def seconds_per_token(self) -> float:
        return self.seconds / max(1, len(self.tokens))


@torch.no_grad()
def generate_constrained(
    model,
    enc,
    prompt: str,
    index: TokenIndex | None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Generated:
    """Sample a continuation of ``prompt`` that matches ``index``'s expression (or any
    continuation when ``index`` is None, the baseline). Stops at the end token or the
    budget; with an index the text then always matches."""
    eos = eot_id(enc)
    ids = enc.encode_ordinary(prompt) or [eos]
    block = model.config.block_size
    if len(ids) + max_new_tokens > block:
        raise UserError(f"prompt of {len(ids)} tokens + {max_new_tokens} new ones exceeds block_size {block}")  # fmt: skip
    state = 0 if index is not None else None
    if index is not None and index.distance[0] > max_new_tokens:
        raise UserError(f"a match of {index.dfa.pattern!r} needs at least {index.distance[0]} tokens; max_new_tokens is {max_new_tokens}")  # fmt: skip
    t0 = time.perf_counter()
    masking = 0.0
    cache = model.new_cache(1, len(ids) + max_new_tokens)
    logits = model(torch.tensor([ids]), cache=cache).logits[:, -1, :]
    out: list[int] = []
    for step in range(max_new_tokens):
        if index is not None:
            tm = time.perf_counter()
            allowed = index.mask(state, max_new_tokens - step, size=logits.shape[-1])
            logits = logits.masked_fill(~allowed, float("-inf"))
            masking += time.perf_counter() - tm
        token = int(sample_next(logits, temperature, generator=generator))
        if token == eos:
            break
        out.append(token)
        if index is not None:
            state = index.advance(state, token)
        if step < max_new_tokens - 1:
            logits = model(torch.tensor([[token]]), cache=cache).logits[:, -1, :]
    seconds = time.perf_counter() - t0
    return Generated(enc.decode(out), out, state, seconds, masking)
