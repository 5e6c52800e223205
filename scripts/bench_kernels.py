"""Benchmark minift's Triton kernels on a GPU: fused LoRA, flash and block-sparse attention.

    python scripts/bench_kernels.py                # on a CUDA GPU, under 8 minutes
    python scripts/bench_kernels.py --smoke        # tiny shapes on the CPU interpreter

Every kernel is first checked against its PyTorch reference on the device; then each
variant is timed as the median of many runs after warm-up (``triton.testing.do_bench``,
CUDA events), all variants in the same run. Tables go to stdout; ``results.json`` and
``bench_kernels.png`` go to ``--out``. Each section has a share of the time budget and
notes the rows it skipped when its share runs out. ``--smoke`` runs the same code paths
on tiny shapes through Triton's interpreter, to show the script works without a GPU.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

GOALS = """goals: LoRA fused <= 1.10x base matmul and < eager; attention fwd >= 0.9x best SDPA,
bwd >= 0.8x; block-sparse time <= 1.15x density x dense, and <= FlexAttention"""
SHARES = {"lora": 0.15, "attention": 0.55, "sparse": 0.30}  # of the time budget


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    p.add_argument(
        "--out", default="runs/bench_kernels", help="folder for results.json and the plot"
    )
    p.add_argument("--only", default="lora,attention,sparse", help="comma-separated sections")
    p.add_argument("--budget-s", type=float, default=420.0, help="time budget for all sections")
    return p.parse_args()


class Bench:
    """Timing, time budget and bookkeeping shared by the sections."""

    def __init__(self, smoke: bool, budget_s: float):
        self.smoke, self.end, self.deadline = smoke, time.time() + budget_s, 0.0
        self.skipped: list[str] = []
        self.failed: set[str] = set()
        self.device = "cpu" if smoke else "cuda"
        self.dtype = torch.float32 if smoke else torch.bfloat16  # interpreter has no bf16

    def start_section(self, share: float, later: float) -> None:
        """This section's deadline: its share of what is left (unused time carries on)."""
        now = time.time()
        self.deadline = now + (self.end - now) * share / (share + later)

    def over(self, what: str) -> bool:
        if time.time() > self.deadline:
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
        return do_bench(fn, warmup=10, rep=60, grad_to_none=list(grads), return_mode="median")

    def pass_ms(self, name: str, fn, backward: torch.Tensor | None, grads=()) -> float | None:
        """Time ``fn`` (forward) or ``fn().backward(backward)``; None if a baseline rejects
        this shape or device (reported once per baseline)."""
        run = fn if backward is None else lambda: fn().backward(backward)
        try:
            return self.ms(run, grads)
        except (RuntimeError, NotImplementedError) as err:
            if name not in self.failed:
                self.failed.add(name)
                print(f"  {name} unavailable here: {str(err).splitlines()[0][:90]}")
            return None

    def randn(self, *shape, grad=False):
        return torch.randn(*shape, device=self.device, dtype=self.dtype).requires_grad_(grad)


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = 2e-2) -> None:
    err = ((got.float() - want.float()).norm() / want.float().norm()).item()
    print(f"  check {name:<34} rel err {err:.2e} (tol {tol:.0e})")
    if not err < tol:
        sys.exit(f"correctness check failed for {name}: not timing a wrong kernel")


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}\n" + " | ".join(f"{h:>11}" for h in header))
    for row in rows:
        cells = ["-" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c) for c in row]
        print(" | ".join(f"{c:>11}" for c in cells))


# ----------------------------------------------------------------------------- LoRA
def lora_variants(x, w, a, bm, scaling):
    from minift.kernels import lora_linear

    return {
        "fused": lambda: lora_linear(x, w, None, a, bm, scaling),
        "eager": lambda: F.linear(x, w) + scaling * F.linear(F.linear(x, a), bm),  # PEFT's layer
        "base": lambda: F.linear(x, w),
    }


