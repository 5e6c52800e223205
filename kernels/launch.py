"""Launch decisions, as pure functions the CPU can test at the GPU's limits.

A kernel that is correct on small tensors can still fail on a GPU in three ways that no
interpreter run will show, because they depend on sizes and on the device:

- **32-bit offsets.** ``ptr + row * stride`` is computed in int32 when both factors are
  int32, and wraps past 2^31 - 1 elements (a 256k-vocabulary x 16k output layer, a 1M-token
  batch). :func:`needs_int64` looks at the shapes and strides of every tensor a kernel
  touches and says whether its index vectors must be cast to int64 first (a constexpr
  ``WIDE`` flag in the kernels; int32 stays the fast default).
- **Grid limits.** CUDA caps a grid at (2^31 - 1, 65,535, 65,535) programs, so a
  (query tiles, batch x heads) grid breaks at 65,536 batch-heads. :func:`flat_grid` puts
  everything on axis 0 and :func:`check_grid` names any grid that would not launch.
- **Shared memory.** Software pipelining keeps ``num_stages`` copies of the tiles a loop
  loads in shared memory. The LoRA kernel's 128x128x64 bf16 tiles need 34 KB a buffer;
  on sm_90 3 stages hold 3 buffers (102 KB: more than the 99 KB of a consumer GPU, while an
  H100's 227 KB could take six), on sm_80/86/89/120 they hold 2 (68 KB). :func:`pick_stages` chooses the most stages that fit a given size;
  :func:`device_limits` reads that size (and the architecture) from the device.

When a launch fails anyway, :func:`minift.kernels.dispatch.triton_or_reference` falls back
to the PyTorch reference with a one-time warning.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

INT32_MAX = 2**31 - 1
CUDA_MAX_GRID = (2**31 - 1, 65_535, 65_535)  # programs per grid axis (x, y, z)
CONSUMER_SMEM = 101_376  # 99 KB: the opt-in shared memory per block of sm_86 / sm_89
DEFAULT_SMEM = CONSUMER_SMEM  # assumed when the device cannot be asked (the safe side)


# ------------------------------------------------------------------------- offsets
def max_offset(shape: Sequence[int], strides: Sequence[int]) -> int:
    """Largest element offset of a strided view: sum over dims of (size - 1) x stride."""
    if len(shape) != len(strides):
        raise ValueError(f"shape {tuple(shape)} and strides {tuple(strides)} differ in length")
    total = 0
    for n, stride in zip(shape, strides):  # a plain loop: this runs at every launch
        if n == 0:
            return 0
        total += (n - 1) * abs(stride)
    return total


def _shape_strides(t) -> tuple[Sequence[int], Sequence[int]]:
    if isinstance(t, tuple) and len(t) == 2 and isinstance(t[0], (tuple, list)):
        return t  # (shape, strides): a tensor described without allocating it
    return tuple(t.shape), t.stride()


def needs_int64(*tensors) -> bool:
    """True when an offset into any of ``tensors`` can pass 2^31 - 1 elements.

    Each entry is a tensor (a ``meta`` tensor will do) or a ``(shape, strides)`` pair;
    ``None`` entries are skipped. Every product ``index x stride`` a kernel forms for an
    element it actually reads or writes is at most the tensor's largest offset, so int32
    is safe exactly when that offset fits.
    """
    for t in tensors:
        if t is not None and max_offset(*_shape_strides(t)) > INT32_MAX:
            return True
    return False


def layouts(*tensors) -> str:
    """Which dimension of each 2-D operand is contiguous, "r" (rows: the last) or "c"
    (columns: the first), e.g. "rc" for x and a transposed weight view. Part of a tuning key:
    the same shape read along the other dimension coalesces differently and wants other
    tiles (the LoRA backward reads W untransposed where the forward reads W^T)."""
    return "".join("r" if t.stride(-1) == 1 else "c" for t in tensors)


def contiguous(*shape: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, strides) of a contiguous tensor, for outputs not allocated yet."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(shape), tuple(reversed(strides))


# ---------------------------------------------------------------------------- grids
def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host's grid arithmetic (``triton.cdiv`` is a constexpr function
    in recent Tritons: a few microseconds a call on the launch path)."""
    return -(-a // b)


def check_grid(grid: Sequence[int]) -> tuple[int, ...]:
    """``grid`` as a tuple, or a ValueError naming the axis over CUDA's limit."""
    grid = tuple(int(g) for g in grid)
    if not 1 <= len(grid) <= 3:
        raise ValueError(f"a grid has 1 to 3 axes, got {grid}")
    for axis, (n, cap) in enumerate(zip(grid, CUDA_MAX_GRID)):
        if n > cap:
            raise ValueError(
                f"grid {grid}: axis {axis} has {n:,} programs, over CUDA's limit of {cap:,}"
            )
    return grid


def grid_fits(grid: Sequence[int]) -> bool:
    try:
        check_grid(grid)
    except ValueError:
        return False
    return True


def flat_grid(n_tiles: int, n_batch_heads: int) -> tuple[int]:
    """One axis of ``n_tiles x n_batch_heads`` programs (up to 2^31 - 1, never 65,535).

    Program ``pid`` works on tile ``pid % n_tiles`` of batch-head ``pid // n_tiles``:
    consecutive programs share a head, so its keys and values stay in L2.
    """
    return check_grid((max(1, n_tiles * n_batch_heads),))  # type: ignore[return-value]


# -------------------------------------------------------------------- shared memory
SMEM_SLACK = 1024  # alignment padding and small vectors the tile model leaves out


def pipeline_buffers(num_stages: int, capability: tuple[int, int] = (9, 0)) -> int:
    """Copies of a loop's tiles Triton keeps in shared memory for ``num_stages`` stages.

    Compiled for sm_90 (Triton 3.8, bf16, on the CPU: ``triton.compile`` to a GPUTarget; see
    tests/test_kernels_compile.py), the LoRA kernel's shared memory is exactly stages x
    tiles; for sm_80/86 and sm_120 it is (stages - 1) x tiles: there the MMA reading a
    buffer is synchronous, while Hopper's (and data-centre Blackwell's) is asynchronous and
    holds one more. Architectures not listed are assumed to hold all ``num_stages``.
    """
    stages = max(1, num_stages)
    synchronous_mma = capability[0] in (8, 12)
    return max(1, stages - 1) if synchronous_mma else stages


def smem_bytes(
    per_stage: int, fixed: int, num_stages: int, capability: tuple[int, int] = (9, 0)
) -> int:
    """Shared memory of a pipelined loop: the buffers of the tiles it loads each iteration
    (``per_stage`` bytes each), tiles loaded once (``fixed``) and :data:`SMEM_SLACK`."""
    return fixed + pipeline_buffers(num_stages, capability) * per_stage + SMEM_SLACK


def pick_stages(
    per_stage: int,
    fixed: int,
    smem_limit: int,
    max_stages: int,
    capability: tuple[int, int] = (9, 0),
) -> int:
    """The most pipeline stages (1 .. ``max_stages``) whose buffers fit ``smem_limit``.

    1 when even one stage does not fit: the launch may then fail, and the dispatch falls
    back to the reference (the tiles, not the stages, would have to shrink).
    """
    best = 1
    for stages in range(1, max(1, max_stages) + 1):
        if smem_bytes(per_stage, fixed, stages, capability) <= smem_limit:
            best = stages
    return best


def lora_smem(block_m: int, block_n: int, block_k: int, block_r: int, elem: int) -> tuple[int, int]:
    """(per_stage, fixed) bytes of the fused LoRA kernel: X, Wt and At tiles each step;
    the epilogue's (BLOCK_M, R) and (R, BLOCK_N) operands once."""
    per_stage = (block_m * block_k + block_k * block_n + block_k * block_r) * elem
    return per_stage, (block_m * block_r + block_r * block_n) * elem


def lora_tma_smem(
    block_m: int, block_n: int, block_k: int, block_r: int, elem: int
) -> tuple[int, int]:
    """(per_stage, fixed) bytes of the TMA LoRA kernel: X and W tiles each step; the
    epilogue's rank-r operands and the (BLOCK_M, BLOCK_N) tile the TMA store copies from."""
    per_stage = (block_m * block_k + block_k * block_n) * elem
    return per_stage, (block_m * block_r + block_r * block_n + block_m * block_n) * elem


def matmul_smem(block_m: int, block_n: int, block_k: int, elem: int) -> tuple[int, int]:
    """(per_stage, fixed) bytes of the plain matmul kernel: A and B tiles each step."""
    return (block_m * block_k + block_k * block_n) * elem, 0


def sgmv_smem(block_m: int, block_n: int, block_k: int, block_r: int, elem: int) -> tuple[int, int]:
    """(per_stage, fixed) bytes of the multi-LoRA shrink-expand kernel: the gathered X rows
    and an adapter's At tile each step; its (BLOCK_R, BLOCK_N) Bt tile once."""
    return (block_m * block_k + block_k * block_r) * elem, block_r * block_n * elem


def nf4_smem(block_m: int, block_n: int, block_k: int, elem: int) -> tuple[int, int]:
    """(per_stage, fixed) bytes of the NF4 matmul, fitted to what Triton 3.8 allocates (sm_86
    and sm_90, bf16, 6 tile shapes x 1-4 stages): each stage holds the X tile and 8 bytes per
    weight element of the decode's gathers (the fp32 code level and block scale); the
    decoded W^T tile never reaches shared memory on its own. Exact on sm_86 (stages - 1
    buffers); on sm_90 the compiler keeps stages - 1 buffers plus the two MMA operands,
    less than the stages full buffers this model counts (the safe side)."""
    return block_m * block_k * elem + 8 * block_k * block_n, 0


def attention_smem(
    pass_: str, block_m: int, block_n: int, block_d: int, elem: int
) -> tuple[int, int]:
    """(per_stage, fixed) bytes of a flash attention pass.

    fwd: Q once, K and V each step; dkdv: K and V once, Q, dO and the fp32 lse and delta
    rows each step; dq: Q and dO once, K and V each step. The backward passes also keep an
    fp32 (BLOCK_M, BLOCK_N) scratch, where the compiler changes the probabilities' layout
    between their two dots (seen on sm_80/86; sm_90 needs less).
    """
    q_side, k_side = block_m * block_d * elem, block_n * block_d * elem
    scratch = 4 * block_m * block_n
    if pass_ == "fwd":
        return 2 * k_side, q_side
    if pass_ == "dkdv":
        return 2 * q_side + 2 * 4 * block_m, 2 * k_side + scratch
    if pass_ == "dq":
        return 2 * k_side, 2 * q_side + scratch
    raise ValueError(f"unknown attention pass {pass_!r}: expected fwd, dkdv or dq")


@functools.cache
def device_limits(device_index: int = 0) -> tuple[int, tuple[int, int]]:
    """(opt-in shared memory per block in bytes, compute capability) of a CUDA device.

    torch exposes the memory as ``shared_memory_per_block_optin`` in recent versions,
    Triton's driver as ``max_shared_mem``; either may be missing, so both are tried, then
    99 KB and sm_90 (the safe side of both) are assumed.
    """
    smem, capability = 0, (9, 0)
    try:
        import torch

        capability = tuple(torch.cuda.get_device_capability(device_index))
        props = torch.cuda.get_device_properties(device_index)
        smem = int(getattr(props, "shared_memory_per_block_optin", 0) or 0)
    except Exception:  # noqa: BLE001 - no CUDA, or an older torch
        pass
    if not smem:
        try:
            from triton.runtime import driver

            props = driver.active.utils.get_device_properties(device_index)
            smem = int(props["max_shared_mem"])
        except Exception:  # noqa: BLE001 - the interpreter, or a driver API that moved
            smem = DEFAULT_SMEM
    return smem, capability


def device_limits_of(device) -> tuple[int, tuple[int, int]]:
    """:func:`device_limits` for a torch device; the safe defaults off CUDA."""
    if getattr(device, "type", "cpu") != "cuda":
        return DEFAULT_SMEM, (9, 0)
    return device_limits(device.index if device.index is not None else 0)


def stages_for(device, per_stage: int, fixed: int, max_stages: int) -> int:
    """:func:`pick_stages` for the shared memory and architecture of ``device``."""
    smem, capability = device_limits_of(device)
    return pick_stages(per_stage, fixed, smem, max_stages, capability)


# ------------------------------------------------------------------- introspection
_launches: dict[str, dict] = {}


def record_launch(name: str, compiled, config: dict) -> None:
    """Remember a launch's configuration and, when Triton returns its compiled kernel,
    the shared memory the compiler actually allocated (``metadata.shared``), so the GPU
    check can set it beside :func:`pick_stages`' estimate."""
    metadata = getattr(compiled, "metadata", None)
    shared = getattr(metadata, "shared", None)
    if shared is None and isinstance(metadata, dict):
        shared = metadata.get("shared")
    _launches[name] = {**config, "shared": int(shared) if shared is not None else None}


def last_launch(name: str) -> dict | None:
    """The configuration of the last launch of kernel ``name`` (None if never launched)."""
    return _launches.get(name)
