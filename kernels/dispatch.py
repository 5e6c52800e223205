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
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

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
