"""Benchmark minift's Triton kernels on a GPU: fused LoRA, flash and block-sparse attention.

    python scripts/bench_kernels.py                # on a CUDA GPU, all shapes, under 8 minutes
    python scripts/bench_kernels.py --quick        # on a CUDA GPU, the goal shapes, ~1.5 minutes
    python scripts/bench_kernels.py --smoke        # tiny shapes on the CPU interpreter

Side by side, bf16, in one run:

- LoRA: the fused LoRA linear layer's forward + backward against the same frozen layer
  without the low-rank path (its matmuls alone: the floor) and against eager LoRA (PEFT's
  layer: three F.linear calls), 4096 -> 4096, r = 16 (and 8, 64), thousands of tokens;
- attention: flash attention forward and backward in TFLOP/s against every SDPA backend
  this torch has (and FlexAttention), T = 4096, head dim 128, causal first;
- block-sparse: its time against density x the dense kernel's time, and against
  FlexAttention on the same block mask.

Before timing, each kernel's output and gradients are compared with a float32 reference on
fresh random inputs (relative error ||out - ref|| / ||ref||, printed); a kernel that fails
is not timed, its section is marked failed and the others go on. The first call of each
shape (outside the timed runs) autotunes every kernel it launches (minift.kernels.autotune;
``MINIFT_AUTOTUNE=0`` times the fixed table instead), and each section ends with a table of
the configurations chosen per kernel and shape bucket, with the fixed table's time beside
the winner's. Timings are medians of ``triton.testing.do_bench`` (CUDA events) after
warm-up. Each section has a share of the time budget (tuning not counted: it has its own,
``--tune-budget-s``, also shared out by section) and notes the rows it skipped when its share
runs out. Tables and the goals go to stdout; ``results.json`` and ``bench_kernels.png`` to
``--out``, results.json rewritten after every section. Exit status 1 when a check or a section failed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import traceback

import torch
import torch.nn.functional as F

GOALS = """goals: LoRA fused <= 1.10x base matmul and < eager; attention fwd >= 0.9x best SDPA and
>= 400 TFLOP/s, bwd >= 0.8x; block-sparse time <= 1.15x density x dense, and <= FlexAttention"""
# Dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets, without sparsity); the most
# specific name first. The achieved fraction of docs/kernels.md's roofline table is the
# measured TFLOP/s over this.
PEAK_BF16 = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}
SHARES = {"lora": 0.15, "attention": 0.45, "sparse": 0.40}  # of the time budget
# Of the tuning budget (what a section leaves goes on to the next): the LoRA layer's four
# launches offer ~40 candidates, the three dense attention passes ~20, and the sparse rows
# reuse the dense passes' space at other shapes. Within a section each decision may spend
# half of what is left (minift.kernels.autotune_tuner.DECISION_SHARE).
TUNE_SHARES = {"lora": 0.4, "attention": 0.45, "sparse": 0.15}
GOAL_T, GOAL_D = 4096, 128  # the attention goal's shape (causal)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    p.add_argument(
        "--quick", action="store_true", help="GPU: only the goal shapes (for make gpu-check)"
    )
    p.add_argument(
        "--out", default="runs/bench_kernels", help="folder for results.json and the plot"
    )
    p.add_argument("--only", default="lora,attention,sparse", help="comma-separated sections")
    p.add_argument(
        "--compile-ahead", action="store_true",
        help="GPU: only launch the timed kernels once, so that MINIFT_AUTOTUNE_COMPILE=i/n "
             "compiles shard i of their tuning candidates (make gpu-check, beside its tests)",
    )  # fmt: skip
    p.add_argument("--budget-s", type=float, default=None, help="time budget (420 s; quick 100)")
    p.add_argument(
        "--tune-budget-s", type=float, default=None,
        help="seconds of autotuning allowed, beside the time budget (240 s; quick 60)",
    )  # fmt: skip
    return p.parse_args(argv)


class CheckFailed(Exception):
    """A kernel disagrees with its reference: its section stops before timing it."""


class Bench:
    """Timing, time budget and bookkeeping shared by the sections."""

    def __init__(self, smoke: bool, quick: bool, budget_s: float):
        self.smoke, self.quick = smoke, quick
        self.end, self.deadline = self.clock() + budget_s, 0.0
        self.skipped: list[str] = []
        self.failed: set[str] = set()
        self.checks: list[dict] = []
        self.device = "cpu" if smoke else "cuda"
        self.dtype = torch.float32 if smoke else torch.bfloat16  # interpreter has no bf16

    @staticmethod
    def clock() -> float:
        """Seconds of benchmarking: wall-clock time less the time spent autotuning."""
        from minift.kernels import autotune

        return time.time() - autotune.tuner().spent

    def start_section(self, share: float, later: float) -> None:
        """This section's deadline: its share of what is left (unused time carries on)."""
        now = self.clock()
        self.deadline = now + (self.end - now) * share / (share + later)

    def over(self, what: str) -> bool:
        if self.clock() > self.deadline:
            self.skipped.append(what)
            return True
        return False

    def ms(self, fn, grads=()) -> float:
        """Median milliseconds of ``fn()``; ``grads`` are reset between backward runs."""
        if self.smoke:  # no CUDA events on the CPU, and the interpreter is slow: one run
            start = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - start)
        from triton.testing import do_bench

        fn()  # compile (Triton, torch.compile) outside do_bench's run-count estimate
        torch.cuda.synchronize()
        warmup, rep = (5, 25) if self.quick else (10, 60)
        return do_bench(fn, warmup=warmup, rep=rep, grad_to_none=list(grads), return_mode="median")

    def host_ms(self, fn, backward: torch.Tensor | None = None, grads=(), calls: int = 20) -> float:
        """Milliseconds of Python per call of ``fn`` (or ``fn().backward(backward)``): the time
        to issue its launches, calls back to back without waiting for the GPU. Where it
        exceeds the GPU time the GPU waits on Python, and :meth:`ms` (which empties the L2
        cache between calls) counts that wait too."""
        run = fn if backward is None else lambda: fn().backward(backward)

        def call():
            for t in grads:
                t.grad = None
            run()

        for _ in range(3):
            call()
        if not self.smoke:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        spent = time.perf_counter() - start
        if not self.smoke:
            torch.cuda.synchronize()
        return 1e3 * spent / calls

    def pass_ms(self, name: str, fn, backward: torch.Tensor | None, grads=()) -> float | None:
        """Time ``fn`` (forward) or ``fn().backward(backward)``; None if a baseline rejects
        this shape or device (reported once per baseline)."""
        run = fn if backward is None else lambda: fn().backward(backward)
        try:
            return self.ms(run, grads)
        except Exception as err:  # noqa: BLE001 - a baseline this build lacks, or a compile error
            if name not in self.failed:
                self.failed.add(name)
                print(f"  {name} unavailable here: {type(err).__name__}: {_first_line(err)}")
            return None

    def randn(self, *shape, grad=False):
        return torch.randn(*shape, device=self.device, dtype=self.dtype).requires_grad_(grad)

    def check(self, name: str, got, want, tol: float = 2e-2) -> float:
        """Relative error of ``got`` against the float32 ``want`` (tensors or sequences of
        them: output then gradients); raises CheckFailed past ``tol``."""
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        want = list(want) if isinstance(want, (list, tuple)) else [want]
        errs = [rel_err(g, w) for g, w in zip(got, want)]
        worst = max(errs)
        parts = f"out {errs[0]:.2e}" + (f", grads max {max(errs[1:]):.2e}" if errs[1:] else "")
        ok = worst < tol and all(torch.isfinite(g).all() for g in got)
        print(f"  check {name:<32} rel err {parts} (tol {tol:.0e}){'' if ok else '  FAILED'}")
        self.checks.append(dict(name=name, rel_err_out=errs[0], rel_err_max=worst, ok=bool(ok)))
        if not ok:
            raise CheckFailed(f"{name}: relative error {worst:.2e} over {tol:.0e}")
        return worst


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:120]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def grads_of(fn, inputs, g):
    """fn(*inputs) and the gradients of <fn(*inputs), g> w.r.t. the inputs that need them."""
    out = fn(*inputs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return [out.detach(), *torch.autograd.grad(out, wrt, g)]


def fp32(*tensors):
    return [t.detach().float().requires_grad_(t.requires_grad) for t in tensors]


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}\n" + " | ".join(f"{h:>11}" for h in header))
    for row in rows:
        cells = ["-" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c) for c in row]
        print(" | ".join(f"{c:>11}" for c in cells))


