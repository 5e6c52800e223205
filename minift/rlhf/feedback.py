"""Learning from a user's feedback: show two responses, record which one the user prefers.

This is how the comparison data of RLHF is collected (Christiano et al. 2017; Stiennon
et al. 2020; Ouyang et al. 2022), on the smallest scale: for a prompt the current policy
samples two responses, the user answers 1 or 2 (or s to skip, q to quit), and the
preference is appended to a JSONL file as ``{"prompt", "chosen", "rejected"}``, the format
that ``minift rlhf --method dpo --data FILE`` (or a reward model, for PPO and best-of-n)
trains on. Run, train, run again: each round of feedback moves the next policy.

The asking is minift.ask's loop, shared with `minift rate` (minift.rating): every answer is
written as soon as it is given, atomically, so quitting, Ctrl-C or a crash keeps what was
answered and never leaves a half-written line; answers come from the terminal or from a
file (checked in full before anything is sampled), which is how it is tested.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator, Sequence

import torch

from minift import ask
from minift.ask import LoopResult as FeedbackResult
from minift.rlhf.preference import append_preferences, encode_prompt, load_preferences
from minift.rlhf.rollout import sample_responses
from minift.tokenizer import eot_id, pad_id

ANSWERS = {"1": "first", "2": "second", **ask.CONTROL}
QUESTION = "Which response is better? [1/2, s = skip, q = quit] "
HINT = "write 1 or 2 (the preferred response), s (skip) or q (quit)"

__all__ = ["ANSWERS", "FeedbackResult", "collect_feedback", "read_answers", "terminal_answers"]


def read_answers(path: str | os.PathLike) -> list[str]:
    """The answers in a file, one per line (1, 2, s or q; blank lines ignored)."""
    return ask.read_answers(path, ANSWERS, HINT)


def terminal_answers(ask_fn: Callable[[str], str] | None = None) -> Iterator[str]:
    """Answers typed in the terminal; asks again after an invalid one; ends on EOF."""
    return ask.terminal_answers(QUESTION, ANSWERS, ask_fn)


def _pairs(policy, enc, prompts, rounds, max_new_tokens, temperature, seed):
    """(prompt, first, second) for up to ``rounds`` sampled pairs, made one at a time as
    the loop asks for them; two identical responses are passed over (nothing to choose)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(rounds):
        prompt = prompts[int(torch.randint(0, len(prompts), (1,), generator=g))]
        ids = encode_prompt(enc, prompt)
        with torch.no_grad():
            rollout = sample_responses(
                policy, [ids, ids], max_new_tokens, eot_id(enc), pad_id(enc), temperature, g
            )
        first, second = rollout.texts(enc)
        if first != second:
            yield prompt, first, second


def _preference(item: tuple[str, str, str], answer: str) -> dict:
    prompt, first, second = item
    chosen, rejected = (first, second) if answer == "1" else (second, first)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def collect_feedback(
    policy,
    enc,
    prompts: Sequence[str],
    out_path: str | os.PathLike,
    rounds: int = 10,
    answers: Sequence[str] | Iterator[str] | None = None,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    seed: int = 0,
    show: Callable[[str], None] = print,
) -> FeedbackResult:
    """Up to ``rounds`` comparisons; answers from ``answers`` (a list or an iterator) or,
    when None, from the terminal. Stops early on q, Ctrl-C, or when the answers run out
    (the loop of minift.ask). Two identical responses are not shown."""
    if not prompts:
        raise ValueError("no prompts to ask about")
    out_path = pathlib.Path(out_path)
    if out_path.exists() and out_path.read_text(encoding="utf-8").strip():
        load_preferences(out_path)  # a broken file is reported before any question
    result = ask.ask_loop(
        _pairs(policy, enc, prompts, rounds, max_new_tokens, temperature, seed),
        render=lambda it: f"\nPrompt: {it[0]}\n  [1] {it[0]}{it[1]}\n  [2] {it[0]}{it[2]}",
        answers=answers if answers is not None else terminal_answers(),
        record=_preference,
        out_path=out_path,
        show=show,
        append=append_preferences,
    )
    show(
        "\n" + ask.summary(result, "preference(s)")
        + f"; train on them with `minift rlhf --method dpo --data {out_path}`"
    )  # fmt: skip
    return result