def bench_lora(b: Bench, results: dict) -> None:
    from minift.kernels import lora_linear, lora_linear_reference

    m, k, n, ranks = (40, 48, 48, (8,)) if b.smoke else (8192, 4096, 4096, (8, 16, 64))
    x, w, g = b.randn(m, k, grad=True), b.randn(n, k) / k**0.5, b.randn(m, n)
    rows = []
    for r in ranks:
        a, bm = (b.randn(r, k) / k**0.5).requires_grad_(), b.randn(n, r, grad=True)
        want = lora_linear_reference(x.float(), w.float(), None, a.float(), bm.float(), 2.0)
        check(f"lora r={r}", lora_linear(x, w, None, a, bm, 2.0), want)
        for pass_, backward in (("fwd", None), ("fwd+bwd", g)):
            if b.over(f"lora r={r} {pass_}"):
                continue
            t = {
                n_: b.pass_ms(n_, fn, backward, (x, a, bm))
                for n_, fn in lora_variants(x, w, a, bm, 2.0).items()
            }
            rows.append(
                [
                    r,
                    pass_,
                    t["fused"],
                    t["eager"],
                    t["base"],
                    t["fused"] / t["base"],
                    t["fused"] / t["eager"],
                ]
            )
    header = ["r", "pass", "fused ms", "eager ms", "base ms", "fused/base", "fused/eager"]
    table(f"LoRA {m} tokens, {k} -> {n}, {b.dtype}, frozen W", header, rows)
    results["lora"] = [dict(zip(header, row)) for row in rows]


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
    from minift.kernels.block_sparse import index_lists
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
    from minift.kernels import attention, attention_reference

    if b.smoke:
        bsz, h, dims, lengths = 1, 2, (16,), (40,)
    else:
        bsz, h, dims, lengths = 4, 32, (64, 128), (1024, 2048, 4096, 8192, 16384)
    flex = flex_attention_fn(b.smoke)
    rows, names = [], {}
    for d in dims:
        q, k, v = (b.randn(2, 4, 40 if b.smoke else 300, d) for _ in range(3))
        check(
            f"attention D={d}",
            attention(q, k, v),
            attention_reference(q.float(), k.float(), v.float()),
        )
        for t in lengths:
            q, k, v = (b.randn(bsz, h, t, d, grad=True) for _ in range(3))
            g = b.randn(bsz, h, t, d)
            for causal in (True, False):
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
                    best = max(
                        (x for n, x in tflops.items() if n.startswith("sdpa") and x), default=None
                    )
                    ratio = tflops["minift"] / best if best and tflops["minift"] else None
                    rows.append(
                        dict(T=t, D=d, causal=causal, pass_=pass_, **tflops, vs_best_sdpa=ratio)
                    )
    cols = [*names, "vs_best_sdpa"]
    table(
        f"Attention TFLOP/s, B={bsz} H={h} {b.dtype}",
        ["T", "D", "causal", "pass", *cols],
        [[r["T"], r["D"], r["causal"], r["pass_"], *(r.get(c) for c in cols)] for r in rows],
    )
    results["attention"] = rows


