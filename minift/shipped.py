"""Files shipped inside the package (minift/assets/), each checked against its SHA-256.

The default tokenizer and the default base model are built by minift itself
(`minift pretrain --size base` rebuilds both) and shipped so that a fresh clone starts
from a well-trained base in seconds instead of pretraining for minutes. A shipped file
is read only after its hash matches the one recorded in code: a truncated or edited file
is a one-line error that says how to rebuild it, never a silently different model.
"""

from __future__ import annotations

import hashlib
import pathlib

from minift.errors import UserError

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"


def sha256_of(path: str | pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[pathlib.Path, str] = {}  # checked once per process


def shipped_file(name: str, sha256: str) -> pathlib.Path:
    """The path of ``assets/name`` after checking its hash (a UserError when it is missing
    or differs: the message names the file and the command that rebuilds it)."""
    path = ASSETS / name
    if _VERIFIED.get(path) == sha256:
        return path
    if not path.is_file():
        raise UserError(
            f"the shipped file {path} is missing; reinstall minift or rebuild it with "
            "`minift pretrain --size base --ship`"
        )
    actual = sha256_of(path)
    if actual != sha256:
        raise UserError(
            f"the shipped file {path} has SHA-256 {actual[:16]}..., expected {sha256[:16]}...: "
            "it is damaged or was changed; reinstall minift or rebuild it with "
            "`minift pretrain --size base --ship`"
        )
    _VERIFIED[path] = sha256
    return path
