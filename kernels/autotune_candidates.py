"""The candidates an autotuner times (:mod:`.autotune`): each kernel's configurations
clamped to the shape and pruned by the shared-memory model, a stable name for each, and the
check that a candidate computes what the fixed table's entry computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .autotune_cache import bucket
from .launch import smem_bytes

MIN_TILE = 16  # tl.dot's smallest tile dimension (triton_utils.MIN_DOT)

# How far a candidate's outputs may sit from the first candidate's, as a fraction of the
# largest output magnitude. Two correct configurations differ only in the order of fp32
# accumulation and in where intermediates are rounded to the input dtype, a few units in
# the last place of the output (fp32: the accumulation order over thousands of terms,
# ~sqrt(K) eps); a configuration that skips or doubles a tile is off by whole terms.
TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 8 * 2.0**-10,
    torch.bfloat16: 8 * 2.0**-7,
}


# A candidate that skips the Triton kernel for the library's own route to the same result
# (cuBLAS for a matmul, dequantize-then-cuBLAS for NF4): a launcher that offers it lets the
# tuner measure, on the device at hand, whether the kernel beats the vendor library for
# this shape, instead of a threshold guessed on another GPU. It merges into the fixed
# entry like any candidate, so its tiles (unused) pass the shared-memory pruning.
UNFUSED = {"UNFUSED": 1}


def describe(config: Mapping) -> str:
    """A compact, stable name for a configuration: ``M128 N64 K64 w8 s3`` (``unfused`` for
    :data:`UNFUSED`, whatever tiles it carries)."""
    if config.get("UNFUSED"):
        return "unfused"
    short = {"num_warps": "w", "num_stages": "s", "GROUP_M": "g"}
    parts = []
    for name in sorted(config):
        label = short.get(name, name.removeprefix("BLOCK_"))
        parts.append(f"{label}{config[name]}")
    return " ".join(parts)


# ----------------------------------------------------------------------- candidates
def prune(
    candidates: Sequence[Mapping],
    tile_dims: Mapping[str, int],
    smem_of: Callable[[dict], tuple[int, int]],
    smem_limit: int,
    capability: tuple[int, int],
    pinned: Mapping | None = None,
) -> list[dict]:
    """The candidates worth timing: ``candidates[0]`` (the fixed table's entry, already
    fitted to the device) as it is, then each other one clamped to the shape (no tile past
    ``max(16, next_pow2(dim))`` for the dims in ``tile_dims``), with the caller's ``pinned``
    entries applied, once each, and only if its ``num_stages`` buffers fit ``smem_limit``
    (``smem_of(config)`` gives its (per-stage, fixed) bytes, as :mod:`.launch` models them).
    """
    first = dict(candidates[0])
    out, seen = [first], {describe(first)}
    for candidate in candidates[1:]:
        config = {**first, **candidate}  # what a candidate leaves out (BLOCK_R, ...) is fixed
        for name, size in tile_dims.items():
            if name in config:
                config[name] = min(config[name], max(MIN_TILE, bucket(size)))
        config.update(pinned or {})
        name = describe(config)
        if name in seen:
            continue
        per_stage, fixed = smem_of(config)
        if smem_bytes(per_stage, fixed, config.get("num_stages", 1), capability) > smem_limit:
            continue
        seen.add(name)
        out.append(config)
    return out


# ------------------------------------------------------------------ output check
def as_list(outputs) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for t in outputs if isinstance(t, torch.Tensor)]


def disagreement(got, want) -> str | None:
    """None when ``got`` matches ``want`` (tensor or sequence of tensors) within
    :data:`TOLERANCE` of the largest finite magnitude of each output; else the reason.
    Equal infinities agree (a log-sum-exp of -inf for a row that sees no key); a NaN never
    does."""
    got, want = as_list(got), as_list(want)
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"output {i} has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if w.numel() == 0:
            continue
        tol = TOLERANCE.get(w.dtype, 0.0)
        g64, w64 = g.detach().double(), w.detach().double()
        finite = w64[torch.isfinite(w64)]
        scale = finite.abs().max().item() if finite.numel() else 1.0
        close = (g64 == w64) | ((g64 - w64).abs() <= tol * max(scale, 1e-30))
        if not bool(close.all()):
            worst = (g64 - w64).abs().nan_to_num(float("inf")).max().item()
            return f"output {i} differs by {worst:.3g} (tolerance {tol:.1e} x {scale:.3g})"
    return None
