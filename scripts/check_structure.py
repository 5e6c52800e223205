"""The package's architecture, checked: imports point down the layers, with no cycle.

    python scripts/check_structure.py [--sizes N]

Walks every module of minift (and kernels/, installed as minift.kernels) with ``ast`` and
collects its imports: module-level and inside functions, relative or absolute, and module
names written as strings (``importlib.import_module("minift.x")``, lists of modules to
import). Each module belongs to a layer (docs/design.md):

    0 foundation   minift.utils, io, cache, seeding, errors, tokenizer, claims, shipped, ask,
                   plot_labels
    1 kernels      minift.kernels
    2 model        minift.model            the transformer only
    3 data         minift.data
    4 train        minift.train            the one Trainer
    5 techniques   minift.peft, longctx, distill, rlhf, ... (each package its own)
    6 recipes      minift.recipes          the jobs
    7 cli          minift.cli              argparse only

An edge is *upward* when a module imports one of a higher layer, or when two technique
packages import each other without an entry in ALLOWED_SIDEWAYS. Prints the upward edges,
the cycles (strongly connected components), and the largest modules and functions; exits 1
when there is an upward edge or a cycle (tests/test_structure.py runs it).
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

LAYERS = {
    "minift.utils": 0,
    "minift.io": 0,
    "minift.cache": 0,
    "minift.seeding": 0,
    "minift.errors": 0,
    "minift.tokenizer": 0,
    "minift.claims": 0,
    "minift.shipped": 0,
    "minift.ask": 0,
    "minift.plot_labels": 0,
    "minift.kernels": 1,
    "minift.model": 2,
    "minift.data": 3,
    "minift.train": 4,
    "minift.recipes": 6,
    "minift.cli": 7,
    "minift.__main__": 8,  # `python -m minift`: the command itself, above the CLI
}
TECHNIQUE_LAYER = 5  # every other subpackage of minift
# Technique packages that may import another one, and why (docs/design.md repeats this).
ALLOWED_SIDEWAYS = {
    ("minift.rlhf", "minift.peft"): "the PPO policy can train LoRA and use the LoRA-disabled "
    "model as its frozen reference, as TRL does",
    ("minift.personal", "minift.rlhf"): "users' preference pairs and their DPO scoring are RLHF's",
    ("minift.personal", "minift.peft"): "serving stacks the users' LoRA layers",
}
MODULE_STRING = re.compile(r"^minift(\.\w+)+$")


def module_files(root: pathlib.Path) -> dict[str, tuple[pathlib.Path, bool]]:
    mods = {}
    for base, prefix in ((root / "minift", "minift"), (root / "kernels", "minift.kernels")):
        for f in sorted(base.rglob("*.py")):
            parts = [p for p in f.relative_to(base).with_suffix("").parts if p != "__init__"]
            mods[".".join([prefix, *parts])] = (f, f.name == "__init__.py")
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: pathlib.Path, is_pkg: bool, mods: dict) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if MODULE_STRING.match(node.value):
                names = [node.value]
        for name in names:
            if name.startswith("minift"):
                target = _resolve(name, mods)
                if target and target != module:
                    found.add(target)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_of(module: str) -> int:
    return LAYERS.get(package_of(module), TECHNIQUE_LAYER)


def upward(a: str, b: str) -> bool:
    pa, pb = package_of(a), package_of(b)
    if pa == pb:
        return False
    la, lb = layer_of(a), layer_of(b)
    if lb > la:
        return True
    return la == lb == TECHNIQUE_LAYER and (pa, pb) not in ALLOWED_SIDEWAYS


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def function_sizes(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.end_lineno - node.lineno + 1, node.name)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def analyse(root: pathlib.Path = ROOT) -> dict:
    mods = module_files(root)
    edges = {m: imports_of(m, f, is_pkg, mods) for m, (f, is_pkg) in mods.items()}
    up = sorted((a, b) for a, targets in edges.items() for b in targets if upward(a, b))
    return {"modules": mods, "edges": edges, "upward": up, "cycles": cycles(edges)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, default=10, help="how many of the largest to list")
    args = p.parse_args(argv)
    result = analyse()
    mods = result["modules"]
    print(f"{len(mods)} modules, {sum(len(t) for t in result['edges'].values())} import edges")
    print(f"\nupward edges: {len(result['upward'])}")
    for a, b in result["upward"]:
        print(f"  {a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)})")
    print(f"\ncycles: {len(result['cycles'])}")
    for comp in result["cycles"]:
        print("  " + " <-> ".join(comp))
    lines = {m: len(f.read_text(encoding="utf-8").splitlines()) for m, (f, _) in mods.items()}
    print("\nlargest modules (goal: library modules under 300 lines):")
    for m, n in sorted(lines.items(), key=lambda kv: -kv[1])[: args.sizes]:
        print(f"  {n:5d}  {m}")
    funcs = [
        (n, f"{m}.{name}")
        for m, (f, _) in mods.items()
        if not m.startswith("minift.kernels")
        for n, name in function_sizes(f)
    ]
    print("\nlongest functions outside the kernels (goal: under 60 lines):")
    for n, name in sorted(funcs, reverse=True)[: args.sizes]:
        print(f"  {n:5d}  {name}")
    by_pkg: dict[str, int] = {}
    for m, n in lines.items():
        by_pkg[package_of(m)] = by_pkg.get(package_of(m), 0) + n
    print("\nlines per package:")
    for pkg, n in sorted(by_pkg.items(), key=lambda kv: (layer_of(kv[0]), kv[0])):
        print(f"  layer {layer_of(pkg)}  {pkg:18s} {n:6d}")
    return 1 if result["upward"] or result["cycles"] else 0


if __name__ == "__main__":
    sys.exit(main())
