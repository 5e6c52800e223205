"""User data: JSONL rows in four formats, and plain text files.

=============== =============================== ==========================================
format          fields                          used for
=============== =============================== ==========================================
text            ``text``                        continued pretraining / domain adaptation
classification  ``text``, ``label``             sequence classification
sft             ``prompt``, ``response``        supervised (instruction) fine-tuning
preference      ``prompt``, ``chosen``,         preference learning (reward models, DPO)
                ``rejected``
=============== =============================== ==========================================

Every reader validates the whole file before returning anything, so a bad line never leaves
a half-loaded dataset behind, and every error is a ``ValueError`` that names the file, the
(1-based) line and the problem: ``data.jsonl line 3: missing field 'label'``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

# Checked most specific first: a preference row also has a prompt, a classification row
# also has a text.
FORMATS: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected"),
    "sft": ("prompt", "response"),
    "classification": ("text", "label"),
    "text": ("text",),
}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
# A plain-text corpus shorter than this cannot fill even one 256-token training window
# (at ~4 characters per token), so it is rejected as too small rather than trained on.
MIN_TEXT_CHARS = 1000


def _check_value(where: str, field: str, value: object) -> None:
    if field == "label":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(
                f"{where}: field 'label' must be a string or an integer, got {value!r}"
            )
    elif not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")


def read_user_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a user's file; a missing file, a folder or bytes that are not UTF-8
    are errors naming the path."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; give a data file (.jsonl, or plain text)")
    if not p.exists():
        raise FileNotFoundError(f"data file {p} does not exist")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict]:
    """Parse a JSONL file (one JSON object per line, blank lines allowed) whose every row
    has the ``required`` fields; ValueError naming file and line otherwise."""
    return [row for _, row in numbered_rows(path, required)]


def row_format(row: dict) -> str | None:
    """The most specific format whose fields the row has (None: no format fits)."""
    return next((fmt for fmt, fields in FORMATS.items() if set(fields) <= set(row)), None)


def numbered_rows(
    path: str | os.PathLike, required: Sequence[str] = (), allow_empty: bool = False
) -> list[tuple[int, dict]]:
    """(line number, row) of every JSON object in the file; a file of no rows is an error
    unless ``allow_empty`` (a log that is still to be written, as a ratings file)."""
    name = str(path)
    # JSON lines end at "\n" only: str.splitlines() would also split at U+2028, U+0085 and
    # other separators that JSON allows unescaped inside a string.
    lines = read_user_text(path).split("\n")
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # the last line, and no newline after it
                raise ValueError(
                    f"{where}: torn last line (not valid JSON, no newline after it: a write "
                    f"cut off, or an unfinished edit); the {len(rows)} row(s) above it are "
                    "intact, fix or delete that line to go on"
                ) from e
            raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for field in required:
            if field not in row:
                raise ValueError(f"{where}: missing field {field!r}")
            _check_value(where, field, row[field])
        rows.append((lineno, row))
    if not rows and not allow_empty:
        raise ValueError(f"{name}: empty file, no JSON rows")
    return rows


def detect_format(data: Sequence[dict] | str | os.PathLike) -> str:
    """``"text"``, ``"classification"``, ``"sft"`` or ``"preference"``: the format of the
    rows, which must all be of one format (a classification file with one row missing its
    label is an error naming that line, not a language-modelling file). A path that is not
    ``.jsonl``/``.json`` is plain text, so ``"text"``."""
    if isinstance(data, (str, os.PathLike)):
        if pathlib.Path(data).suffix.lower() not in JSONL_SUFFIXES:
            return "text"
        where, numbered = str(data), numbered_rows(data)
    else:
        where, numbered = "rows", [(i + 1, r) for i, r in enumerate(data)]
    if not numbered:
        raise ValueError(f"{where}: no rows to detect a format from")
    accepted = "; ".join(f"{f}: {', '.join(fs)}" for f, fs in FORMATS.items())
    first_line, first = numbered[0]
    fmt = row_format(first)
    if fmt is None:
        raise ValueError(
            f"{where} line {first_line}: fields {sorted(first)} match no format; "
            f"accepted formats are {accepted}"
        )
    for lineno, row in numbered[1:]:
        other = row_format(row)
        if other != fmt:
            missing = sorted(set(FORMATS[fmt]) - set(row))
            detail = f"missing field(s) {missing}" if missing else f"a {other} row"
            raise ValueError(
                f"{where} line {lineno}: {detail}, but line {first_line} is a {fmt} row "
                f"({', '.join(FORMATS[fmt])}); every row of a file needs the same fields"
            )
    return fmt


def load_jsonl(path: str | os.PathLike, fmt: str | None = None) -> tuple[str, list[dict]]:
    """Read a user JSONL file in format ``fmt`` (detected when None): ``(fmt, rows)``."""
    if pathlib.Path(path).suffix.lower() not in JSONL_SUFFIXES:
        raise ValueError(f"{path}: expected a .jsonl file; read plain text with read_text_file")
    if fmt is None:
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return fmt, read_jsonl(path, FORMATS[fmt])


def read_text_file(path: str | os.PathLike, min_chars: int = MIN_TEXT_CHARS) -> str:
    """The text of a plain UTF-8 corpus file; ValueError if it is empty or too small."""
    name = str(path)
    text = read_user_text(path)
    n = len(text.strip())
    if n == 0:
        raise ValueError(f"{name}: empty file")
    if n < min_chars:
        raise ValueError(
            f"{name}: only {n} characters of text; a corpus file needs at least {min_chars} "
            "(about one training window). Add more text or use a JSONL dataset."
        )
    return text
