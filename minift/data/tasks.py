"""The task registry: downstream tasks with exact answers, built without the network.

A task is a train and a validation list of rows in one of the user formats of
minift.data.jsonl ("classification": text + label index; "sft": prompt + response;
"preference": prompt + chosen + rejected). Builders are registered by name and take a
seed; the same seed gives the same rows on every machine with the same Python.

The default task, ``stdlib-package``, is real text: given a docstring of the standard
library, name the package it documents (asyncio, email, logging, ...). Nothing in a
docstring's format gives the answer away; the words do, which is what a model pretrained
on the same prose should transfer to.
"""

from __future__ import annotations

import random
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from minift.data.jsonl import detect_format, load_jsonl
from minift.utils import fast_mode

DEFAULT_TASK = "stdlib-package"


@dataclass
class Task:
    name: str
    kind: str  # "classification" | "sft" | "preference" | "text"
    train: list[dict]
    val: list[dict]
    labels: list[str] = field(default_factory=list)  # class names, for classification
    description: str = ""
    # Classification as the language model would phrase it: the text, then the template,
    # then one word per label (the verbalizer) as the next token.
    template: str = ""
    verbalizer: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def summary(self) -> str:
        extra = f", {self.num_labels} classes" if self.labels else ""
        return (
            f"{self.name}: {self.kind}, {len(self.train)} train / {len(self.val)} val rows{extra}"
        )


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(name: str):
    """Decorator: register a builder ``fn(seed=0, **kwargs) -> Task`` under ``name``."""

    def wrap(fn: Callable[..., Task]) -> Callable[..., Task]:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_tasks() -> list[str]:
    """The tasks registered so far: the trunk's, and those of every technique package
    imported (minift.recipes.tasks imports them all)."""
    return sorted(_REGISTRY)


def get_task(name: str, seed: int = 0, **kwargs) -> Task:
    """A registered task by name, or a user's JSONL file by path."""
    if name in _REGISTRY:
        return _REGISTRY[name](seed=seed, **kwargs)
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return task_from_jsonl(name, seed=seed, **kwargs)
    raise ValueError(
        f"unknown task {name!r}; registered tasks are {list_tasks()}, or give a .jsonl path"
    )