# --------------------------------------------------------------------- block-sparse
def sparse_layouts(t: int, bs: int, h: int) -> dict:
    from minift.kernels import bigbird_layout, sliding_window_layout

    return {
        f"window {4 * bs}": sliding_window_layout(t, bs, 4, causal=True, n_heads=h),
        f"window {8 * bs}": sliding_window_layout(t, bs, 8, causal=True, n_heads=h),
        "bigbird": bigbird_layout(t, bs, window=3, n_global=1, n_random=2, causal=True, n_heads=h),
    }


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
    from minift.kernels import block_sparse_attention, block_sparse_attention_reference
    from minift.kernels.block_sparse import block_index

    bsz, h, d, bs, lengths = (
        (1, 2, 16, 16, (96,)) if b.smoke else (2, 16, 128, 128, (8192, 16384, 32768))
    )
    flex = flex_attention_fn(b.smoke)
    rows = []
    for t in lengths:
        q, k, v = (b.randn(bsz, h, t, d, grad=True) for _ in range(3))
        g = b.randn(bsz, h, t, d)
        dense_ms: dict[str, float | None] = {}
        for name, layout in sparse_layouts(t, bs, h).items():
            layout = layout.to(b.device)
            if t == lengths[0]:  # check on the first 8 blocks, FlexAttention's mask too
                part, head = [x[:, :, : 8 * bs].detach() for x in (q, k, v)], layout[:, :8, :8]
                want = block_sparse_attention_reference(*(x.float() for x in part), head, bs)
                check(f"block-sparse {name}", block_sparse_attention(*part, head, bs), want)
                if flex is not None:
                    from torch.nn.attention.flex_attention import flex_attention

                    got = flex_attention(*part, block_mask=flex_block_mask(head, bs))
                    check(f"flex mask {name}", got, want)
            active = block_index(layout, bs, t, t, causal=True).col_counts.sum().item()
            density = active / (h * (t // bs) * (t // bs + 1) / 2)  # of the causal block triangle
            for pass_, backward in (("fwd", None), ("fwd+bwd", g)):
                if b.over(f"block-sparse T={t} {name} {pass_}"):
                    continue
                ms = {}
                for n_, fn in sparse_variants(q, k, v, layout, bs, flex).items():
                    if n_ == "dense" and pass_ in dense_ms:  # the same for every layout
                        ms[n_] = dense_ms[pass_]
                    else:
                        ms[n_] = b.pass_ms(n_, fn, backward, (q, k, v))
                dense_ms[pass_] = ms["dense"]
                ideal = density * ms["dense"] if ms["dense"] else None
                vs_ideal = ms["sparse"] / ideal if ideal and ms["sparse"] else None
                rows.append(
                    [t, name, pass_, density, ms["dense"], ms["sparse"], ms.get("flex"), vs_ideal]
                )
    header = ["T", "layout", "pass", "density", "dense ms", "sparse ms", "flex ms", "vs ideal"]
    table(
        f"Block-sparse attention, B={bsz} H={h} D={d}, blocks of {bs}, causal, {b.dtype}",
        header,
        rows,
    )
    results["block_sparse"] = [dict(zip(header, row)) for row in rows]


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
    skip = ("T", "D", "causal", "pass_", "vs_best_sdpa")
    for d in sorted({r["D"] for r in att}):
        for name in [n for n in att[0] if n not in skip]:
            pts = [(r["T"], r[name]) for r in att if r["D"] == d and r.get(name)]
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


def main() -> None:
    args = parse_args()
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
        os.environ["MINIFT_KERNELS"] = "triton"
    elif not torch.cuda.is_available():
        sys.exit(
            "bench_kernels needs a CUDA GPU; use --smoke to run tiny shapes on the CPU interpreter"
        )
    from minift.io import write_json

    b = Bench(args.smoke, args.budget_s)
    device = "CPU interpreter (smoke)" if args.smoke else torch.cuda.get_device_name()
    print(f"bench_kernels on {device}, torch {torch.__version__}\n{GOALS}")
    results: dict = {"device": device, "torch": torch.__version__}
    sections = {"lora": bench_lora, "attention": bench_attention, "sparse": bench_sparse}
    chosen = [name for name in sections if name in args.only.split(",")]
    for i, name in enumerate(chosen):
        b.start_section(SHARES[name], sum(SHARES[later] for later in chosen[i + 1 :]))
        sections[name](b, results)
    results["skipped"] = b.skipped
    if b.skipped:
        print(f"\nskipped for time: {', '.join(b.skipped)}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    plot(results, out / "bench_kernels.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'bench_kernels.png'}")


if __name__ == "__main__":
    main()
