"""Neuro-symbolic jobs: arithmetic with and without a calculator tool, and a verifier in
the loop (minift.neurosym).

The task: "What is 37*4-12?" with exact answers. One model is fine-tuned to answer
directly ("... 136"), another on traces that call the tool ("... <<37*4-12>> 136"); the
tool model only has to copy the expression, which language models do well, and the
calculator does the part they do badly.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Sequence

import numpy as np
import torch

from minift.model import GPT
from minift.neurosym.tools import CLOSE, OPEN, calculate, generate_with_tool
from minift.neurosym.verify import first_accepted
from minift.recipes.rlhf_stages import SFTConfig, sft, sft_train_config

OPS = "+-*"


def arithmetic_questions(n: int, seed: int, exclude: Sequence[str] = ()) -> list[tuple[str, int]]:
    """``n`` distinct (expression, value) pairs: two or three numbers below 100 joined by
    + - *, none of ``exclude`` (so held-out questions are new)."""
    rng = random.Random(seed)
    seen, out = set(exclude), []
    while len(out) < n:
        terms = [str(rng.randint(0, 99)) for _ in range(rng.choice((2, 3)))]
        expr = terms[0] + "".join(rng.choice(OPS) + t for t in terms[1:])
        if expr not in seen:
            seen.add(expr)
            out.append((expr, int(calculate(expr))))
    return out


def prompt_of(expr: str) -> str:
    return f"What is {expr}?"


def trace_rows(questions: Sequence[tuple[str, int]], tool: bool) -> list[dict]:
    """SFT rows: the answer alone, or the call then the answer the tool gives. The call
    repeats the space before the expression, so its tokens are the prompt's own (" 1", "2")
    and the model learns to copy them."""
    if tool:
        return [
            {"prompt": prompt_of(e), "response": f" {OPEN} {e}{CLOSE} {v}"} for e, v in questions
        ]
    return [{"prompt": prompt_of(e), "response": f" {v}"} for e, v in questions]


def train_arithmetic(base: GPT, enc, questions, tool: bool, steps: int, seed: int = 0) -> GPT:
    config = SFTConfig(
        batch_size=32, max_len=32, train=sft_train_config(steps=steps, lr=3e-3, seed=seed)
    )
    return sft(base, enc, trace_rows(questions, tool), config)


@torch.no_grad()
def direct_correct(model: GPT, enc, questions) -> np.ndarray:
    """1 where the greedy answer's first number equals the value."""
    out = []
    for expr, value in questions:
        run = generate_with_tool(model, enc, prompt_of(expr), 8, 0.0)  # no call expected
        words = run.text.split()
        out.append(float(bool(words) and words[0].lstrip("-").isdigit() and int(words[0]) == value))
    return np.array(out)


def tool_correct(model: GPT, enc, questions) -> tuple[np.ndarray, list]:
    """(1 where the tool's result equals the value, the calls made)."""
    out, calls = [], []
    for expr, value in questions:
        run = generate_with_tool(model, enc, prompt_of(expr), 24, 0.0)
        calls.extend(run.calls)
        out.append(float(run.answer is not None and run.answer == str(value)))
    return np.array(out), calls


def same_expression(a: str, b: str) -> bool:
    """The exact check a verifier can run at inference: both parse to the same tree."""
    try:
        return ast.dump(ast.parse(a.strip(), mode="eval")) == ast.dump(
            ast.parse(b.strip(), mode="eval")
        )
    except SyntaxError:
        return False


def verified_correct(model: GPT, enc, questions, n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(first sample right, first *verified* sample of n right): samples a tool call n times
    at ``temperature`` and keeps the first whose expression is the question's."""
    g = torch.Generator().manual_seed(seed)
    single, verified = [], []
    for expr, value in questions:
        runs = [
            generate_with_tool(model, enc, prompt_of(expr), 24, temperature, g) for _ in range(n)
        ]
        single.append(float(runs[0].answer == str(value)))
        calls = [r.calls[0].expression if r.calls else "" for r in runs]
        found = first_accepted(calls, lambda c, e=expr: same_expression(c, e))
        verified.append(
            float(found.accepted is not None and runs[found.tried - 1].answer == str(value))
        )
    return np.array(single), np.array(verified)
