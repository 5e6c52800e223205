"""The one dispatch rule every minift kernel follows.

CUDA tensors with Triton importable take the Triton kernel; everything else takes the
PyTorch reference. The environment variable ``MINIFT_KERNELS`` overrides the rule:

- ``MINIFT_KERNELS=reference`` always runs the PyTorch reference;
- ``MINIFT_KERNELS=triton`` always runs Triton. On CPU tensors that only works through
  Triton's interpreter, which must be switched on (``TRITON_INTERPRET=1``) before Triton
  is first imported, because ``triton.jit`` reads it when a kernel is decorated.

minift must import and run without Triton (it is Linux-only), so nothing here imports
Triton at module level; the kernel modules (``*_triton.py``) are imported lazily, on
first use.

A Triton launch that fails on a real GPU (a compile error, too little shared memory, a
driver that rejects it) falls back to the reference with a one-time warning in the
default mode (:func:`triton_or_reference`); ``MINIFT_KERNELS=triton`` re-raises instead,
so tests comparing the kernels with their references can never pass by falling back.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

T = TypeVar("T")
_failed: dict[Hashable, str] = {}  # kernel call signatures whose Triton launch failed


class KernelFallbackWarning(RuntimeWarning):
    """A Triton launch failed and the PyTorch reference ran instead. A benchmark or a GPU
    test turns it into an error (``-W error::minift.kernels.dispatch.KernelFallbackWarning``)
    so that it never measures, or passes on, the reference by mistake."""


MODES = ("auto", "reference", "triton")


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` would succeed (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton kernels run through the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def kernel_mode() -> str:
    """The mode asked for by ``MINIFT_KERNELS``: ``auto`` (unset), ``reference`` or ``triton``."""
    mode = os.environ.get("MINIFT_KERNELS", "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"MINIFT_KERNELS={mode!r} is not one of {', '.join(MODES)}")
    return mode


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Decide whether a kernel call on ``tensors`` (``None`` entries ignored) runs Triton."""
    mode = kernel_mode()
    present = [t for t in tensors if t is not None]
    if mode == "reference":
        return False
    if mode == "triton":
        if not triton_available():
            raise RuntimeError(
                "MINIFT_KERNELS=triton but triton is not installed (pip install triton)"
            )
        if any(not t.is_cuda for t in present) and not interpreting():
            raise RuntimeError(
                "MINIFT_KERNELS=triton on CPU tensors needs Triton's interpreter: set "
                "TRITON_INTERPRET=1 before anything imports triton"
            )
        return True
    return triton_available() and len(present) > 0 and all(t.is_cuda for t in present)


def triton_or_reference(
    key: Hashable, triton_fn: Callable[[], T], reference_fn: Callable[[], T]
) -> T:
    """``triton_fn()``, or ``reference_fn()`` if it fails to compile or launch.

    ``key`` names the kernel and what its compilation depends on (e.g. ("attention",
    dtype, head dim)). After a failure that key goes straight to the reference (a failing
    compile would otherwise be retried, and paid for, at every call), with one warning.
    Not caught: ValueError (a named problem with the input), CUDA out-of-memory (the
    reference needs more memory, not less), and anything under ``MINIFT_KERNELS=triton``.
    """
    if key in _failed:
        return reference_fn()
    try:
        return triton_fn()
    except (ValueError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as err:
        if kernel_mode() == "triton":
            raise
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        _failed[key] = f"{type(err).__name__}: {first_line}"
        warnings.warn(
            f"minift.kernels: the Triton kernel for {key} failed ({_failed[key]}); using the "
            "PyTorch reference for it from now on (set MINIFT_KERNELS=triton to see the error)",
            KernelFallbackWarning,
            stacklevel=3,
        )
        return reference_fn()


def failed_kernels() -> dict[Hashable, str]:
    """The kernel signatures that fell back to the reference, with their errors."""
    return dict(_failed)


def reset_failures() -> None:
    """Forget past failures (tests; or after fixing the cause in a live session)."""
    _failed.clear()
