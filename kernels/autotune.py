"""Autotuning: each kernel's tile sizes, warps and stages chosen per shape by timing, once.

A Triton kernel's speed hangs on its launch configuration: the BLOCK sizes (the work of one
program: bigger tiles reuse each loaded operand more, but leave fewer programs to fill the
SMs and mask off more of a small dimension), ``num_warps`` (threads per program: more
parallelism inside a tile against fewer registers per thread) and ``num_stages`` (loads in
flight: latency hidden against shared memory). The best choice moves with the shape (a
40-token batch wants small row tiles, 4096 tokens large ones), the dtype and the GPU, and no
model predicts it well enough, so it is measured, as Triton's ``triton.autotune`` and
cuBLAS's heuristic-plus-search do.

Per key (kernel and its variant, shape bucket, dtype, device name, Triton version):

1. candidates: the kernel's fixed table entry first (the configuration the GPU tests check
   against the PyTorch reference), then the short list of its module's ``_space``, each
   clamped so that no tile exceeds the next power of two of its dimension (the rest of the
   tile would be masked-off work), deduplicated, and dropped when its pipeline stages do not
   fit the device's shared memory (:mod:`.launch`'s model, the one the fixed table's stages
   pass);
2. each runs once (compiling it) and its outputs are compared with the first candidate's:
   a configuration that computes something else (a tile the masks miss, a compiler bug at
   one tile shape) is rejected, so a fast wrong one cannot win; one that fails to compile
   or launch is rejected with its error;
3. the survivors are timed (warm-up runs, then the median of a few runs between CUDA
   events) and the fastest is kept;
4. the winner is cached in memory and in ``$MINIFT_HOME/autotune.json`` (written whole, then
   renamed into place); later calls, and later processes, skip 1-3. A cache file that
   cannot be read is ignored with one warning.

Some launchers also offer :data:`UNFUSED`, the library's own route to the same outputs
(cuBLAS, or dequantize-then-cuBLAS for NF4): on the first H100 run the NF4 kernel, which
decodes every weight tile once per row tile, was 4-35x slower than dequantize-then-matmul
for 1,024 or more rows but 2.6-3.5x faster for 16, and the thin matmuls of the LoRA backward
(16 output rows or columns, a 4,096-long reduction) ran at 7-10 TFLOP/s. Which route wins
depends on the shape and the GPU, so the tuner measures it like any tile size; the
decision table says ``unfused`` where the library won.

Shape buckets are powers of two per dimension, so a training run whose token count drifts
does not re-tune at every step; the first shape seen in a bucket decides for it.

Why not ``triton.autotune``: it knows nothing of the shared-memory model, compares no
outputs, keeps its choices in one process only, and cannot run on a CPU; here selection,
output check, cache and pruning are plain Python, tested on the CPU with a fake timer.

Switch: ``MINIFT_AUTOTUNE=0`` keeps the fixed table; unset or 1 tunes on CUDA devices (the
first call of a shape bucket then compiles and times a handful of configurations: seconds
per kernel, once per machine). The interpreter and CPU tensors always take the fixed small
configuration, so the CPU tests stay fast and deterministic. :func:`set_budget` bounds the
seconds spent tuning (a benchmark with a deadline): past it, decisions keep the fixed
table or the best candidate timed so far, and are not written to the cache file;
``MINIFT_TUNE_BUDGET_S`` sets that budget for a whole process (read once, at import).

Compiling ahead: most of a decision's time on a GPU is the compiler's (about a second per
candidate; timing one takes milliseconds), and Triton keeps what it compiled in its cache
on disk for every process. With ``MINIFT_AUTOTUNE_COMPILE=i/n`` a decision compiles (and
runs once) the candidates of shard i of n, in order, and keeps the fixed table: n processes
running the same launches fill the disk cache in parallel, and the process that tunes
afterwards spends its budget timing instead of compiling (``make gpu-check`` does this
beside its GPU tests, with ``scripts/bench_kernels.py --compile-ahead``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from .autotune_cache import AutotuneCacheWarning, bucket, make_key
from .autotune_candidates import UNFUSED, describe, disagreement, prune
from .autotune_tuner import Tuner, tune
from .dispatch import interpreting
from .launch import device_limits_of

__all__ = ["UNFUSED", "AutotuneCacheWarning", "Tuner", "bucket", "choices", "compile_ahead",
           "compile_shard", "describe", "disagreement", "launch_config", "make_key", "paused",
           "prune", "set_budget", "tune", "tuner"]  # fmt: skip

ENV = "MINIFT_AUTOTUNE"
BUDGET_ENV = "MINIFT_TUNE_BUDGET_S"  # seconds of tuning for a whole process, read once below
COMPILE_ENV = "MINIFT_AUTOTUNE_COMPILE"  # "i/n": compile shard i of n of each decision's candidates


def mode() -> bool:
    """``MINIFT_AUTOTUNE``: on when unset or 1, off when 0; anything else is named."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "1", "on", "true"):
        return True
    if value in ("0", "off", "false"):
        return False
    raise ValueError(f"{ENV}={value!r} is not one of 1 (tune on CUDA devices) or 0 (fixed table)")


