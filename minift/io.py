"""Files minift writes: atomic writes, JSON, safetensors.

Every file a user may rely on (a model, an adapter, a checkpoint, a cache entry, a metrics
log) is written to a temporary file beside its destination and renamed over it: the rename
is atomic on POSIX file systems, so a crash leaves the old file or nothing, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    A crash mid-write leaves the old file (or nothing) behind, never a truncated file.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600, and some writers (safetensors) replace it with
        # another 0600 file: give it the mode a plain open() would (0666 - umask), last.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a JSON file minift wrote; a missing or corrupt file is an error naming it."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err})") from None