def launch_info(results: dict, names: list[str]) -> None:
    """The stages and the shared memory the compiler allocated for the last launches."""
    from minift.kernels import launch

    smem, capability = launch.device_limits_of(torch.device(results.get("device_type", "cpu")))
    seen = {row["kernel"] for row in results.get("launches", [])}
    for name in names:
        info = launch.last_launch(name)
        if info is None or name in seen:
            continue
        keep = {k: v for k, v in info.items() if k.startswith("BLOCK") or k in ("num_warps",)}
        row = dict(kernel=name, stages=info.get("num_stages"), shared=info.get("shared"),
                   smem_limit=smem, capability=list(capability), **keep)  # fmt: skip
        results.setdefault("launches", []).append(row)
        shared = f"{row['shared']:,} B" if row["shared"] is not None else "n/a"
        print(f"  launch {name:<15} stages {row['stages']}, shared memory {shared} "
              f"of {smem:,} B, tiles {keep}")  # fmt: skip


def tuning_info(results: dict) -> None:
    """The autotuner's decisions since the last call: kernel and shape bucket, the chosen
    configuration, how it was chosen, and the fixed table's time against the winner's."""
    from minift.kernels import autotune

    rows = results.setdefault("autotune", [])
    new = autotune.choices()[len(rows) :]
    for d in new:
        kernel, shape, dtype, *_ = (part.strip() for part in d["key"].split("|"))
        times = d.get("times_us", {})
        best = times.get(autotune.describe(d["config"]))
        fixed = times.get(d.get("fixed"))
        rows.append(dict(kernel=kernel, shape=shape, dtype=dtype,
                         config=autotune.describe(d["config"]), source=d["source"],
                         candidates=d.get("candidates"), rejected=len(d.get("rejected", {})),
                         fixed_us=fixed, best_us=best,
                         speedup=fixed / best if fixed and best else None))  # fmt: skip
    if new:
        header = ["kernel", "shape", "config", "source", "candidates", "rejected", "fixed us",
                  "best us", "speedup"]  # fmt: skip
        keys = ["kernel", "shape", "config", "source", "candidates", "rejected", "fixed_us",
                "best_us", "speedup"]  # fmt: skip
        table("Autotuned configurations", header, [[r[k] for k in keys] for r in rows[-len(new) :]])
        for d in new:
            for name, why in d.get("rejected", {}).items():
                print(f"  rejected {d['key'].split(' |')[0]} {name}: {why}")


