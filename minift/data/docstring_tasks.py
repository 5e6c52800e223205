"""A suite of related tasks read from the standard library's own source (exact labels).

Multi-task learning and continual adaptation (lessons 19-20, minift.multitask) need
several tasks that share their inputs, so that training one can help or hurt another.
Every task here takes the same kind of text, the summary line of a docstring (PEP 257),
and asks a different question about the definition it documents. The answer is read from
the code with ``ast``, never from a model:

=================  ==============  =====================================================
task               kind            the answer, from the source
=================  ==============  =====================================================
``doc-kind``       classification  module, class, function or method
``doc-returns``    classification  does the function ``return`` a value (not None)?
``doc-argcount``   classification  its parameters (self/cls excluded): 0, 1, 2 or 3+;
                                   the small task: 25 training rows per class
``doc-name``       sft             name the function from its summary (generation)
=================  ==============  =====================================================

together with the trunk's ``stdlib-package`` (which package a summary comes from).

One harvest over the stdlib (about 4 s) gives a record per documented definition; it is
cached as JSON under ``$MINIFT_HOME/corpora`` (minift.cache.build_once). A summary that
occurs with two different answers (``__init__`` docstrings copied between classes, say)
is dropped from that task: its label would be noise.
"""

from __future__ import annotations

import ast
import json
import pathlib
import random
import sys
from dataclasses import dataclass

from minift.cache import build_once
from minift.data.corpus import stdlib_files
from minift.data.tasks import Task, register_task, summary_line
from minift.utils import fast_mode, minift_home

FORMAT_VERSION = 1
MIN_CHARS = 24  # shorter summaries ("Constructor.") say nothing
KINDS = ("module", "class", "function", "method")
KIND_VERBALIZER = (" module", " class", " function", " method")
RETURNS = ("no value", "a value")
RETURNS_VERBALIZER = (" None", " value")
ARGCOUNTS = ("0", "1", "2", "3+")
ARGCOUNT_VERBALIZER = (" zero", " one", " two", " three")
SUITE = ("stdlib-package", "doc-kind", "doc-returns", "doc-argcount", "doc-name")


@dataclass(frozen=True)
class Definition:
    module: str
    name: str  # qualified ("Message.get_payload"); "" for a module
    kind: str  # one of KINDS
    summary: str
    n_params: int  # -1 for modules and classes
    returns: int  # 1: returns a value, 0: never does, -1: not a function (or a generator)


