"""Ratings files: one JSONL row per rating a person (or a simulated rater) gave.

A row records who rated, what was shown and the answer::

    {"rater": "ana", "item": "3f2a9c01d7", "prompt": "Return", "outputs": [" the file path."], "score": 4}
    {"rater": "ana", "item": "b71e0c55aa", "prompt": "Open", "outputs": [" a", " b"], "preferred": 2}

- ``outputs`` holds what the rater saw: one output (rated on a scale, ``score``) or two
  (compared, ``preferred`` is 1 or 2, the position of the better one as shown);
- ``item`` names the thing rated, the same for every rater who saw it (a hash of the prompt
  and the outputs, so the same output shown twice is the same item);
- ``sources`` (optional) says where each output came from (a model's name), so that
  ratings can compare models; any other field is an error, so a misspelt ``rater`` is
  caught rather than read as a row without a rater.

Reading checks the whole file before returning anything; each problem is one line naming
the file and the line. A last line with no newline that is not valid JSON is a *torn*
write (the process died mid-line): it is reported as such and the file is left as it is,
so the rows before it are never lost or rewritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
from collections.abc import Sequence

from minift.ask import append_jsonl
from minift.data.jsonl import numbered_rows

SCALE = (1, 5)
REQUIRED = ("rater", "item", "outputs")
OPTIONAL = ("prompt", "sources")
ANSWER_FIELDS = ("score", "preferred")
FIELDS = REQUIRED + OPTIONAL + ANSWER_FIELDS


def item_id(prompt: str, outputs: Sequence[str]) -> str:
    """A stable name for what was shown: 10 hex digits of SHA-1 over prompt and outputs."""
    key = json.dumps([prompt, list(outputs)], ensure_ascii=False)
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def check_rating(row: object, where: str, scale: tuple[int, int] = SCALE) -> dict:
    """``row`` if it is a valid rating; ValueError starting with ``where`` otherwise."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown}; a rating has {', '.join(REQUIRED)}, "
            f"optionally {', '.join(OPTIONAL)}, and score or preferred"
        )
    for f in REQUIRED:
        if f not in row:
            what = " (who gave this rating)" if f == "rater" else ""
            raise ValueError(f"{where}: missing field {f!r}{what}")
    for f in ("rater", "item"):
        if not isinstance(row[f], str) or not row[f].strip():
            raise ValueError(f"{where}: field {f!r} must be a non-empty string, got {row[f]!r}")
    outputs = row["outputs"]
    if not (
        isinstance(outputs, list) and len(outputs) in (1, 2) and all(isinstance(o, str) for o in outputs)
    ):  # fmt: skip
        raise ValueError(f"{where}: field 'outputs' must be a list of 1 or 2 strings (what was shown)")  # fmt: skip
    if "prompt" in row and not isinstance(row["prompt"], str):
        raise ValueError(f"{where}: field 'prompt' must be a string")
    if "sources" in row and not (
        isinstance(row["sources"], list) and len(row["sources"]) == len(outputs)
        and all(isinstance(s, str) for s in row["sources"])
    ):  # fmt: skip
        raise ValueError(f"{where}: field 'sources' must be a list of strings, one per output")
    answers = [f for f in ANSWER_FIELDS if f in row]
    if len(answers) != 1:
        raise ValueError(f"{where}: a rating has exactly one of 'score' (one output) or 'preferred' (two outputs), got {answers or 'neither'}")  # fmt: skip
    value = row[answers[0]]
    if len(outputs) == 1:
        lo, hi = scale
        if answers[0] != "score":
            raise ValueError(f"{where}: one output is rated with 'score', not 'preferred'")
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{where}: score must be an integer from {lo} to {hi}, got {value!r}")  # fmt: skip
    else:
        if answers[0] != "preferred":
            raise ValueError(f"{where}: two outputs are compared with 'preferred', not 'score'")
        if value not in (1, 2) or isinstance(value, bool):
            raise ValueError(f"{where}: preferred must be 1 or 2 (the better output as shown), got {value!r}")  # fmt: skip
    return row


