"""A user's protected-attribute file, and the swap rule of a counterfactual test.

The file is JSONL, one labelled text per line with the group of the person it concerns:

    {"text": "She asked for a refund.", "label": "approve", "gender": "f"}

``group_field`` names the field that holds the protected attribute ("group" unless told).
Every row needs it, with a string or integer value, and the file needs two groups or
more: a fairness measure compares groups, so with one it has nothing to compare. Each
row comes back with that value as a string in ``"group"``.

A counterfactual test (Huang et al. 2020; Garg et al. 2019) rewrites each text with the
attribute swapped and looks whether the prediction moves. It needs a rule that says how
the attribute is written: ``"gender"`` for the word pairs of GENDER_PAIRS (he/she,
his/her, ...), or the user's own pairs ``"WORD:WORD,WORD:WORD"``. Without one no test is
run, and the report says so: guessing the rule would swap words that do not express the
attribute and call the result a measurement.
"""

from __future__ import annotations

import os
from collections import Counter

from minift.data.jsonl import read_jsonl
from minift.errors import UserError
from minift.fairness.counterfactual import GENDER_PAIRS

SWAP_RULES = {"gender": GENDER_PAIRS}


def load_group_rows(path: str | os.PathLike, group_field: str = "group") -> list[dict]:
    """The rows of a protected-attribute file, each with its group in ``"group"``; a
    UserError naming the file (and the row) for an empty file, bad JSON, a row without
    text, label or group, a group that is not a string or an integer, or one group only."""
    if not group_field:
        raise UserError("--group-field is empty: name the field that holds the protected attribute")  # fmt: skip
    try:
        rows = read_jsonl(path, ("text", "label"))
    except ValueError as err:
        raise UserError(str(err)) from None
    out = []
    for i, row in enumerate(rows, start=1):
        if group_field not in row:
            raise UserError(
                f"{path}: row {i} has no field {group_field!r}, the protected attribute (its "
                f"fields: {', '.join(sorted(row))}); name the attribute's field with --group-field"
            )
        group = row[group_field]
        if isinstance(group, bool) or not isinstance(group, (str, int)) or group == "":
            raise UserError(
                f"{path}: row {i}: the group in {group_field!r} must be a non-empty string or "
                f"an integer, got {group!r}"
            )
        out.append({**row, "group": str(group)})
    groups = Counter(r["group"] for r in out)
    if len(groups) < 2:
        (only,) = groups
        raise UserError(
            f"{path}: all {len(out)} rows are in group {only!r} (field {group_field!r}); "
            "fairness compares two groups or more"
        )
    return out


def swap_rule(spec: str | None) -> tuple[tuple[str, str], ...] | None:
    """``"gender"`` or ``"WORD:WORD,WORD:WORD"`` as word pairs; None for no rule."""
    if spec is None or not spec.strip():
        return None
    if spec.strip() in SWAP_RULES:
        return SWAP_RULES[spec.strip()]
    pairs = []
    for item in spec.split(","):
        words = [w.strip() for w in item.split(":")]
        if len(words) != 2 or not all(w.isalpha() for w in words) or words[0].lower() == words[1].lower():  # fmt: skip
            raise UserError(
                f"--swap {spec!r}: {item!r} is not a pair of two different words WORD:WORD; "
                f"give {' or '.join(SWAP_RULES)} or pairs like he:she,his:her"
            )
        pairs.append((words[0], words[1]))
    return tuple(pairs)


__all__ = ["SWAP_RULES", "load_group_rows", "swap_rule"]
