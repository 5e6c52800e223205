"""The autotuner's memory across processes: keys and the JSON cache file.

A decision is stored under a readable key (kernel and its constexpr variant, the shape's
power-of-two buckets, dtype, GPU name, Triton version: a new GPU or compiler re-tunes) in
``$MINIFT_HOME/autotune.json``. Writes are atomic (a temporary file renamed into place)
after re-reading the file, so processes tuning side by side (one per GPU under torchrun)
lose nothing but a race's last entry; a file that cannot be read is ignored with one warning
and replaced on the next write, never a crash.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings
from collections.abc import Mapping

CACHE_FILE = "autotune.json"


class AutotuneCacheWarning(RuntimeWarning):
    """The autotuning cache file could not be read; it is ignored (and rewritten)."""


def bucket(n: int) -> int:
    """The shape bucket of a dimension: its next power of two."""
    n = max(1, int(n))
    return 1 << (n - 1).bit_length()


def default_cache_path() -> pathlib.Path:
    """``$MINIFT_HOME/autotune.json`` (the folder of minift.utils.minift_home: the kernels
    import nothing from minift, so it is read here the same way)."""
    home = os.environ.get("MINIFT_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "minift"
    )
    return pathlib.Path(home) / CACHE_FILE


def make_key(kernel: str, shape: Mapping, variant: Mapping, dtype, device_name: str,
             triton_version: str) -> str:  # fmt: skip
    """``kernel [variant] | shape buckets | dtype | device | triton version``: readable, so
    the cache file and the benchmark's table can be read by a person."""
    dims = " ".join(f"{k}={bucket(v)}" for k, v in shape.items())
    flags = " ".join(f"{k}={v}" for k, v in variant.items())
    dtype = str(dtype).removeprefix("torch.")
    return f"{kernel}{' [' + flags + ']' if flags else ''} | {dims} | {dtype} | {device_name} | triton {triton_version}"


class CacheFile:
    """The entries of one cache file, read once, written entry by entry."""

    def __init__(self, path: pathlib.Path | str | None = None):
        self.path = pathlib.Path(path) if path is not None else None
        self._entries: dict[str, dict] | None = None

    def cache_path(self) -> pathlib.Path:
        return self.path if self.path is not None else default_cache_path()

    def read(self) -> dict[str, dict]:
        """The cache file's entries ({} when absent; {} and one warning when unreadable)."""
        if self._entries is None:
            path = self.cache_path()
            self._entries = {}
            if path.exists():
                try:
                    data = json.loads(path.read_text())
                    if not isinstance(data, dict):
                        raise ValueError(f"a JSON {type(data).__name__}, not an object")
                    self._entries = {k: v for k, v in data.items() if _valid_entry(v)}
                except (OSError, ValueError) as err:
                    warnings.warn(
                        f"minift.kernels.autotune: ignoring the unreadable cache {path} "
                        f"({type(err).__name__}: {err}); configurations will be tuned again",
                        AutotuneCacheWarning,
                        stacklevel=3,
                    )
        return self._entries

    def write(self, key: str, entry: dict) -> None:
        """Add one entry to the cache file: re-read (another process may have added some),
        merge, write to a temporary file and rename it into place (atomic on POSIX)."""
        path = self.cache_path()
        self._entries = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AutotuneCacheWarning)  # warned once already
            data = {**self.read(), key: entry}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
            self._entries = data
        except OSError as err:  # a read-only home: the choice still holds in memory
            warnings.warn(f"minift.kernels.autotune: cannot write {path}: {err}",
                          AutotuneCacheWarning, stacklevel=3)  # fmt: skip


def _valid_entry(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("config"), dict)
        and all(isinstance(v, int) for v in entry["config"].values())
    )
