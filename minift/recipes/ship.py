"""Shipping a base in the package, and checking a rebuilt one against what ships.

`minift pretrain --size base --ship` copies a built base into minift/assets/ (the folder
SHIPPED_BASES names, whose hash minift.shipped then checks); `--rebuild` pretrains it from
scratch and compares: floating-point summation order differs between machines, so a
rebuild matches the shipped weights closely, not bit for bit.
"""

from __future__ import annotations

import pathlib
import shutil

from minift.errors import UserError
from minift.io import read_json, write_json
from minift.model import GPT
from minift.recipes.pretrain import BASE_FILES, SHIPPED_BASES, SIZES, shipped_base_dir
from minift.shipped import ASSETS, sha256_of


def compare_with_shipped(size: str, folder: pathlib.Path) -> str | None:
    """How far a rebuilt base is from the shipped one (None where none ships): the
    largest weight difference and both validation losses."""
    if size not in SHIPPED_BASES:
        return None
    try:
        shipped = shipped_base_dir(size)
    except UserError as err:
        return f"no shipped copy to compare with: {err}"
    ours, theirs = GPT.load(folder).state_dict(), GPT.load(shipped).state_dict()
    diff = max((ours[k] - theirs[k]).abs().max().item() for k in theirs)
    mine = read_json(folder / "report.json", "base report")["val_loss"]
    ref = read_json(shipped / "report.json", "base report")["val_loss"]
    return (
        f"against the shipped {size!r}: largest weight difference {diff:.2e}, "
        f"val loss {mine:.4f} here vs {ref:.4f} shipped"
    )


def ship_base(size: str, folder: pathlib.Path) -> str:
    """Copy a built base into minift/assets/ (what SHIPPED_BASES points at); return where,
    with the SHA-256 of its weights."""
    recipe = SIZES[size]
    name = SHIPPED_BASES.get(size, (f"{size}-{recipe.n_layer}x{recipe.n_embd}", ""))[0]
    dest = ASSETS / name
    dest.mkdir(parents=True, exist_ok=True)
    for file in BASE_FILES[:2]:
        shutil.copyfile(folder / file, dest / file)
    report = read_json(folder / "report.json", "base report")
    # the curve every 25 steps and at each evaluation: the full log would outweigh the weights
    report["history"] = [h for h in report["history"] if h["step"] % 25 == 0 or "val_loss" in h]
    write_json(dest / "report.json", report)
    return f"{dest} (model.safetensors SHA-256 {sha256_of(dest / 'model.safetensors')})"
