"""What every text metric checks first: predictions are a list of strings, references one
string or a list of strings per example, the lengths match; and the n-gram counts BLEU, chrF++
and ROUGE share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def as_texts(values, name: str) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of strings (one per example), got one string")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: a metric needs at least one example")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{name}[{i}] is {type(v).__name__}, not a string")
    return values


def as_reference_sets(references, n: int) -> list[list[str]]:
    """One list of reference strings per example (a bare string is a list of one)."""
    if isinstance(references, str):
        raise ValueError("references must be a list (one per example), got one string")
    refs = list(references)
    if len(refs) != n:
        raise ValueError(
            f"predictions and references have different lengths ({n} and {len(refs)}): "
            "each prediction must pair with its reference(s)"
        )
    out = []
    for i, r in enumerate(refs):
        if not isinstance(r, (str, list, tuple)):
            raise ValueError(f"references[{i}] must be a string or a list of strings")
        group = [r] if isinstance(r, str) else list(r)
        if not group:
            raise ValueError(f"references[{i}] is an empty list: give at least one reference")
        if not all(isinstance(x, str) for x in group):
            raise ValueError(f"references[{i}] must be a string or a list of strings")
        out.append(group)
    return out


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
