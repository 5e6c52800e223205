"""Contextual adaptation without training, and the per-user score every method shares.

A model can be told who it serves instead of being trained for them: the user's profile
("Keep it short.") or a few of the responses they preferred, written in front of the
prompt (in-context learning, Brown et al. 2020). Nothing trains; the context costs
prompt tokens on every request.

Every personalization method here (context, a soft prompt, a LoRA adapter, a shared
model) is scored the same way, on a user's held-out preference pairs, by the implicit
reward of DPO (Rafailov et al. 2023) against the frozen base without any context:

    r(x, y) = log pi(y | c, x) - log pi_ref(y | x),    correct iff r(x, y_c) > r(x, y_r),

where c is the method's context (empty for trained methods). It asks "did the method
move probability toward what this user prefers", which is what personalization should
do, and is 1/2 for the base itself (every pair a tie; ties count 1/2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minift.errors import UserError
from minift.personal.users import User
from minift.rlhf.dpo import pair_logprobs
from minift.rlhf.preference import encode_pairs


def with_context(rows: Sequence[dict], context: str) -> list[dict]:
    """The rows with ``context`` written in front of each prompt."""
    return [{**r, "prompt": context + r["prompt"]} for r in rows]


def profile_context(user: User) -> str:
    """The user's own description of themselves, as the first line of the prompt."""
    return user.profile + "\n"


def examples_context(pairs: Sequence[dict], enc, max_tokens: int) -> str:
    """The user's preferred responses (prompt + chosen, one per line), in order, skipping
    those that no longer fit in ``max_tokens``; at least one must fit."""
    lines, used = [], 0
    for p in pairs:
        line = p["prompt"] + p["chosen"] + "\n"
        n = len(enc.encode_ordinary(line))
        if used + n > max_tokens:
            continue
        lines.append(line)
        used += n
    if not lines:
        raise UserError(f"no example of the user fits in {max_tokens} context tokens")
    return "".join(lines)


def pair_tokens(pair: dict, enc) -> int:
    """Tokens of the pair's prompt and its longer response, with the end token."""
    response = max(len(enc.encode_ordinary(pair[k])) for k in ("chosen", "rejected"))
    return len(enc.encode_ordinary(pair["prompt"])) + response + 1


def fitting(pairs: Sequence[dict], enc, max_tokens: int) -> list[dict]:
    """The pairs of at most ``max_tokens`` (room left in the block for a context)."""
    return [p for p in pairs if pair_tokens(p, enc) <= max_tokens]


def context_budget(pairs: Sequence[dict], enc, block_size: int) -> int:
    """Tokens left for a context in front of the longest of ``pairs``."""
    return block_size - max(pair_tokens(p, enc) for p in pairs)


def preference_correct(
    model, enc, pairs: Sequence[dict], reference, context: str = ""
) -> np.ndarray:
    """Per pair: 1 if the implicit reward ranks the user's choice first, 0.5 on a tie, else 0."""
    if not pairs:
        raise UserError("no preference pairs to score")
    block = reference.config.block_size
    ref_c, ref_r = pair_logprobs(reference, encode_pairs(pairs, enc, block, "held-out"), enc)
    shown = with_context(pairs, context) if context else list(pairs)
    c, r = pair_logprobs(model, encode_pairs(shown, enc, block, "held-out with context"), enc)
    margin = ((c - ref_c) - (r - ref_r)).double().numpy()
    return np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
