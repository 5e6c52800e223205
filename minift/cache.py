"""The build-once cache: an entry (a file or a folder) is built by one process, under a
lock, and is either complete or absent.

    path = build_once(path, build)      # build(tmp) writes the entry at tmp

Under an exclusive lock on ``<path>.lock``, an entry that exists is complete, because it
only ever appears by a rename: ``build`` writes the whole entry at a temporary sibling
``.<name>.partial-<pid>``, which is renamed to ``path`` once ``build`` returns (a rename
is atomic on POSIX file systems). A build that raises leaves nothing behind; a process
killed mid-build leaves its temporary sibling, which the next build removes (it holds the
lock, so nobody else is writing there). Parallel processes (test workers, lessons) wait
on the lock and find the entry the first one built.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import shutil
from collections.abc import Callable, Iterator, Sequence


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive inter-process lock on ``<path>.lock``, held for the ``with`` block."""
    path = pathlib.Path(str(path) + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def partial_paths(path: str | os.PathLike) -> list[pathlib.Path]:
    """Temporary siblings of ``path`` that builds of it left (or are writing)."""
    path = pathlib.Path(path)
    return sorted(path.parent.glob(f".{path.name}.partial-*"))


def is_complete(path: pathlib.Path, contents: Sequence[str] = ()) -> bool:
    """``path`` exists and, for a folder, holds every file named in ``contents``."""
    return path.exists() and all((path / name).exists() for name in contents)


def build_once(
    path: str | os.PathLike,
    build: Callable[[pathlib.Path], object],
    contents: Sequence[str] = (),
) -> pathlib.Path:
    """Return ``path``, building it first with ``build(tmp)`` unless it is complete.

    ``build`` receives a path that does not exist yet and writes the entry there (a file,
    or a folder it creates); the entry becomes ``path`` by one rename once ``build``
    returns. ``contents`` names the files a complete folder holds: the build is checked to
    have written them, and a folder at ``path`` that lacks one (left in place by an older
    minift, which wrote its entries where they stand) is removed and built again."""
    path = pathlib.Path(path)
    if is_complete(path, contents):
        return path
    with file_lock(path):
        if is_complete(path, contents):  # another process built it while we waited
            return path
        for stale in [path, *partial_paths(path)]:
            _remove(stale)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            build(tmp)
            missing = [name for name in contents if not (tmp / name).exists()]
            if not tmp.exists() or missing:
                raise RuntimeError(f"building {path} wrote no {missing or 'entry'}")
            os.replace(tmp, path)
        finally:
            _remove(tmp)  # after a failed build; after the rename there is nothing there
    return path


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
