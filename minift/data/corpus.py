"""The two embedded corpora, harvested from the installed Python standard library.

- ``pydocs``: every module, class and function docstring (``ast.get_docstring``), about
  1.7 MB of English technical prose, one :class:`Document` per docstring.
- ``pycode``: source code, one Document per top-level function or class, from a
  deterministic ~2 MB subset of modules (a second domain, for domain adaptation).

Pipeline: harvest -> :func:`~minift.data.clean.clean_text` -> drop fragments
(:func:`~minift.data.clean.is_useful`) -> exact and near-duplicate removal
(:func:`~minift.data.dedup.dedup`, over the whole corpus so that no duplicate straddles
train and val) -> split **by module**. Splitting by module rather than by document keeps
the docstrings of one module (which share vocabulary and phrasing) on one side, so
validation measures generalisation to unseen modules. Modules are visited in the order of
``crc32(module name)`` (stable across runs and machines, unlike the salted ``hash()``) and
each goes to ``val`` if it still fits in 10% of the corpus's characters; the rest is
``train``. Filling by characters rather than by module count keeps val at ~10% of the
text even though module sizes vary by a factor of a thousand.

The result is cached as JSON under ``$MINIFT_HOME/corpora`` (built once, by
:func:`minift.cache.build_once`), keyed by the Python version (the stdlib differs between
versions) and a format version.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import importlib.util
import json
import os
import pathlib
import sys
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from minift.cache import build_once
from minift.data.clean import clean_text, is_useful
from minift.data.dedup import exact_dedup, near_dedup
from minift.utils import minift_home

CORPORA = ("pydocs", "pycode")
SPLITS = ("train", "val", "all")
VAL_PERCENT = 10
PYCODE_CHARS = 2_000_000
FORMAT_VERSION = 2

# Folders that are tests, test data, third-party packages or build artefacts.
_SKIP_DIRS = {
    "site-packages", "dist-packages", "__pycache__", "lib-dynload", "test", "tests", "idle_test",
}  # fmt: skip


@dataclass(frozen=True)
class Document:
    module: str  # dotted module name, e.g. "email.mime.text"
    name: str  # qualified object name ("Message.get_payload"), "" for the module docstring
    text: str


def stdlib_root() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: pathlib.Path | None = None) -> list[tuple[str, pathlib.Path]]:
    """``(module name, path)`` of every stdlib ``.py`` file outside tests, sorted."""
    root = root or stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames
            if d not in _SKIP_DIRS and not d.startswith((".", "config-")) and "-" not in d
        )  # fmt: skip
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            path = pathlib.Path(dirpath, fn)
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts and not parts[-1].startswith("_sysconfigdata"):
                out.append((".".join(parts), path))
    return out


def _parse(path: pathlib.Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None  # e.g. files of deliberately broken syntax used as fixtures


def _docstrings(module: str, tree: ast.Module) -> list[Document]:
    """Module, class and function docstrings, nested ones with qualified names."""
    docs = []
    doc = ast.get_docstring(tree)
    if doc:
        docs.append(Document(module, "", doc))

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = prefix + child.name
                doc = ast.get_docstring(child)
                if doc:
                    docs.append(Document(module, qual, doc))
                visit(child, qual + ".")

    visit(tree, "")
    return docs


def _definitions(module: str, path: pathlib.Path, tree: ast.Module) -> list[Document]:
    """The source of each top-level function and class (with its decorators)."""
    lines = importlib.util.decode_source(path.read_bytes()).splitlines()
    docs = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            docs.append(Document(module, node.name, "\n".join(lines[start : node.end_lineno])))
    return docs


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Parsing allocates millions of AST nodes, which keeps triggering the cyclic garbage
    # collector for nothing (ASTs hold no cycles; reference counting frees them): pausing
    # it halves the harvest time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def harvest(name: str, files: list[tuple[str, pathlib.Path]] | None = None) -> list[Document]:
    """Raw (uncleaned) documents of corpus ``name`` from ``files`` (default: the stdlib)."""
    _check_name(name)
    files = stdlib_files() if files is None else files
    with _gc_paused():
        return _harvest(name, files)


def _harvest(name: str, files: list[tuple[str, pathlib.Path]]) -> list[Document]:
    docs: list[Document] = []
    if name == "pydocs":
        for module, path in files:
            tree = _parse(path)
            if tree is not None:
                docs.extend(_docstrings(module, tree))
        return docs
    # pycode: whole modules in crc32 order until the budget is spent (a stable, spread-out
    # sample of the stdlib rather than its alphabetical beginning).
    total = 0
    for module, path in sorted(files, key=lambda mp: (zlib.crc32(mp[0].encode()), mp[0])):
        if total >= PYCODE_CHARS:
            break
        tree = _parse(path)
        if tree is not None:
            defs = _definitions(module, path, tree)
            docs.extend(defs)
            total += sum(len(d.text) for d in defs)
    return sorted(docs, key=lambda d: d.module)  # stable sort: file order within a module


def build(
    name: str, files: list[tuple[str, pathlib.Path]] | None = None
) -> tuple[list[Document], dict]:
    """Harvest, clean, filter and deduplicate; return documents and pipeline counts."""
    raw = harvest(name, files)
    cleaned = [Document(d.module, d.name, clean_text(d.text)) for d in raw]
    useful = [d for d in cleaned if is_useful(d.text)]
    texts = [d.text for d in useful]
    exact = exact_dedup(texts)
    near = near_dedup([texts[i] for i in exact])
    docs = [useful[exact[i]] for i in near]
    counts = {
        "harvested": len(raw),
        "too_short": len(cleaned) - len(useful),
        "exact_duplicates": len(useful) - len(exact),
        "near_duplicates": len(exact) - len(near),
        "kept": len(docs),
        "raw_chars": sum(len(d.text) for d in raw),
    }
    return docs, counts


def val_modules(docs: list[Document] | tuple[Document, ...]) -> frozenset[str]:
    """Modules of the val split: in crc32 order, each one that still fits in 10% of chars."""
    sizes: dict[str, int] = {}
    for d in docs:
        sizes[d.module] = sizes.get(d.module, 0) + len(d.text)
    budget = sum(sizes.values()) * VAL_PERCENT // 100
    val, used = set(), 0
    for module in sorted(sizes, key=lambda m: (zlib.crc32(m.encode("utf-8")), m)):
        if used + sizes[module] <= budget:
            val.add(module)
            used += sizes[module]
    return frozenset(val)


def _check_name(name: str) -> None:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid corpora: {', '.join(CORPORA)}")


def _cache_path(name: str) -> pathlib.Path:
    py = ".".join(map(str, sys.version_info[:3]))
    return minift_home() / "corpora" / f"{name}-py{py}-v{FORMAT_VERSION}.json"


_MEMO: dict[str, tuple[tuple[Document, ...], dict, frozenset[str]]] = {}


def _load_all(name: str) -> tuple[tuple[Document, ...], dict, frozenset[str]]:
    _check_name(name)
    path = _cache_path(name)
    key = str(path)
    if key in _MEMO and path.exists():
        return _MEMO[key]

    def write(tmp: pathlib.Path) -> None:
        docs, counts = build(name)
        obj = {
            "corpus": name,
            "python": sys.version,
            "format": FORMAT_VERSION,
            "pipeline": counts,
            "documents": [[d.module, d.name, d.text] for d in docs],
        }
        tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")

    obj = json.loads(build_once(path, write).read_text(encoding="utf-8"))
    docs = tuple(Document(*d) for d in obj["documents"])
    result = (docs, obj["pipeline"], val_modules(docs))
    _MEMO[key] = result
    return result


def load_corpus(name: str, split: str = "train") -> list[Document]:
    """Documents of corpus ``name`` ("pydocs" or "pycode") in ``split`` ("train", "val",
    "all"), cleaned and deduplicated; built once and cached under ``$MINIFT_HOME``."""
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    docs, _, val = _load_all(name)
    if split == "all":
        return list(docs)
    return [d for d in docs if (d.module in val) == (split == "val")]


def corpus_stats(name: str) -> dict:
    """Sizes of a corpus and its splits, and how many documents each cleaning step removed."""
    _check_name(name)
    stats: dict = {"corpus": name, "pipeline": dict(_load_all(name)[1])}
    for split in SPLITS:
        part = load_corpus(name, split)
        stats[split] = {
            "documents": len(part),
            "modules": len({d.module for d in part}),
            "chars": sum(len(d.text) for d in part),
            "bytes": sum(len(d.text.encode("utf-8")) for d in part),
        }
    return stats