def compile_shard() -> tuple[int, int] | None:
    """``MINIFT_AUTOTUNE_COMPILE=i/n``: this process compiles shard i of n of every decision's
    candidates and times nothing; None when unset."""
    value = os.environ.get(COMPILE_ENV, "").strip()
    if not value:
        return None
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise ValueError(f"{COMPILE_ENV}={value!r} is not a shard i/n, such as 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"{COMPILE_ENV}={value!r}: the shard i of i/n must be in 0..n-1")
    return i, n


_paused = 0  # depth of paused() blocks


def enabled(device) -> bool:
    """Whether a launch on ``device`` is tuned: CUDA, not the interpreter, not switched off,
    not inside :func:`paused`."""
    return (
        getattr(device, "type", "cpu") == "cuda" and not interpreting() and not _paused and mode()
    )


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Within the block, launches keep the fixed table and nothing is tuned: for a correctness
    check at a shape that is not timed, whose tuning would spend a benchmark's budget on a
    bucket it never measures."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1


# ----------------------------------------------------------------- the process's tuner
def _budget_from_env() -> float | None:
    """``MINIFT_TUNE_BUDGET_S``: a process-wide tuning budget for a caller with a deadline
    (``make gpu-check`` runs each benchmark with one); unset or blank: no limit."""
    value = os.environ.get(BUDGET_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}={value!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise ValueError(f"{BUDGET_ENV}={value!r} must be 0 or more seconds")
    return seconds


_TUNER = Tuner()
_TUNER.budget_s = _budget_from_env()  # set_budget() still overrides it


def tuner() -> Tuner:
    """The process-wide tuner the launchers use."""
    return _TUNER


def set_budget(seconds: float | None) -> None:
    """Allow ``seconds`` more of tuning in this process (None: no limit). A benchmark with
    a deadline sets it, and subtracts :attr:`Tuner.spent` from the time it measures."""
    _TUNER.budget_s = None if seconds is None else _TUNER.spent + seconds


def choices() -> list[dict]:
    """Every decision made (or read from the cache) in this process, oldest first."""
    return list(_TUNER.log)


# ----------------------------------------------------------------------- launches
def launch_config(
    kernel: str,
    device,
    dtype,
    shape: Mapping[str, int],
    variant: Mapping,
    fixed: dict,
    space: Sequence[Mapping] | Callable[[], Sequence[Mapping]],
    pinned: Mapping,
    tile_dims: Mapping[str, int],
    smem_of: Callable[[dict], tuple[int, int]],
    run: Callable[[dict], object],
) -> dict:
    """The configuration a launcher runs with.

    ``fixed`` (the kernel's table entry with the caller's overrides, stages fitted) when
    tuning is off for ``device``; else the tuned choice among ``fixed`` and ``space`` pruned
    for this shape and device (:func:`prune`), with the caller's ``pinned`` overrides kept
    in every candidate (``space`` may be a function returning them, called only when a
    decision is made). ``run(config)`` launches the kernel into fresh outputs and returns
    them; ``shape`` (bucketed) and ``variant`` (the constexpr flags) make the cache key.
    """
    if not enabled(device):
        return fixed
    variant = {**variant, **pinned}  # a caller's pinned tiles make other candidates
    key = _key_of(kernel, shape, variant, dtype, device)
    known = _TUNER.memory.get(key)
    if known is not None:  # the hot path: every launch after the first of its bucket
        return dict(known["config"])
    smem, capability = device_limits_of(device)
    space = space() if callable(space) else space
    candidates = prune([fixed, *space], tile_dims, smem_of, smem, capability, pinned)
    shard = compile_shard()
    if shard is not None:
        compile_ahead(key, candidates, run, *shard)
        return fixed
    return _TUNER.choose(key, candidates, run)


_KEYS: dict[tuple, str] = {}  # each launch signature's readable key, built once
_MAX_KEYS = 4096  # signatures remembered (a growing KV cache makes new ones each token)


def _key_of(kernel: str, shape: Mapping, variant: Mapping, dtype, device) -> str:
    """:func:`make_key` for this launch, from a dictionary of the signatures seen: the key is
    a pure function of them, and building its string costs more than the launch's other
    bookkeeping together."""
    try:
        signature = (kernel, tuple(shape.items()), tuple(variant.items()), dtype, device)
        key = _KEYS.get(signature)
    except TypeError:  # an unhashable variant value: build the key each time
        signature, key = None, None
    if key is None:
        import triton

        key = make_key(kernel, shape, variant, dtype, device_name(device), triton.__version__)
        if signature is not None:
            if len(_KEYS) >= _MAX_KEYS:
                _KEYS.clear()
            _KEYS[signature] = key
    return key


_compiled: set[str] = set()  # the decisions this process has compiled ahead


def compile_ahead(key: str, candidates: Sequence[dict], run, shard: int, shards: int) -> int:
    """Run once (so compile) every ``shards``-th candidate from ``shard`` on, except the
    fixed entry (``candidates[0]``, which the caller launches anyway), once per key. A
    candidate that fails here is left to the tuner, which rejects it with its error. Returns
    how many were run."""
    if key in _compiled:
        return 0
    _compiled.add(key)
    ran = 0
    for config in list(candidates[1:])[shard::shards]:
        try:
            run(dict(config))
            ran += 1
        except Exception:  # noqa: BLE001 - the tuner will reject it, naming the error
            continue
    return ran


def device_name(device) -> str:
    """The GPU's name (part of the cache key: the best tiles differ between GPUs)."""
    if getattr(device, "type", "cpu") != "cuda":
        return str(getattr(device, "type", device))
    return _cuda_name(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index)
