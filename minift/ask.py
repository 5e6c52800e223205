"""The terminal loop of every command that asks a person: show an item, read an answer,
record it, show the next one.

`minift feedback` (preferences to train on) and `minift rate` (ratings to evaluate with)
differ in what they show and what they record, not in how they ask, so both are this one
loop. It guarantees what a person at a keyboard needs:

- answers come from the terminal, from a file (one answer a line, checked in full before
  anything is shown) or from any iterator (how the loop is tested);
- an invalid answer typed in the terminal is refused with the valid choices, and the
  question is asked again;
- every recorded answer is written at once, atomically (the whole file rewritten through a
  temporary file and renamed, minift.io.atomic_path), so a crash or a killed terminal
  never leaves a half-written line, and what was answered is never lost;
- Ctrl-C and end of input (Ctrl-D, or the end of an answers file) stop the loop cleanly:
  one line says how many answers were kept and where;
- items already answered (their keys, read from the output file by the caller) are not
  shown again, so re-running the same command resumes where the last session stopped.

Two answers mean the same in every loop: ``s`` skips the item, ``q`` quits.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minift.io import atomic_path

SKIP, QUIT = "s", "q"
CONTROL = {SKIP: "skip", QUIT: "quit"}
_END = object()


def _choices_text(choices: Mapping[str, str]) -> str:
    """'1, 2, s or q'"""
    keys = list(choices)
    return ", ".join(keys[:-1]) + f" or {keys[-1]}" if len(keys) > 1 else keys[0]


def read_answers(
    path: str | os.PathLike, choices: Mapping[str, str], hint: str | None = None
) -> list[str]:
    """The answers in a file, one a line (blank lines ignored, case and spaces too), each
    one of ``choices`` (answer -> meaning); a ValueError names the file, the line and the
    valid answers otherwise."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answers file {path} does not exist")
    hint = hint or f"write one of {_choices_text(choices)}"
    answers = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        a = line.strip().lower()
        if not a:
            continue
        if a not in choices:
            raise ValueError(f"{path} line {lineno}: {line.strip()!r} is not an answer; {hint}")
        answers.append(a)
    return answers


def terminal_answers(
    question: str,
    choices: Mapping[str, str],
    ask: Callable[[str], str] | None = None,
    say: Callable[[str], None] = print,
) -> Iterator[str]:
    """Answers typed in the terminal (``ask``, default the built-in input(), looked up when
    asking): asks ``question``, asks again after an answer that is not one of ``choices``,
    ends at end of input (EOFError)."""
    ask = ask or (lambda q: input(q))
    while True:
        try:
            a = ask(question).strip().lower()
        except EOFError:
            return
        if a in choices:
            yield a
        else:
            say(f"  {a!r} is not an answer: type {_choices_text(choices)}")


def append_jsonl(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Append rows to a JSONL file atomically: the old text and the new rows are written to
    a temporary file that is renamed over ``path``, so the file holds either the old rows or
    all of them. The caller validates the old file first (a torn line must not be kept)."""
    path = pathlib.Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    new = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(old + new, encoding="utf-8")


@dataclass
class LoopResult:
    """What one session recorded. ``stopped`` says why it ended: ``done`` (no items left),
    ``quit`` (q), ``end of input`` (EOF or the answers ran out) or ``interrupted``
    (Ctrl-C)."""

    path: pathlib.Path
    recorded: list[dict] = field(default_factory=list)
    shown: int = 0
    skipped: int = 0
    resumed: int = 0  # items not shown because the file already held an answer to them
    stopped: str = "done"


def ask_loop(
    items: Iterable[Any],
    render: Callable[[Any], str],
    answers: Iterable[str],
    record: Callable[[Any, str], dict],
    out_path: str | os.PathLike,
    key: Callable[[Any], str] | None = None,
    done: Container[str] = (),
    show: Callable[[str], None] = print,
    append: Callable[[pathlib.Path, list[dict]], None] = append_jsonl,
) -> LoopResult:
    """Show each item (``render(item)``), take the next answer, and append
    ``record(item, answer)`` to ``out_path`` at once; ``s`` skips, ``q`` quits.

    Items whose ``key(item)`` is in ``done`` are passed over unseen (resuming). Items are
    drawn lazily, so an item that is expensive to make (a sampled response) is made only
    when it is about to be shown. Ctrl-C while waiting for an answer or while making the
    next item, and the end of the answers, stop the loop; everything recorded stays."""
    out_path = pathlib.Path(out_path)
    result = LoopResult(out_path)
    answer_it, item_it = iter(answers), iter(items)
    try:
        while True:
            item = next(item_it, _END)
            if item is _END:
                break
            if key is not None and key(item) in done:
                result.resumed += 1
                continue
            show(render(item))
            result.shown += 1
            answer = next(answer_it, None)
            if answer is None:
                result.stopped = "end of input"
                break
            if answer == QUIT:
                result.stopped = "quit"
                break
            if answer == SKIP:
                result.skipped += 1
                continue
            row = record(item, answer)
            append(out_path, [row])
            result.recorded.append(row)
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    return result


def summary(result: LoopResult, what: str = "answer(s)") -> str:
    """The one line a session ends with: how it stopped and what the file keeps."""
    how = {"done": "no items left", "quit": "quit", "end of input": "end of input",
           "interrupted": "interrupted (Ctrl-C)"}[result.stopped]  # fmt: skip
    resumed = f", {result.resumed} answered before" if result.resumed else ""
    return (
        f"{how}: recorded {len(result.recorded)} {what} in {result.path} "
        f"({result.skipped} skipped{resumed}); everything recorded is kept"
    )