def _returns_value(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """1 when the body (nested definitions excluded) has ``return <expr>`` other than
    ``return None``; 0 when it has none; -1 for a generator (its "return" is a StopIteration)."""
    found = 0
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue  # their returns are theirs
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return -1
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                found = 1
        stack.extend(ast.iter_child_nodes(node))
    return found


def _n_params(fn: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> int:
    """Named parameters (positional-only, ordinary, keyword-only); *args and **kwargs not
    counted; a method's self or cls not counted (a staticmethod has none)."""
    a = fn.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    return max(0, n - 1) if is_method and not static else n


def _definitions(module: str, tree: ast.Module) -> list[Definition]:
    out = []
    doc = ast.get_docstring(tree)
    if doc:
        out.append(Definition(module, "", "module", summary_line(doc), -1, -1))

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            qual = prefix + child.name
            doc = ast.get_docstring(child)
            if isinstance(child, ast.ClassDef):
                if doc:
                    out.append(Definition(module, qual, "class", summary_line(doc), -1, -1))
                visit(child, qual + ".", True)
                continue
            if doc:
                kind = "method" if in_class else "function"
                out.append(
                    Definition(
                        module,
                        qual,
                        kind,
                        summary_line(doc),
                        _n_params(child, in_class),
                        _returns_value(child),
                    )  # fmt: skip
                )
            visit(child, qual + ".", False)  # nested functions are functions

    visit(tree, "", False)
    return out


def harvest_definitions(files: list[tuple[str, pathlib.Path]] | None = None) -> list[Definition]:
    """Every documented module, class and function of ``files`` (default: the stdlib)."""
    out = []
    for module, path in stdlib_files() if files is None else files:
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # fixtures of deliberately broken syntax
        out.extend(_definitions(module, tree))
    return out


_MEMO: dict[str, list[Definition]] = {}


def load_definitions() -> list[Definition]:
    """The harvest, built once and cached (keyed by the Python version: the stdlib differs)."""
    py = ".".join(map(str, sys.version_info[:3]))
    path = minift_home() / "corpora" / f"definitions-py{py}-v{FORMAT_VERSION}.json"
    if str(path) not in _MEMO:

        def write(tmp: pathlib.Path) -> None:
            rows = [list(d.__dict__.values()) for d in harvest_definitions()]
            tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")

        rows = json.loads(build_once(path, write).read_text(encoding="utf-8"))
        _MEMO[str(path)] = [Definition(*r) for r in rows]
    return _MEMO[str(path)]


def unambiguous(pairs: list[tuple[str, int]]) -> dict[str, int]:
    """text -> label for the texts that occur with one label only."""
    seen: dict[str, set[int]] = {}
    for text, label in pairs:
        seen.setdefault(text, set()).add(label)
    return {t: next(iter(ls)) for t, ls in seen.items() if len(ls) == 1}


def balanced_task(
    name: str,
    pairs: list[tuple[str, int]],
    labels: tuple[str, ...],
    verbalizer: tuple[str, ...],
    seed: int,
    per_class: int,
    val_per_class: int,
    description: str,
    template: str,
) -> Task:
    """Balanced validation (val_per_class a class) and at most per_class training rows a
    class, by a seeded shuffle of the unambiguous, sorted texts."""
    by_label: dict[int, list[str]] = {i: [] for i in range(len(labels))}
    for text, label in sorted(unambiguous(pairs).items()):
        by_label[label].append(text)
    rng = random.Random(seed)
    train, val = [], []
    for label, texts in by_label.items():
        if len(texts) < val_per_class + 10:
            raise ValueError(f"{name}: class {labels[label]!r} has only {len(texts)} texts")
        rng.shuffle(texts)
        val += [{"text": t, "label": label} for t in texts[:val_per_class]]
        train += [{"text": t, "label": label} for t in texts[val_per_class:][:per_class]]
    rng.shuffle(train)
    return Task(
        name=name, kind="classification", train=train, val=val, labels=list(labels),
        description=description, template=template, verbalizer=list(verbalizer),
    )  # fmt: skip


def _texts(kinds: tuple[str, ...], min_chars: int) -> list[Definition]:
    return [d for d in load_definitions() if d.kind in kinds and len(d.summary) >= min_chars]


def _per_class(per_class: int | None, normal: int, fast: int) -> int:
    return per_class if per_class is not None else (fast if fast_mode() else normal)


@register_task("doc-kind")
def doc_kind_task(
    seed: int = 0, per_class: int | None = None, val_per_class: int = 40, min_chars: int = MIN_CHARS
) -> Task:
    """Does this docstring summary document a module, a class, a function or a method?
    (150 training rows a class, 48 in fast mode.)"""
    pairs = [(d.summary, KINDS.index(d.kind)) for d in _texts(KINDS, min_chars)]
    return balanced_task(
        "doc-kind", pairs, KINDS, KIND_VERBALIZER, seed, _per_class(per_class, 150, 48),
        val_per_class, "what a docstring summary documents: module, class, function or method",
        " Kind:",
    )  # fmt: skip


@register_task("doc-returns")
def doc_returns_task(
    seed: int = 0, per_class: int | None = None, val_per_class: int = 60, min_chars: int = MIN_CHARS
) -> Task:
    """Does the documented function or method return a value? (generators excluded;
    250 training rows a class, 64 in fast mode.)"""
    defs = [d for d in _texts(("function", "method"), min_chars) if d.returns >= 0]
    pairs = [(d.summary, d.returns) for d in defs]
    return balanced_task(
        "doc-returns", pairs, RETURNS, RETURNS_VERBALIZER, seed,
        _per_class(per_class, 250, 64), val_per_class,
        "whether the documented function returns a value", " Returns:",
    )  # fmt: skip


@register_task("doc-argcount")
def doc_argcount_task(
    seed: int = 0, per_class: int = 25, val_per_class: int = 40, min_chars: int = MIN_CHARS
) -> Task:
    """How many parameters does the documented function take (self/cls excluded): 0, 1, 2
    or 3+? The small task of the suite: 25 training rows a class, 100 in all."""
    defs = _texts(("function", "method"), min_chars)
    pairs = [(d.summary, min(d.n_params, 3)) for d in defs]
    return balanced_task(
        "doc-argcount", pairs, ARGCOUNTS, ARGCOUNT_VERBALIZER, seed, per_class, val_per_class,
        "how many parameters the documented function takes (0, 1, 2, 3+)", " Arguments:",
    )  # fmt: skip


@register_task("doc-name")
def doc_name_task(
    seed: int = 0, n_train: int | None = None, n_val: int = 64, min_chars: int = MIN_CHARS
) -> Task:
    """Generation: name the public function or method a docstring summary documents.

    prompt "<summary>\\nname:", response " <name>" (the last part of the qualified name);
    2000 training rows (400 in fast mode), n_val validation rows scored by exact match.
    A summary shared by differently named definitions is dropped.
    """
    n_train = n_train if n_train is not None else (400 if fast_mode() else 2000)
    pairs = [
        (d.summary, d.name.split(".")[-1])
        for d in _texts(("function", "method"), min_chars)
        if not d.name.split(".")[-1].startswith("_") and len(d.summary) <= 120
    ]
    names = sorted({n for _, n in pairs})
    ok = unambiguous([(t, names.index(n)) for t, n in pairs])
    rows = [{"prompt": f"{t}\nname:", "response": f" {names[i]}"} for t, i in sorted(ok.items())]
    random.Random(seed).shuffle(rows)
    if len(rows) < n_val + 10:
        raise ValueError(f"doc-name: only {len(rows)} rows")
    return Task(
        name="doc-name", kind="sft", train=rows[n_val:][:n_train], val=rows[:n_val],
        description="name the function a docstring summary documents",
    )  # fmt: skip


__all__ = ["SUITE", "Definition", "harvest_definitions", "load_definitions"]