def stable_fraction(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by the text and the seed (crc32, not the salted hash())."""
    return zlib.crc32(f"{seed}:{text}".encode()) / 2**32


def split_rows(
    rows: list[dict], val_fraction: float, seed: int, key: str
) -> tuple[list[dict], list[dict]]:
    train = [r for r in rows if stable_fraction(str(r[key]), seed) >= val_fraction]
    val = [r for r in rows if stable_fraction(str(r[key]), seed) < val_fraction]
    return train, val


def task_from_jsonl(
    path: str, val_fraction: float = 0.1, seed: int = 0, fmt: str | None = None
) -> Task:
    """A user's JSONL as a task: string labels are mapped to indices in sorted order."""
    fmt, rows = load_jsonl(path, fmt)
    labels: list[str] = []
    if fmt == "classification":
        labels = sorted({str(r["label"]) for r in rows})
        if len(labels) < 2:
            raise ValueError(
                f"{path}: every row has the label {labels[0]!r}; classification needs at "
                "least two classes (for language modelling on the texts, drop the labels)"
            )
        rows = [dict(r, label=labels.index(str(r["label"]))) for r in rows]
    key = "text" if fmt in ("classification", "text") else "prompt"
    train, val = split_rows(rows, val_fraction, seed, key)
    if not train or not val:
        raise ValueError(f"{path}: {len(rows)} rows are too few to split into train and validation")
    if fmt == "classification":
        warn_unseen_labels(str(path), labels, train, val)
    return Task(name=str(path), kind=fmt, train=train, val=val, labels=labels)


def warn_unseen_labels(name: str, labels: list[str], train: list[dict], val: list[dict]) -> None:
    """Warn (with counts) when validation holds a class that no training row has: the
    model cannot learn it, so its rows count as errors."""
    seen = {r["label"] for r in train}
    unseen = Counter(labels[r["label"]] for r in val if r["label"] not in seen)
    if unseen:
        counts = ", ".join(f"{label!r}: {n} row(s)" for label, n in sorted(unseen.items()))
        warnings.warn(
            f"{name}: validation holds classes with no training row ({counts}); "
            "they cannot be learned. Add training rows for them or drop them.",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------- stdlib-package
STDLIB_PACKAGES = ("asyncio", "email", "logging", "tkinter", "unittest", "xml")
# One word per package for the verbalizer; each is a single token of the default BPE.
STDLIB_VERBALIZER = (" asyncio", " email", " logging", " widget", " test", " XML")


def summary_line(docstring: str) -> str:
    """A docstring's summary: its first paragraph on one line (PEP 257)."""
    return " ".join(docstring.split("\n\n")[0].split())


@register_task("stdlib-package")
def stdlib_package_task(
    seed: int = 0,
    packages: tuple[str, ...] = STDLIB_PACKAGES,
    verbalizer: tuple[str, ...] = STDLIB_VERBALIZER,
    per_class: int | None = None,
    val_per_class: int = 40,
    min_chars: int = 24,
) -> Task:
    """Which standard-library package does this docstring summary come from?

    The summary line of each function and class docstring (module docstrings excluded:
    they often name their package), at least ``min_chars`` long. Balanced validation
    (``val_per_class`` rows per package); at most ``per_class`` training rows per package
    (150, or 48 in fast mode), chosen by a seeded shuffle. A short text leaves few words
    to learn from, which is where what a pretrained model knows about words pays off.
    """
    from minift.data.corpus import load_corpus

    if len(verbalizer) != len(packages):
        raise ValueError(f"{len(packages)} packages but {len(verbalizer)} verbalizer words")
    if per_class is None:
        per_class = 48 if fast_mode() else 150
    by_label: dict[str, set[str]] = {p: set() for p in packages}
    for doc in load_corpus("pydocs", "all"):
        top = doc.module.split(".")[0]
        summary = summary_line(doc.text)
        if top in by_label and doc.name and len(summary) >= min_chars:
            by_label[top].add(summary)
    rng = random.Random(seed)
    train, val = [], []
    for label, package in enumerate(packages):
        texts = sorted(by_label[package])
        if len(texts) < val_per_class + 10:
            raise ValueError(f"package {package!r} has only {len(texts)} docstring summaries")
        rng.shuffle(texts)
        val += [{"text": t, "label": label} for t in texts[:val_per_class]]
        train += [
            {"text": t, "label": label} for t in texts[val_per_class : val_per_class + per_class]
        ]
    rng.shuffle(train)
    return Task(
        name="stdlib-package",
        kind="classification",
        train=train,
        val=val,
        labels=list(packages),
        description="name the standard-library package a docstring summary comes from",
        template=" See also:",
        verbalizer=list(verbalizer),
    )


# ---------------------------------------------------------------------------- sort-words
@register_task("sort-words")
def sort_words_task(
    seed: int = 0, n_train: int = 2000, n_val: int = 200, max_words: int = 5
) -> Task:
    """Instruction following with an exact answer: sort a few words alphabetically.

    prompt "sort: pear apple fig\\nanswer:", response " apple fig pear". Words come from
    a fixed list of short English words, so a tokenizer trained on prose knows them.
    """
    words = (
        "apple bird cat dog egg fish goat hat ink jam key lamp moon nest owl pen queen "
        "rain sun tree vase wind yarn zoo"
    ).split()
    rng = random.Random(seed)

    def row() -> dict:
        chosen = rng.sample(words, rng.randint(2, max_words))
        return {
            "prompt": f"sort: {' '.join(chosen)}\nanswer:",
            "response": " " + " ".join(sorted(chosen)),
        }

    train = [row() for _ in range(n_train)]
    seen = {r["prompt"] for r in train}
    val: list[dict] = []
    while len(val) < n_val:
        r = row()
        if r["prompt"] not in seen:
            val.append(r)
            seen.add(r["prompt"])
    return Task(
        name="sort-words", kind="sft", train=train, val=val, description="sort words alphabetically"
    )


__all__ = [
    "DEFAULT_TASK",
    "Task",
    "detect_format",
    "get_task",
    "list_tasks",
    "register_task",
    "task_from_jsonl",
]
