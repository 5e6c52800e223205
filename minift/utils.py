"""Small shared helpers: fast mode, the cache and output folders, devices, peak memory."""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def fast_mode() -> bool:
    """True when MINIFT_FAST is set: tiny base model, few steps (how tests run lessons)."""
    return os.environ.get("MINIFT_FAST", "0") not in ("", "0", "false", "False")


def minift_home() -> pathlib.Path:
    """Cache folder for corpora, tokenizers and base models ($MINIFT_HOME)."""
    home = os.environ.get("MINIFT_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "minift"
    )
    path = pathlib.Path(home)
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_dir(*parts: str) -> pathlib.Path:
    """Folder for plots, metrics and results ($MINIFT_OUT, default ./runs)."""
    path = pathlib.Path(os.environ.get("MINIFT_OUT", "runs"), *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------- memory
_RSS_BASELINE_KB = 0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so the baseline RSS is live memory only and
    the next peak measures what the measured code allocates (glibc keeps freed pages)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_memory(device: torch.device | str = "cpu") -> None:
    """Start a peak-memory measurement. CUDA: the allocator's peak. CPU (Linux): the
    process's peak resident set (VmHWM), reset through /proc/self/clear_refs."""
    global _RSS_BASELINE_KB
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    _release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _RSS_BASELINE_KB = _status_kb("VmRSS")
    except OSError:
        _RSS_BASELINE_KB = -1


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory since reset_peak_memory, in MB: allocated bytes on CUDA, growth of the
    resident set over its value at the reset on the CPU (NaN where /proc is unavailable)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if _RSS_BASELINE_KB < 0:
        return float("nan")
    try:
        return max(0, _status_kb("VmHWM") - _RSS_BASELINE_KB) / 1024
    except OSError:
        return float("nan")
