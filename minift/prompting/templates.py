"""Prompts for classification: a template around the text, and one label word per class.

A *template* turns an input into a cloze the language model completes: "{text} See also:"
is followed, in the pretraining text, by the name of a related module, so the next-token
probabilities of the label words ("asyncio", "email", ...) score the classes. The
*verbalizer* maps each class to its word (Schick and Schuetze, "Exploiting cloze
questions for few-shot text classification", EACL 2021); GPT-3 scored its classes the
same way (Brown et al., "Language models are few-shot learners", NeurIPS 2020).

A k-shot prompt puts k solved examples (demonstrations) before the query, each the filled
template followed by its label word:

    {demo_1 text} See also: logging
    {demo_2 text} See also: email
    {query text} See also:          <- the model's next token decides the class
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from minift.errors import UserError


@dataclass(frozen=True)
class Template:
    """``pattern`` holds ``{text}``; the label word follows the filled pattern directly."""

    pattern: str = "{text} See also:"
    separator: str = "\n"  # between demonstrations

    def __post_init__(self) -> None:
        if self.pattern.count("{text}") != 1:
            raise UserError(f"a template must hold {{text}} exactly once, got {self.pattern!r}")

    def fill(self, text: str) -> str:
        return self.pattern.replace("{text}", text)

    def demonstration(self, text: str, word: str) -> str:
        return self.fill(text) + word

    def prompt(self, text: str, demos: Sequence[tuple[str, str]] = ()) -> str:
        """The demonstrations (text, label word), then the query's filled pattern."""
        parts = [self.demonstration(t, w) for t, w in demos]
        return self.separator.join([*parts, self.fill(text)])


def task_template(task) -> Template:
    """The task's own template: its text, then its template suffix (minift.data.tasks)."""
    return Template("{text}" + task.template)


def label_token_ids(enc, verbalizer: Sequence[str]) -> list[int]:
    """The first token of each label word; two classes sharing one is an error (their
    scores would be the same number)."""
    if not verbalizer:
        raise UserError("the task has no verbalizer (one word per label): it cannot be prompted")
    ids = [enc.encode_ordinary(w)[0] for w in verbalizer]
    if len(set(ids)) != len(ids):
        raise UserError(
            f"label words {list(verbalizer)} share a first token; choose distinct words"
        )
    return ids
