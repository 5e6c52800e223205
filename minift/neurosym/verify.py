"""A symbolic verifier in the loop: sample n candidates, keep the first one a checker
accepts (rejection sampling against an exact check; the "generate then verify" of Cobbe
et al. 2021, with a program instead of a learned verifier).

A checker is any function text -> bool. Here: the text is a Python expression
(``ast.parse`` in eval mode), or a call ``name(args)`` of a valid identifier. The model
alone is correct with probability p per sample; with n independent samples and an exact
checker, 1 - (1 - p)^n. The cost is up to n generations.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def is_python_expression(text: str) -> bool:
    try:
        ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    return bool(text.strip())


def is_python_call(text: str) -> bool:
    """``name(...)`` with a plain identifier as the function and valid arguments."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return False
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name)


@dataclass
class Verified:
    accepted: str | None  # the first candidate the checker accepted (None: none did)
    tried: int
    candidates: list[str]


def first_accepted(candidates: Sequence[str], check: Callable[[str], bool]) -> Verified:
    """Go through candidates in order, stop at the first one ``check`` accepts."""
    for i, text in enumerate(candidates, start=1):
        if check(text):
            return Verified(text, i, list(candidates[:i]))
    return Verified(None, len(candidates), list(candidates))