# ----------------------------------------------------------------------------- LoRA
def lora_variants(x, w, a, bm, scaling):
    from minift.kernels import lora_linear

    return {
        "fused": lambda: lora_linear(x, w, None, a, bm, scaling),
        "eager": lambda: F.linear(x, w) + scaling * F.linear(F.linear(x, a), bm),  # PEFT's layer
        "base": lambda: F.linear(x, w),  # the frozen layer alone: dx only in the backward
    }


# ------------------------------------------------------------------- timed shapes
# Each section's timed shapes, in one place: the sections time them, --compile-ahead
# compiles their tuning candidates (the same launches, so the same compiled variants).
def lora_shapes(b: Bench) -> tuple[int, int, int, tuple[int, ...]]:
    """(tokens, in, out, ranks) of the LoRA layer."""
    if b.smoke:
        return 40, 48, 48, (8,)
    if b.quick:
        return 4096, 4096, 4096, (16,)
    return 8192, 4096, 4096, (16, 8, 64)


def attention_shapes(
    b: Bench,
) -> tuple[int, int, tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
    """(batch, heads, head dims, lengths, causal flags) of dense attention."""
    if b.smoke:
        return 1, 2, (16,), (40,), (True, False)
    if b.quick:
        return 4, 32, (GOAL_D,), (GOAL_T,), (True,)
    return 4, 32, (128, 64), (4096, 1024, 2048, 8192, 16384), (True, False)


def sparse_shapes(b: Bench) -> tuple[int, int, int, int, tuple[int, ...]]:
    """(batch, heads, head dim, layout block, lengths) of block-sparse attention."""
    if b.smoke:
        return 1, 2, 16, 16, (96,)
    if b.quick:
        return 2, 16, 128, 128, (8192,)
    return 2, 16, 128, 128, (8192, 16384, 32768)


def compile_ahead(b: Bench, sections: list[str]) -> None:
    """Launch each timed kernel once, forward and backward, at every timed shape, with
    nothing checked or timed: under ``MINIFT_AUTOTUNE_COMPILE=i/n`` each launch compiles
    shard i of its tuning candidates into Triton's disk cache (minift.kernels.autotune)."""
    from minift.kernels import attention, block_sparse_attention, lora_linear

    for name in sections:
        start = time.time()
        if name == "lora":
            m, k, n, ranks = lora_shapes(b)
            x, w, g = b.randn(m, k, grad=True), b.randn(n, k) / k**0.5, b.randn(m, n)
            for r in ranks:
                a, bm = (b.randn(r, k) / k**0.5).requires_grad_(), b.randn(n, r, grad=True)
                lora_linear(x, w, None, a, bm, 2.0).backward(g)
        elif name == "attention":
            bsz, h, dims, lengths, causals = attention_shapes(b)
            for d in dims:
                for t in lengths:
                    q, k, v = (b.randn(bsz, h, t, d, grad=True) for _ in range(3))
                    for causal in causals:
                        attention(q, k, v, causal=causal).backward(b.randn(bsz, h, t, d))
        elif name == "sparse":
            bsz, h, d, bs, lengths = sparse_shapes(b)
            for t in lengths:
                q, k, v = (b.randn(bsz, h, t, d, grad=True) for _ in range(3))
                g = b.randn(bsz, h, t, d)
                attention(q, k, v, causal=True).backward(g)  # the dense baseline: its own bucket
                for layout in sparse_layouts(t, bs, h, b.quick or b.smoke).values():
                    out = block_sparse_attention(q, k, v, layout.to(b.device), bs, causal=True)
                    out.backward(g)
        if b.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        print(f"  {name}: launched in {time.time() - start:.1f} s", flush=True)


def bench_lora(b: Bench, results: dict) -> None:
    from minift.kernels import lora_linear, lora_linear_reference

    m, k, n, ranks = lora_shapes(b)
    x, w, g = b.randn(m, k, grad=True), b.randn(n, k) / k**0.5, b.randn(m, n)
    rows = []
    results["lora"] = []
    for r in ranks:
        a, bm = (b.randn(r, k) / k**0.5).requires_grad_(), b.randn(n, r, grad=True)
        ref = lambda x_, a_, b_: lora_linear_reference(x_, w.float(), None, a_, b_, 2.0)  # noqa: E731
        want = grads_of(ref, fp32(x, a, bm), g.float())
        got = grads_of(lambda x_, a_, b_: lora_linear(x_, w, None, a_, b_, 2.0), (x, a, bm), g)
        b.check(f"lora r={r} fwd+bwd", got, want)
        launch_info(results, ["fused_lora", "matmul"])
        for pass_, backward in (("fwd", None), ("fwd+bwd", g)):
            if b.over(f"lora r={r} {pass_}"):
                continue
            t = {
                n_: b.pass_ms(n_, fn, backward, (x, a, bm))
                for n_, fn in lora_variants(x, w, a, bm, 2.0).items()
            }
            flops = 2 * m * k * n * (1 if backward is None else 2)  # the frozen matmuls
            flops += 2 * m * r * (k + n) * (1 if backward is None else 3)  # the low-rank ones
            tflops = flops / (t["fused"] * 1e-3) / 1e12 if t["fused"] else None
            ratio = lambda a_, b_: a_ / b_ if a_ and b_ else None  # noqa: E731
            rows.append([r, pass_, t["fused"], t["eager"], t["base"], ratio(t["fused"], t["base"]),
                         ratio(t["fused"], t["eager"]), tflops])  # fmt: skip
    header = ["r", "pass", "fused ms", "eager ms", "base ms", "fused/base", "fused/eager",
              "fused TFLOP/s"]  # fmt: skip
    table(f"LoRA {m} tokens, {k} -> {n}, {b.dtype}, frozen W", header, rows)
    results["lora"] = [dict(zip(header, row)) for row in rows]
    if not b.over("lora pieces"):
        lora_pieces(b, results, x, w, g, ranks[0])


def launch_route(kernel: str) -> str | None:
    """Which route the last launch of ``kernel`` took: the Triton tiles, the TMA kernel
    (persistent or one program per tile) or the library (``unfused``), as the tuner chose."""
    from minift.kernels import launch

    info = launch.last_launch(kernel)
    if info is None:
        return None
    if info.get("UNFUSED"):
        return "unfused"
    if info.get("TMA"):
        return "tma persistent" if info.get("PERSISTENT", 1) else "tma"
    return "tiles"


def lora_pieces(b: Bench, results: dict, x, w, g, r: int) -> None:
    """Each launch of the fused LoRA layer timed alone, beside the library call that does the
    same work, and the sum of the backward's pieces beside the whole backward measured through
    autograd: where the time of the layer goes, and what the autograd wrapper costs."""
    from minift.kernels import lora_linear
    from minift.kernels.lora_triton import fused_lora, matmul
    from minift.kernels.triton_utils import dot_tile

    a, bm = (
        (b.randn(r, x.shape[1]) / x.shape[1] ** 0.5).requires_grad_(),
        b.randn(w.shape[0], r, grad=True),
    )
    u = x.detach() @ a.detach().t()
    gb = g @ bm.detach()
    tile = dot_tile(r, 128)
    pieces = [  # (piece, Triton launch, the library's way to the same result)
        ("forward: y = x W^T + s (x A^T) B^T", lambda: fused_lora(x, w.t(), None, a.t(), bm.t(), 2.0),
         lambda: torch.addmm(F.linear(x, w), F.linear(x, a), bm.t(), alpha=2.0)),
        ("backward dx = g W + s (g B) A", lambda: fused_lora(g, w, None, bm, a, 2.0),
         lambda: torch.addmm(g @ w, gb, a, alpha=2.0)),
        ("backward dA = s (g B)^T x", lambda: matmul(gb.t(), x, 2.0, BLOCK_M=tile),
         lambda: 2.0 * (gb.t() @ x)),
        ("backward dB = s g^T (x A^T)", lambda: matmul(g.t(), u, 2.0, BLOCK_N=tile),
         lambda: 2.0 * (g.t() @ u)),
    ]  # fmt: skip
    rows = []
    with torch.no_grad():
        for name, kernel, library in pieces:
            b.check(f"lora piece: {name}", kernel()[0], library().float())  # the same work
            route = launch_route("fused_lora" if "dx" in name or "forward" in name else "matmul")
            rows.append(
                [
                    name,
                    route,
                    b.pass_ms(name, kernel, None),
                    b.pass_ms(f"{name} (library)", library, None),
                    b.host_ms(kernel),
                ]
            )
    layer = lambda: lora_linear(x, w, None, a, bm, 2.0)  # noqa: E731
    fwd = b.pass_ms("fused", layer, None)
    both = b.pass_ms("fused", layer, g, (x, a, bm))
    host_fwd, host_both = b.host_ms(layer), b.host_ms(layer, g, (x, a, bm))
    backward = [row[2] for row in rows[1:]]
    if None not in backward:
        rows.append(
            ["backward pieces, summed", None, sum(backward), None, sum(r[4] for r in rows[1:])]
        )
    rows.append(["forward through autograd (lora_linear)", None, fwd, None, host_fwd])
    rows.append(
        [
            "backward through autograd (fwd+bwd - fwd)",
            None,
            both - fwd if both and fwd else None,
            None,
            host_both - host_fwd,
        ]
    )
    # host ms: Python's time to issue the launches; above the GPU's time, the GPU waits
    header = ["piece", "route", "minift ms", "library ms", "host ms"]
    table(f"LoRA r={r}, piece by piece ({x.shape[0]} tokens, {b.dtype})", header, rows)
    results["lora_pieces"] = [dict(zip(header, row)) for row in rows]


# ------------------------------------------------------------------------ attention
def flex_attention_fn(smoke: bool):
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    return flex_attention if smoke else torch.compile(flex_attention)


def flex_block_mask(layout: torch.Tensor, bs: int):
    """FlexAttention's BlockMask for a causal block layout (H or 1, nb, nb), built from block
    lists (never a (T, T) mask): blocks below the diagonal are full, diagonal ones partial.
    Its mask_mod states the whole rule, as FlexAttention requires (eager mode reads only it)."""
    from minift.kernels.sparse_index import index_lists
    from torch.nn.attention.flex_attention import BlockMask

    nb = layout.shape[-1]
    diagonal = torch.eye(nb, dtype=torch.bool, device=layout.device)
    below = torch.ones(nb, nb, dtype=torch.bool, device=layout.device).tril(-1)
    partial_idx, partial_n = index_lists(layout & diagonal)
    full_idx, full_n = index_lists(layout & below)
    if layout.shape[0] == 1:
        mask_mod = lambda b, h, q, kv: layout[0, q // bs, kv // bs] & (kv <= q)
    else:
        mask_mod = lambda b, h, q, kv: layout[h, q // bs, kv // bs] & (kv <= q)
    return BlockMask.from_kv_blocks(
        partial_n[None],
        partial_idx[None],
        full_n[None],
        full_idx[None],
        BLOCK_SIZE=bs,
        mask_mod=mask_mod,
    )


def attention_variants(q, k, v, causal: bool, flex) -> dict:
    """minift, every SDPA backend this build has, and FlexAttention."""
    from minift.kernels import attention
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        return run

    out = {"minift": lambda: attention(q, k, v, causal=causal)}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        too_big = name == "MATH" and q.shape[2] > 2048  # math materialises the (T, T) scores
        if hasattr(SDPBackend, name) and not too_big:
            out[f"sdpa_{name.split('_')[0].lower()}"] = sdpa(getattr(SDPBackend, name))
    if flex is not None:
        nb = -(-k.shape[2] // 128)
        dense = torch.ones(1, nb, nb, dtype=torch.bool, device=q.device)
        mask = flex_block_mask(dense, 128) if causal else None
        out["flex"] = lambda: flex(q, k, v, block_mask=mask)
    return out


def attn_tflops(ms: float | None, bsz, h, t, d, causal, backward: bool) -> float | None:
    fwd = 4 * bsz * h * t * t * d * (0.5 if causal else 1.0)
    flops = fwd * 2.5 if backward else fwd  # the backward has 5 matmuls to the forward's 2
    return None if ms is None or ms <= 0 else flops / (ms * 1e-3) / 1e12


def bench_attention(b: Bench, results: dict) -> None:
    from minift.kernels import attention, attention_reference, autotune

    bsz, h, dims, lengths, causals = attention_shapes(b)
    flex = flex_attention_fn(b.smoke) if not b.quick else None  # its compile costs ~30 s
    rows, names = [], {}
    results["attention"] = []
    for d in dims:
        # The check: a full-length slice (1 x 4 heads) against fp32, SDPA's error beside it.
        t_check = 40 if b.smoke else max(lengths[0], 1000)
        q, k, v = (b.randn(1, 2 if b.smoke else 4, t_check, d, grad=True) for _ in range(3))
        g = b.randn(*q.shape)
        want = grads_of(attention_reference, fp32(q, k, v), g.float())
        with autotune.paused():  # 4 heads is not the timed shape: keep the budget for that
            got = grads_of(attention, (q, k, v), g)
        b.check(f"attention D={d} T={t_check}", got, want)
        if not b.smoke:
            sdpa = grads_of(lambda *t: F.scaled_dot_product_attention(*t, is_causal=True),
                            (q, k, v), g)  # fmt: skip
            errs = [rel_err(s, w) for s, w in zip(sdpa, want)]
            print(f"  (SDPA's own rel err: out {errs[0]:.2e}, grads max {max(errs[1:]):.2e})")
        launch_info(results, ["attention fwd", "attention dkdv", "attention dq"])
        del q, k, v, g, want
        for t in lengths:
            q, k, v = (b.randn(bsz, h, t, d, grad=True) for _ in range(3))
            g = b.randn(bsz, h, t, d)
            for causal in causals:
                if b.over(f"attention T={t} D={d} causal={causal}"):
                    continue
                fwd, bwd = {}, {}
                for name, fn in attention_variants(q, k, v, causal, flex).items():
                    names[name] = None
                    f, fb = b.pass_ms(name, fn, None), b.pass_ms(name, fn, g, (q, k, v))
                    fwd[name] = attn_tflops(f, bsz, h, t, d, causal, backward=False)
                    bwd[name] = attn_tflops(
                        fb - f if fb and f else None, bsz, h, t, d, causal, backward=True
                    )
                for pass_, tflops in (("fwd", fwd), ("bwd", bwd)):
                    sdpa = {n: x for n, x in tflops.items() if n.startswith("sdpa") and x}
                    best = max(sdpa, key=sdpa.get) if sdpa else None
                    ratio = tflops["minift"] / sdpa[best] if best and tflops["minift"] else None
                    rows.append(dict(T=t, D=d, causal=causal, pass_=pass_, **tflops,
                                     best_sdpa=best, vs_best_sdpa=ratio))  # fmt: skip
            del q, k, v, g
    cols = [*names, "best_sdpa", "vs_best_sdpa"]
    table(
        f"Attention TFLOP/s, B={bsz} H={h} {b.dtype}",
        ["T", "D", "causal", "pass", *cols],
        [[r["T"], r["D"], r["causal"], r["pass_"], *(r.get(c) for c in cols)] for r in rows],
    )
    results["attention"] = rows


# --------------------------------------------------------------------- block-sparse
def sparse_layouts(t: int, bs: int, h: int, quick: bool) -> dict:
    from minift.kernels import bigbird_layout, sliding_window_layout

    out = {
        f"window {4 * bs}": sliding_window_layout(t, bs, 4, causal=True, n_heads=h),
        "bigbird": bigbird_layout(t, bs, window=3, n_global=1, n_random=2, causal=True, n_heads=h),
    }
    if not quick:
        out[f"window {8 * bs}"] = sliding_window_layout(t, bs, 8, causal=True, n_heads=h)
    return out


def sparse_variants(q, k, v, layout, bs, flex) -> dict:
    from minift.kernels import attention, block_sparse_attention

    out = {
        "dense": lambda: attention(q, k, v, causal=True),
        "sparse": lambda: block_sparse_attention(q, k, v, layout, bs, causal=True),
    }
    if flex is not None:
        mask = flex_block_mask(layout, bs)
        out["flex"] = lambda: flex(q, k, v, block_mask=mask)
    return out


def bench_sparse(b: Bench, results: dict) -> None:
    from minift.kernels import autotune, block_sparse_attention, block_sparse_attention_reference
    from minift.kernels.sparse_index import block_index

    bsz, h, d, bs, lengths = sparse_shapes(b)
    flex = flex_attention_fn(b.smoke)
    rows = []
    results["block_sparse"] = []
    for t in lengths:
        q, k, v = (b.randn(bsz, h, t, d, grad=True) for _ in range(3))
        g = b.randn(bsz, h, t, d)
        dense_ms: dict[str, float | None] = {}
        for name, layout in sparse_layouts(t, bs, h, b.quick or b.smoke).items():
            layout = layout.to(b.device)
            if t == lengths[0]:  # check on the first 8 blocks, FlexAttention's mask too
                part = [x[:1, :, : 8 * bs].detach().requires_grad_() for x in (q, k, v)]
                head, gp = layout[:, :8, :8], g[:1, :, : 8 * bs]
                ref = lambda *t_, m=head: block_sparse_attention_reference(*t_, m, bs)  # noqa: E731
                want = grads_of(ref, fp32(*part), gp.float())
                fn = lambda *t_, m=head: block_sparse_attention(*t_, m, bs)  # noqa: E731
                with autotune.paused():  # a slice, not the timed shape
                    got = grads_of(fn, part, gp)
                b.check(f"block-sparse {name}", got, want)
                if flex is not None:
                    from torch.nn.attention.flex_attention import flex_attention

                    try:
                        out = flex_attention(*part, block_mask=flex_block_mask(head, bs))
                        b.check(f"flex mask {name}", out, want[0])
                    except CheckFailed:
                        flex = None  # a wrong baseline is not timed; minift still is
                        print("  FlexAttention disagrees with the reference: not timed")
                    except Exception as err:  # noqa: BLE001 - this torch's flex cannot run it
                        flex = None
                        print(
                            f"  FlexAttention unavailable: {type(err).__name__}: {_first_line(err)}"
                        )
                launch_info(results, ["attention fwd", "attention dkdv", "attention dq"])
            active = block_index(layout, bs, t, t, causal=True).col_counts.sum().item()
            density = active / (h * (t // bs) * (t // bs + 1) / 2)  # of the causal block triangle
            for pass_, backward in (("fwd", None), ("fwd+bwd", g)):
                if b.over(f"block-sparse T={t} {name} {pass_}"):
                    continue
                ms = {}
                # quick: FlexAttention on the first layout only (each mask costs a compile)
                flex_here = flex if not (b.quick and rows and rows[0][1] != name) else None
                for n_, fn in sparse_variants(q, k, v, layout, bs, flex_here).items():
                    if n_ == "dense" and pass_ in dense_ms:  # the same for every layout
                        ms[n_] = dense_ms[pass_]
                    else:
                        ms[n_] = b.pass_ms(n_, fn, backward, (q, k, v))
                dense_ms[pass_] = ms["dense"]
                ideal = density * ms["dense"] if ms["dense"] else None
                vs_ideal = ms["sparse"] / ideal if ideal and ms["sparse"] else None
                vs_flex = ms["sparse"] / ms["flex"] if ms.get("flex") and ms["sparse"] else None
                rows.append([t, name, pass_, density, ms["dense"], ms["sparse"], ms.get("flex"),
                             vs_ideal, vs_flex])  # fmt: skip
        del q, k, v, g
    header = ["T", "layout", "pass", "density", "dense ms", "sparse ms", "flex ms", "vs ideal",
              "vs flex"]  # fmt: skip
    table(
        f"Block-sparse attention, B={bsz} H={h} D={d}, blocks of {bs}, causal, {b.dtype}",
        header,
        rows,
    )
    results["block_sparse"] = [dict(zip(header, row)) for row in rows]


# ---------------------------------------------------------------------------- goals
def goals(results: dict) -> list[dict]:
    """Each goal of the performance issue with its measured value (None: not measured)."""

    def goal(name, value, target, met):
        return dict(goal=name, value=value, target=target, met=None if value is None else met)

    out = []
    lora = [r for r in results.get("lora", []) if r["pass"] == "fwd+bwd"]
    lora = next((r for r in lora if r["r"] == 16), lora[0] if lora else {})
    v = lora.get("fused/base")
    out.append(goal(f"LoRA r={lora.get('r', 16)} fwd+bwd: fused / base", v, "<= 1.10",
                    v is not None and v <= 1.10))  # fmt: skip
    v = lora.get("fused/eager")
    out.append(goal("LoRA fwd+bwd: fused / eager", v, "< 1.00", v is not None and v < 1.0))
    att = [r for r in results.get("attention", []) if r["causal"]]
    att = [r for r in att if r["T"] == GOAL_T and r["D"] == GOAL_D] or att[:2]
    shape = f"T={att[0]['T']} D={att[0]['D']}" if att else f"T={GOAL_T} D={GOAL_D}"
    shape += " causal"
    for pass_, floor in (("fwd", 0.9), ("bwd", 0.8)):
        row = next((r for r in att if r["pass_"] == pass_), {})
        v = row.get("vs_best_sdpa")
        out.append(goal(f"attention {pass_} {shape}: minift / best SDPA ({row.get('best_sdpa')})",
                        v, f">= {floor}", v is not None and v >= floor))  # fmt: skip
        if pass_ == "fwd":
            v = row.get("minift")
            out.append(goal(f"attention fwd {shape}: TFLOP/s", v, ">= 400",
                            v is not None and v >= 400))  # fmt: skip
    sparse = results.get("block_sparse", [])
    worst = max((r["vs ideal"] for r in sparse if r.get("vs ideal")), default=None)
    out.append(goal("block-sparse: time / (density x dense), worst row", worst, "<= 1.15",
                    worst is not None and worst <= 1.15))  # fmt: skip
    worst = max((r["vs flex"] for r in sparse if r.get("vs flex")), default=None)
    out.append(goal("block-sparse: time / FlexAttention, worst row", worst, "<= 1.00",
                    worst is not None and worst <= 1.0))  # fmt: skip
    return out


def peak_tflops(device: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16.items() if name in device), None)


def roofline(results: dict) -> list[dict]:
    """Achieved TFLOP/s (useful FLOPs) and the fraction of the device's bf16 peak for the
    goal shapes: docs/kernels.md's roofline column."""
    peak = peak_tflops(results.get("device", ""))
    rows = []
    lora = [r for r in results.get("lora", []) if r["pass"] == "fwd+bwd"]
    for r in lora:
        rows.append(dict(kernel=f"fused LoRA fwd+bwd r={r['r']}", tflops=r["fused TFLOP/s"]))
    for r in results.get("attention", []):
        if r["causal"] and r["T"] == GOAL_T and r["D"] == GOAL_D:
            rows.append(dict(kernel=f"flash attention {r['pass_']} T={r['T']} D={r['D']} causal",
                             tflops=r.get("minift")))  # fmt: skip
    for row in rows:
        row["peak"] = peak
        row["of_peak"] = row["tflops"] / peak if row["tflops"] and peak else None
    return rows


# ----------------------------------------------------------------------------- plot
def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for row in results.get("lora", []):
        axes[0].bar(f"r{row['r']} {row['pass']}", row["fused/base"] or 0, color="tab:blue")
    axes[0].axhline(1.10, color="red", ls="--", label="goal 1.10x")
    axes[0].set(title="LoRA: fused time / base matmul", ylabel="ratio")
    axes[0].legend()
    att = [r for r in results.get("attention", []) if r["causal"] and r["pass_"] == "fwd"]
    skip = ("T", "D", "causal", "pass_", "vs_best_sdpa", "best_sdpa")
    for d in sorted({r["D"] for r in att}):
        for name in [n for n in att[0] if n not in skip]:
            pts = sorted((r["T"], r[name]) for r in att if r["D"] == d and r.get(name))
            if pts:
                axes[1].plot(*zip(*pts), marker="o", label=f"{name} D={d}")
    axes[1].set(title="Causal attention forward", xlabel="T", ylabel="TFLOP/s", xscale="log")
    if att:
        axes[1].legend(fontsize=7)
    for row in results.get("block_sparse", []):
        axes[2].bar(
            f"{row['T']}\n{row['layout']}\n{row['pass']}", row["vs ideal"] or 0, color="tab:green"
        )
    axes[2].axhline(1.15, color="red", ls="--", label="goal 1.15x")
    axes[2].set(title="Block-sparse time / (density x dense time)")
    axes[2].tick_params(axis="x", labelsize=6)
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out: pathlib.Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    os.replace(tmp, out / "results.json")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
        os.environ["MINIFT_KERNELS"] = "triton"
    elif not torch.cuda.is_available():
        sys.exit(
            "bench_kernels needs a CUDA GPU; use --smoke to run tiny shapes on the CPU interpreter"
        )
    if not args.smoke:  # a failed launch must not time the reference in the kernel's place
        import warnings

        from minift.kernels.dispatch import KernelFallbackWarning

        warnings.simplefilter("error", KernelFallbackWarning)
    budget = args.budget_s if args.budget_s is not None else (100.0 if args.quick else 420.0)
    from minift.kernels import autotune

    tune_budget = args.tune_budget_s
    tune_total = tune_budget if tune_budget is not None else 60.0 if args.quick else 240.0
    tune_end = autotune.tuner().spent + tune_total
    tuning = "off: the interpreter" if args.smoke else "on" if autotune.mode() else "off"
    b = Bench(args.smoke, args.quick and not args.smoke, budget)
    device = "CPU interpreter (smoke)" if args.smoke else torch.cuda.get_device_name()
    import triton

    print(f"bench_kernels on {device}, torch {torch.__version__}, triton {triton.__version__}"
          f"{', quick' if b.quick else ''}; autotuning {tuning}\n{GOALS}")  # fmt: skip
    results: dict = {"device": device, "device_type": b.device, "torch": torch.__version__,
                     "triton": triton.__version__, "dtype": str(b.dtype), "quick": b.quick,
                     "errors": {}, "autotuning": tuning}  # fmt: skip
    out = pathlib.Path(args.out)
    sections = {"lora": bench_lora, "attention": bench_attention, "sparse": bench_sparse}
    chosen = [name for name in sections if name in args.only.split(",")]
    if args.compile_ahead:
        shard = autotune.compile_shard()
        if shard is None or not autotune.mode():
            sys.exit(f"--compile-ahead needs {autotune.COMPILE_ENV}=i/n and tuning on "
                     f"({autotune.ENV} unset or 1)")  # fmt: skip
        print(f"compiling shard {shard[0]}/{shard[1]} of the tuning candidates", flush=True)
        compile_ahead(b, chosen)
        return 0
    for i, name in enumerate(chosen):
        b.start_section(SHARES[name], sum(SHARES[later] for later in chosen[i + 1 :]))
        share, after = TUNE_SHARES[name], sum(TUNE_SHARES[n] for n in chosen[i + 1 :])
        left = max(0.0, tune_end - autotune.tuner().spent)  # what earlier sections left over
        autotune.set_budget(left * share / (share + after))
        print(f"\n== {name}", flush=True)
        try:
            sections[name](b, results)
        except Exception as err:  # noqa: BLE001 - record, and go on with the next section
            results["errors"][name] = f"{type(err).__name__}: {_first_line(err)}"
            print(f"  section {name} FAILED: {results['errors'][name]}")
            if not isinstance(err, CheckFailed):
                traceback.print_exc(limit=4)
        tuning_info(results)
        if b.device == "cuda":
            torch.cuda.empty_cache()
        results["checks"], results["skipped"] = b.checks, b.skipped
        results["tuning_s"] = round(autotune.tuner().spent, 1)
        results["goals"] = [] if b.smoke else goals(results)
        results["roofline"] = [] if b.smoke else roofline(results)
        write_results(out, results)
    if b.skipped:
        print(f"\nskipped for time: {', '.join(b.skipped)}")
    print(
        f"\nautotuning {tuning}: {len(results.get('autotune', []))} decisions, "
        f"{autotune.tuner().spent:.0f} s spent tuning"
    )
    print("\ngoals:" + (" not judged in --smoke (interpreter timings)" if b.smoke else ""))
    for g in results["goals"]:
        value = "-" if g["value"] is None else f"{g['value']:.3g}"
        state = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        print(f"  {g['goal']:<62} {value:>8} (goal {g['target']}): {state}")
    try:
        plot(results, out / "bench_kernels.png")
    except Exception as err:  # noqa: BLE001 - a plot must not lose the results
        print(f"plot failed: {type(err).__name__}: {_first_line(err)}")
    print(f"\nwrote {out / 'results.json'} and {out / 'bench_kernels.png'}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
