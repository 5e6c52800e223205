"""What Hopper's tensor memory accelerator (TMA) can copy, checked before a TMA kernel is
offered (:mod:`.lora_tma_triton`, :mod:`.flash_fwd_tma_triton`).

A TMA copy moves a whole tile described on the host by a tensor descriptor (base, shape,
strides, tile shape): the base and every stride but the last must be multiples of 16 bytes,
the last stride 1, and the device sm_90 or later. Triton's interpreter emulates descriptors,
so the CPU tests run the TMA kernels too.

``MINIFT_TMA=0`` switches every TMA kernel off (no candidate offered, a forced launch
refused): ``make gpu-check`` sets it when its TMA probe (scripts/probe_tma.py) fails on the
device, so a kernel that faults there cannot poison the CUDA context of the benchmarks.
"""

from __future__ import annotations

import os

import torch

from .dispatch import interpreting

try:  # Triton >= 3.3; older ones never offer the TMA kernels
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the installed Triton
    TensorDescriptor = None

__all__ = ["TMA_ALIGN", "TMA_ENV", "TensorDescriptor", "describable", "unavailable_on"]

TMA_ALIGN = 16  # bytes: the base and every stride but the last
TMA_ENV = "MINIFT_TMA"  # "0": no TMA kernel is offered or launched


def describable(t: torch.Tensor) -> bool:
    """Whether a descriptor can span ``t`` as it is: unit last stride, 16-byte aligned base
    and other strides."""
    elem = t.element_size()
    return (
        t.stride(-1) == 1
        and all((stride * elem) % TMA_ALIGN == 0 for stride in t.stride()[:-1])
        and t.data_ptr() % TMA_ALIGN == 0
    )


def unavailable_on(device: torch.device) -> str | None:
    """Why no TMA kernel can run on ``device`` with this Triton, or None when one can."""
    if os.environ.get(TMA_ENV) == "0":
        return f"TMA kernels are switched off ({TMA_ENV}=0)"
    if TensorDescriptor is None:
        return "this Triton has no tensor descriptors"
    if interpreting():
        return None
    if device.type != "cuda":
        return "TMA runs on CUDA devices (or the interpreter)"
    if torch.cuda.get_device_capability(device) < (9, 0):
        return "TMA needs sm_90 or later"
    return None
