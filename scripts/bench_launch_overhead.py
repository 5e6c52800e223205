"""Python's time to issue the Triton launchers' work, with the kernels themselves stubbed out.

    python scripts/bench_launch_overhead.py          # any machine, no GPU needed (~20 s)

Each launch of a minift kernel passes through Python first: the layer's checks, the
autograd Function, the dispatch, the tile table or the tuner's lookup, int64 and TMA
checks, output buffers, then Triton's argument binding. On a GPU that time overlaps the
kernels of earlier calls, until a layer's kernels get shorter than it: then the GPU waits on
Python, and a benchmark that empties the L2 cache before each call (``triton.testing.
do_bench``) counts the wait inside the kernel's time. This script measures our part alone:
every Triton kernel replaced by a stub that returns at once, tiny CPU tensors, the best of
three rounds of ``--calls`` calls, microseconds per call. Rows: the fixed-table path
(tuning off, as on the CPU) and the tuned path (tuning on, every bucket already decided, as
on a GPU after the first call). Triton's own launch cost is not included (it needs a GPU);
``bench_kernels.py``'s LoRA pieces table measures the whole of it on one (``host ms``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=1000, help="calls per round (3 rounds)")
    p.add_argument("--quick", action="store_true", help="100 calls per round (~3 s)")
    p.add_argument("--out", default=None, help="write launch_overhead.json in this folder")
    return p.parse_args(argv)


class _Stub:
    """Stands for a @triton.jit kernel: ``kernel[grid](...)`` returns at once."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_kernels() -> None:
    from minift.kernels import flash_triton, lora_triton

    for name in ("_fused_lora_kernel", "_matmul_kernel"):
        setattr(lora_triton, name, _Stub())
    for name in ("attn_fwd_kernel", "attn_dkdv_kernel", "attn_dq_kernel", "attn_delta_kernel"):
        setattr(flash_triton, name, _Stub())


def decided_tuner() -> None:
    """Tuning on for CPU tensors, each bucket decided at its first call (the fixed entry):
    later calls take the launch path a GPU takes once its buckets are tuned."""
    from minift.kernels import autotune

    autotune.enabled = lambda device: True
    tuner = autotune.tuner()

    def choose(key, candidates, run):
        tuner.memory[key] = dict(config=dict(candidates[0]))
        return dict(candidates[0])

    tuner.choose = choose


def per_call_us(fn, calls: int) -> float:
    for _ in range(30):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def workloads(torch) -> dict:
    from minift.kernels import attention, lora_linear
    from minift.kernels.lora_triton import fused_lora, matmul

    x = torch.randn(32, 32, requires_grad=True)
    w, g = torch.randn(32, 32), torch.randn(32, 32)
    a, b = torch.randn(16, 32, requires_grad=True), torch.randn(32, 16, requires_grad=True)
    q = torch.randn(1, 2, 32, 16, requires_grad=True)
    go = torch.ones_like(q)
    return {
        "fused_lora (one launch)": lambda: fused_lora(x, w.t(), None, a.t(), b.t(), 2.0),
        "matmul (one launch)": lambda: matmul(x.t(), x, 2.0),
        "lora_linear fwd": lambda: lora_linear(x, w, None, a, b, 2.0),
        "lora_linear fwd+bwd (4 launches)": lambda: lora_linear(x, w, None, a, b, 2.0).backward(g),
        "attention fwd": lambda: attention(q, q, q, causal=True),
        "attention fwd+bwd (4 launches)": lambda: attention(q, q, q, causal=True).backward(go),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    calls = 100 if args.quick else args.calls
    os.environ["TRITON_INTERPRET"] = "1"  # CPU tensors through the Triton launchers
    os.environ["MINIFT_KERNELS"] = "triton"
    os.environ.pop("MINIFT_AUTOTUNE", None)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    stub_kernels()
    rows = {name: [per_call_us(fn, calls)] for name, fn in workloads(torch).items()}
    decided_tuner()
    for name, fn in workloads(torch).items():
        rows[name].append(per_call_us(fn, calls))
    cpu = platform.processor() or platform.machine()
    print(f"Python per call, kernels stubbed (us; {cpu}, Python {platform.python_version()}, "
          f"torch {torch.__version__})")  # fmt: skip
    print(f"  {'call':<36} {'fixed table':>12} {'tuned path':>12}")
    for name, (fixed, tuned) in rows.items():
        print(f"  {name:<36} {fixed:>12.1f} {tuned:>12.1f}")
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {name: dict(fixed_us=f, tuned_us=t) for name, (f, t) in rows.items()}
        (out / "launch_overhead.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
