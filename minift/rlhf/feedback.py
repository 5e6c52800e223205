"""Learning from a user's feedback: show two responses, record which one the user prefers.

This is how the comparison data of RLHF is collected (Christiano et al. 2017; Stiennon
et al. 2020; Ouyang et al. 2022), on the smallest scale: for a prompt the current policy
samples two responses, the user answers 1 or 2 (or s to skip, q to quit), and the
preference is appended to a JSONL file as ``{"prompt", "chosen", "rejected"}``, the format
that ``minift rlhf --method dpo --data FILE`` (or a reward model, for PPO and best-of-n)
trains on. Run, train, run again: each round of feedback moves the next policy.

Every answer is written as soon as it is given (atomically, the whole file rewritten
through a temporary file), so quitting keeps what was answered and a crash never leaves a
half-written line. The same loop reads its answers from a file instead of the terminal,
which is how it is tested; that file is checked in full before anything is sampled.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from minift.rlhf.preference import append_preferences, encode_prompt, load_preferences
from minift.rlhf.rollout import sample_responses
from minift.tokenizer import eot_id, pad_id

ANSWERS = {"1": "first", "2": "second", "s": "skip", "q": "quit"}


def read_answers(path: str | os.PathLike) -> list[str]:
    """The answers in a file, one per line (1, 2, s or q; blank lines ignored)."""
    answers = []
    for lineno, line in enumerate(
        pathlib.Path(path).read_text(encoding="utf-8").splitlines(), start=1
    ):
        a = line.strip().lower()
        if not a:
            continue
        if a not in ANSWERS:
            raise ValueError(
                f"{path} line {lineno}: {line.strip()!r} is not an answer; "
                "write 1 or 2 (the preferred response), s (skip) or q (quit)"
            )
        answers.append(a)
    return answers


def terminal_answers(ask: Callable[[str], str] = input) -> Iterator[str]:
    """Answers typed in the terminal; asks again after an invalid one; ends on EOF."""
    while True:
        try:
            a = ask("Which response is better? [1/2, s = skip, q = quit] ").strip().lower()
        except EOFError:
            return
        if a in ANSWERS:
            yield a
        else:
            print(f"  {a!r} is not an answer: type 1, 2, s or q")


@dataclass
class FeedbackResult:
    path: pathlib.Path
    recorded: list[dict] = field(default_factory=list)
    skipped: int = 0
    shown: int = 0


@torch.no_grad()
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
    when None, from the terminal. Stops early on q or when the answers run out. Two
    identical responses are not shown (there is nothing to choose)."""
    if not prompts:
        raise ValueError("no prompts to ask about")
    out_path = pathlib.Path(out_path)
    if out_path.exists() and out_path.read_text(encoding="utf-8").strip():
        load_preferences(out_path)  # a broken file is reported before any question
    it = iter(answers) if answers is not None else terminal_answers()
    g = torch.Generator().manual_seed(seed)
    result = FeedbackResult(out_path)
    for _ in range(rounds):
        prompt = prompts[int(torch.randint(0, len(prompts), (1,), generator=g))]
        ids = encode_prompt(enc, prompt)
        rollout = sample_responses(
            policy, [ids, ids], max_new_tokens, eot_id(enc), pad_id(enc), temperature, g
        )
        first, second = rollout.texts(enc)
        if first == second:
            continue
        result.shown += 1
        show(f"\nPrompt: {prompt}\n  [1] {prompt}{first}\n  [2] {prompt}{second}")
        answer = next(it, "q")
        if answer == "q":
            break
        if answer == "s":
            result.skipped += 1
            continue
        chosen, rejected = (first, second) if answer == "1" else (second, first)
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        append_preferences(out_path, [row])
        result.recorded.append(row)
    show(
        f"\nrecorded {len(result.recorded)} preference(s) in {out_path}"
        f" ({result.skipped} skipped); train on them with "
        f"`minift rlhf --method dpo --data {out_path}`"
    )
    return result
