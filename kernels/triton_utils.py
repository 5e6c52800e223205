"""Small helpers shared by the Triton launchers (imports Triton: load it lazily).

``tl.dot`` on a GPU needs every tile dimension to be at least 16, while the interpreter
accepts anything, so a launch that would only fail on the GPU is caught here, on the CPU,
by :func:`check_dot_tiles`. The launch decisions that need no Triton (offsets' width,
grids, stages) live in :mod:`.launch`; here are their in-kernel halves.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import interpreting

MIN_DOT = 16  # smallest tl.dot tile dimension the GPU accepts


def _fix_old_interpreter() -> None:
    """Let Triton 3.6's interpreter run under NumPy >= 2.4 (a guarded compatibility fix).

    Its tensors convert to a Python int (a loop bound such as ``range(n_blocks)``) with
    ``int(array of shape (1,))``, which NumPy 2.4 refuses ("only 0-dimensional arrays can
    be converted"); Triton 3.7+ squeezes first. Applied only in interpreter mode, and only
    when the interpreter still has the old conversion.
    """
    try:
        import inspect

        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "minift_fixed", False):
        return
    try:
        old = "int(self.handle.data))" in inspect.getsource(original)
    except (OSError, TypeError):
        return
    if not old:
        return

    def patched(tensor, scope, *args, **kwargs):
        original(tensor, scope, *args, **kwargs)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.minift_fixed = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    _fix_old_interpreter()


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (and >= 1), in plain integers: it runs per launch."""
    return 1 << (max(1, int(n)) - 1).bit_length()


def dot_tile(n: int, cap: int) -> int:
    """A tile size covering ``n`` (a power of two, at least 16, at most ``cap``)."""
    return max(MIN_DOT, min(cap, next_pow2(n)))


def check_dot_tiles(**tiles: int) -> None:
    """Fail loudly (also in the interpreter) on a tile the GPU's tl.dot would reject."""
    for name, size in tiles.items():
        if size < MIN_DOT or size & (size - 1):
            raise ValueError(f"tile {name}={size} must be a power of two >= {MIN_DOT} for tl.dot")


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: fp32 inputs honour torch's TF32 switch, like torch.matmul.

    A GPU's fp32 ``tl.dot`` defaults to TF32 (10-bit mantissa), which would make fp32
    results differ from ``torch.matmul`` at 1e-3; "ieee" keeps full fp32 unless the user
    opted into TF32 for matmuls. fp16/bf16 inputs keep Triton's default, which for them
    changes nothing.
    """
    if dtype != torch.float32:
        return "tf32"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 and not interpreting() else "ieee"


@triton.jit
def grouped_tile(pid, n_rows, n_cols, GROUP: tl.constexpr):
    """Map a 1D program id to a (row, col) tile, walking GROUP rows per column sweep.

    Consecutive programs then share the same few row tiles of the left operand and the
    same column tiles of the right one, so they hit L2 instead of memory (the "grouped
    ordering" of the Triton matmul tutorial).
    """
    per_group = GROUP * n_cols
    group = pid // per_group
    first_row = group * GROUP
    rows_here = tl.minimum(n_rows - first_row, GROUP)
    row = first_row + (pid % per_group) % rows_here
    col = (pid % per_group) // rows_here
    return row, col


@triton.jit
def load_tile(ptr, rows, cols, stride_row, stride_col, row_ok, col_ok):
    """The tile ptr[rows, cols] of a strided 2-D tensor, (len(rows), len(cols)), with 0 where
    a row or column is out of range: padding that adds nothing to a tl.dot. Any strides, so
    a transposed operand is the same call with rows and columns swapped."""
    return tl.load(
        ptr + rows[:, None] * stride_row + cols[None, :] * stride_col,
        mask=row_ok[:, None] & col_ok[None, :],
        other=0.0,
    )


@triton.jit
def store_tile(ptr, rows, cols, stride_row, stride_col, value, row_ok, col_ok):
    """ptr[rows, cols] = value, in ptr's dtype, where both masks hold."""
    tl.store(
        ptr + rows[:, None] * stride_row + cols[None, :] * stride_col,
        value.to(ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def widen(idx, WIDE: tl.constexpr):
    """``idx`` as int64 when WIDE (offsets past 2^31 - 1 elements; :func:`.launch.needs_int64`),
    else unchanged: int32 address arithmetic is the cheaper default."""
    if WIDE:
        idx = idx.to(tl.int64)
    return idx


@triton.jit
def tile_and_head(n_tiles, REVERSE: tl.constexpr):
    """(tile, batch-head) of this program in a flat grid of n_tiles x batch-heads
    (:func:`.launch.flat_grid`). REVERSE starts each head with its last tile: under a
    causal mask the last query tiles have the most keys, and launching the longest work
    first leaves no long program running alone at the end."""
    pid = tl.program_id(0)
    tile = pid % n_tiles
    if REVERSE:
        tile = n_tiles - 1 - tile
    return tile, pid // n_tiles