def read_ratings(path: str | os.PathLike, scale: tuple[int, int] = SCALE) -> list[dict]:
    """Every rating in a ratings file, validated in full (see the module doc). A rater who
    rated the same item twice is an error naming both lines: agreement needs one rating
    per rater and item."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {path} does not exist")
    rows, seen = [], {}
    for lineno, row in numbered_rows(path, allow_empty=True):  # torn last line: an error
        where = f"{path} line {lineno}"
        check_rating(row, where, scale)
        key = (row["rater"], row["item"])
        if key in seen:
            raise ValueError(f"{where}: rater {row['rater']!r} rated item {row['item']!r} twice (first on line {seen[key]})")  # fmt: skip
        seen[key] = lineno
        rows.append(row)
    return rows


def append_ratings(path: str | os.PathLike, rows: Sequence[dict], scale: tuple[int, int] = SCALE) -> None:  # fmt: skip
    """Append ratings atomically (minift.ask.append_jsonl) after checking the new rows and
    the file already there: a broken or torn file is reported and left untouched."""
    path = pathlib.Path(path)
    for i, row in enumerate(rows):
        check_rating(row, f"rating {i} to append", scale)
    if path.exists():
        read_ratings(path, scale)
    append_jsonl(path, list(rows))


def rated_items(path: str | os.PathLike, rater: str, scale: tuple[int, int] = SCALE) -> set[str]:
    """The items ``rater`` has rated in ``path`` (empty when the file does not exist yet):
    what a resumed session does not show again."""
    path = pathlib.Path(path)
    if not path.exists() or not path.read_text(encoding="utf-8").strip():
        return set()
    return {r["item"] for r in read_ratings(path, scale) if r["rater"] == rater}


def rating_kind(rows: Sequence[dict]) -> str:
    """``"score"`` or ``"preferred"``: the kind of every row (a file mixing both is an error,
    their agreement is not one number)."""
    kinds = {"score" if "score" in r else "preferred" for r in rows}
    if len(kinds) != 1:
        raise ValueError(
            "the ratings mix scores and preferences; analyse them apart"
            if kinds else "no ratings to analyse"
        )  # fmt: skip
    return kinds.pop()


def rating_matrix(rows: Sequence[dict]) -> tuple[list[str], list[str], list[list[float]]]:
    """(raters, items, values): values[r][i] is rater r's score (or preferred position) of
    item i, NaN where r did not rate i. Raters and items in order of first appearance."""
    kind = rating_kind(rows)
    raters = list(dict.fromkeys(r["rater"] for r in rows))
    items = list(dict.fromkeys(r["item"] for r in rows))
    ri = {name: k for k, name in enumerate(raters)}
    ii = {name: k for k, name in enumerate(items)}
    values = [[math.nan] * len(items) for _ in raters]
    for r in rows:
        values[ri[r["rater"]]][ii[r["item"]]] = float(r[kind])
    return raters, items, values


def read_scores(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Automatic scores to correlate with ratings: a JSONL of ``{"item": id, name: number,
    ...}`` rows (e.g. ``"reward"``, ``"perplexity"``) -> {name: {item: value}}."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scores file {path} does not exist")
    scores: dict[str, dict[str, float]] = {}
    for lineno, row in numbered_rows(path, allow_empty=True):
        where = f"{path} line {lineno}"
        if not isinstance(row.get("item"), str):
            raise ValueError(f"{where}: a score row is an object with a string field 'item'")
        for name, value in row.items():
            if name == "item":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):  # fmt: skip
                raise ValueError(f"{where}: score {name!r} must be a finite number, got {value!r}")  # fmt: skip
            scores.setdefault(name, {})[row["item"]] = float(value)
    if not scores:
        raise ValueError(f"{path}: no scores (rows of item plus numeric fields)")
    return scores
