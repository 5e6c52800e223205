"""A real domain shift inside the embedded data: docstrings -> code comments.

The source task is ``stdlib-package``: name the standard-library package (asyncio, email,
logging, tkinter, unittest, xml) a docstring summary comes from. The target domain asks
the same question of the *comments* in the same packages' source code
(``stdlib-package-comments``). The labels mean the same and the topics are the same, but
the text is not: comments are terse, written for a reader of the code beside them, with
identifiers, abbreviations and half-sentences where docstrings have complete prose
addressed to a user. A classifier learned on one reads the other worse; that gap is what
unsupervised domain adaptation tries to close using target texts *without* their labels.

A target example is one block of consecutive comment lines (``tokenize`` COMMENT tokens
on adjacent lines, joined), at least ``min_chars`` long; licence headers, shebangs,
encoding lines, linter pragmas and blocks under 80% letters and spaces (rulers, commented-out
code) are dropped. Its train split plays the unlabelled
target data (its labels serve only the oracle, the ceiling); its val split is the target
test set. Both are balanced by a seeded shuffle.

:func:`read_target_text` reads the unlabelled target text a user gives instead (a plain
text file, one text per non-empty line), or ``pycode`` (the embedded source-code corpus).
"""

from __future__ import annotations

import io
import pathlib
import random
import tokenize

from minift.data.corpus import stdlib_files
from minift.data.tasks import STDLIB_PACKAGES, STDLIB_VERBALIZER, Task, register_task
from minift.errors import UserError

_SKIP_PREFIXES = ("!", "-*-", "noqa", "type:", "pragma", "fmt:", "pylint", "Copyright", "copyright", "Licensed", "Author")  # fmt: skip
_MEMO: dict[int, dict[str, list[str]]] = {}


def comment_blocks(source: bytes) -> list[str]:
    """The comments of a Python source, consecutive lines joined into one text each."""
    blocks, current, last_line = [], [], -2
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = tok.string.lstrip("#").strip()
            if tok.start[0] != last_line + 1 and current:
                blocks.append(" ".join(current))
                current = []
            if text and not text.startswith(_SKIP_PREFIXES):
                current.append(text)
            last_line = tok.start[0]
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        pass  # a file tokenize cannot read keeps the blocks found before the error
    if current:
        blocks.append(" ".join(current))
    return blocks


def _is_prose(block: str, min_chars: int) -> bool:
    """Long enough, and mostly letters (not a ruler of dashes or commented-out code)."""
    return len(block) >= min_chars and sum(ch.isalpha() or ch == " " for ch in block) >= 0.8 * len(
        block
    )


def package_comments(min_chars: int = 24) -> dict[str, list[str]]:
    """Distinct comment blocks of each package in STDLIB_PACKAGES, sorted."""
    if min_chars not in _MEMO:
        found: dict[str, set[str]] = {p: set() for p in STDLIB_PACKAGES}
        for module, path in stdlib_files():
            top = module.split(".")[0]
            if top in found:
                found[top].update(
                    b for b in comment_blocks(path.read_bytes()) if _is_prose(b, min_chars)
                )
        _MEMO[min_chars] = {p: sorted(v) for p, v in found.items()}
    return _MEMO[min_chars]


@register_task("stdlib-package-comments")
def stdlib_package_comments_task(
    seed: int = 0, per_class: int = 150, val_per_class: int = 40, min_chars: int = 24
) -> Task:
    """The target domain of ``stdlib-package``: which package is this code comment from?"""
    by_package = package_comments(min_chars)
    rng = random.Random(seed)
    train, val = [], []
    for label, package in enumerate(STDLIB_PACKAGES):
        texts = list(by_package[package])
        if len(texts) < val_per_class + 10:
            raise ValueError(f"package {package!r} has only {len(texts)} comment blocks")
        rng.shuffle(texts)
        val += [{"text": t[:400], "label": label} for t in texts[:val_per_class]]
        train += [{"text": t[:400], "label": label} for t in texts[val_per_class:][:per_class]]
    rng.shuffle(train)
    return Task(
        name="stdlib-package-comments", kind="classification", train=train, val=val,
        labels=list(STDLIB_PACKAGES),
        description="name the standard-library package a comment in its source comes from",
        template=" See also:", verbalizer=list(STDLIB_VERBALIZER),
    )  # fmt: skip


def read_target_text(source: str, limit: int | None = None) -> list[str]:
    """Unlabelled target texts: ``pycode`` (the embedded source-code corpus, one text per
    definition) or a UTF-8 text file (one text per non-empty line)."""
    if source == "pycode":
        from minift.data.corpus import load_corpus

        texts = [d.text for d in load_corpus("pycode", "train")]
        return texts[:limit] if limit else texts
    path = pathlib.Path(source)
    if not path.is_file():
        raise UserError(f"--target-text {source}: no such file (give a text file or 'pycode')")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise UserError(f"--target-text {source}: a binary file, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"--target-text {source}: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"--target-text {source}: the file is empty (one text per line expected)")
    return lines[:limit] if limit else lines
