"""Benchmark personalization: the per-user quality table, constrained decoding's cost, and
(on a CUDA GPU) the multi-LoRA kernel against a loop over adapters.

    python scripts/bench_personal.py               # CPU: quality table + decoding cost (~5 min)
    python scripts/bench_personal.py --smoke       # the fast-mode base, a smoke run (~30 s)
    python scripts/bench_personal.py --gpu-only    # on a CUDA GPU: the kernel section alone

1. Quality (CPU): every personalization method of minift.recipes.personalize, per
   simulated user, held-out preference accuracy (mean ± SE), and paired comparisons of
   the pooled pairs (own LoRA vs shared LoRA, vs profile, soft prompt vs base).
2. Constrained decoding (CPU): for three expressions, index size and build time, and
   ms per generated token with and without the mask (the base model, batch 1).
3. Multi-LoRA kernel (GPU only): y = each row's own s (x A_u^T) B_u^T for a batch of
   requests from L users, bf16, 4096 -> 4096, r = 16: the one-launch Triton kernel
   (forward, and forward + backward) against the loop over adapters (two matmuls per user
   present, PyTorch) and against one shared adapter on all rows (the fused LoRA term's
   floor: no gather). Checked against the float32 definition before timing;
   ``triton.testing.do_bench`` medians.

Writes docs/results/personal.json (rewritten after each section) and
docs/results/personal.png (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the fast-mode base (a short run)")
    p.add_argument("--gpu-only", action="store_true", help="only the kernel section (CUDA)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    return p.parse_args(argv)


def quality(results: dict) -> None:
    import numpy as np

    from minift.metrics import compare, mean_se
    from minift.recipes.personalize import METHODS, compare_users, default_compare_config
    from minift.recipes.rlhf_stages import default_policy

    policy, enc = default_policy()
    config = default_compare_config()
    t0 = time.perf_counter()
    correct = compare_users(policy, enc, config)["correct"]
    seconds = time.perf_counter() - t0
    print(f"\n== per-user held-out preference accuracy ({config.n_train} pairs per user, {seconds:.0f}s)")  # fmt: skip
    print(f"{'user':8s} " + " ".join(f"{m:>14s}" for m in METHODS))
    table = {}
    for user, by_method in correct.items():
        cells = {m: mean_se(by_method[m]) for m in METHODS}
        table[user] = {m: [c.value, c.se] for m, c in cells.items()}
        print(f"{user:8s} " + " ".join(f"{c.value:7.3f} ±{c.se:.3f}" for c in cells.values()))
    pooled = {m: np.concatenate([correct[u][m] for u in correct]) for m in METHODS}
    comparisons = [
        compare("own-lora", pooled["own-lora"], "shared-lora", pooled["shared-lora"]),
        compare("own-lora", pooled["own-lora"], "profile", pooled["profile"]),
        compare("own-lora", pooled["own-lora"], "examples", pooled["examples"]),
        compare("soft-prompt", pooled["soft-prompt"], "base", pooled["base"]),
    ]
    for c in comparisons:
        print(c)
    results["quality"] = {
        "config": vars(config) | {"users": list(config.users)},
        "per_user": table,
        "pooled": {m: float(v.mean()) for m, v in pooled.items()},
        "comparisons": [str(c) for c in comparisons],
        "seconds": seconds,
    }


def decoding(results: dict) -> None:
    import torch

    from minift.neurosym import build_index, generate_constrained
    from minift.recipes.pretrain import load_base

    base, enc = load_base()
    patterns = {
        "identifier": r"[A-Za-z_][A-Za-z0-9_]*",
        "call": r"[a-z_]+\((([a-z_]+|[0-9]+)(, ([a-z_]+|[0-9]+))*)?\)",
        "json": r"\{\"name\": \"[a-z]{1,8}\", \"size\": [0-9]{1,3}\}",
    }
    print("\n== constrained decoding, batch 1, 24-token budget, 16 samples each")
    print(f"{'expression':12s} {'states':>6s} {'build s':>8s} {'free ms/tok':>12s} {'masked ms/tok':>14s} {'mask ms/tok':>12s}")  # fmt: skip
    rows = {}
    g = torch.Generator().manual_seed(0)
    for name, pattern in patterns.items():
        t0 = time.perf_counter()
        index = build_index(pattern, enc)
        built = time.perf_counter() - t0
        free = [generate_constrained(base, enc, "Return the", None, 24, 1.0, g) for _ in range(16)]
        held = [generate_constrained(base, enc, "Return the", index, 24, 1.0, g) for _ in range(16)]
        per = lambda outs, key: (
            1000 * sum(getattr(o, key) for o in outs) / max(1, sum(len(o.tokens) for o in outs))
        )  # noqa: E731
        rows[name] = {"states": len(index.next), "build_s": built, "free_ms": per(free, "seconds"),
                      "masked_ms": per(held, "seconds"), "mask_ms": per(held, "mask_seconds")}  # fmt: skip
        r = rows[name]
        print(f"{name:12s} {r['states']:6d} {built:8.3f} {r['free_ms']:12.2f} {r['masked_ms']:14.2f} {r['mask_ms']:12.2f}")  # fmt: skip
    results["decoding"] = rows


def kernel(results: dict) -> None:
    import torch

    if not torch.cuda.is_available():
        print("\n== multi-LoRA kernel: skipped (no CUDA GPU)")
        results["kernel"] = "skipped: no CUDA GPU"
        return
    torch.manual_seed(0)
    dt, k, n, r = torch.bfloat16, 4096, 4096, 16
    rows = []
    print(f"\n== multi-LoRA term, bf16, {k} -> {n}, r={r}: ms (median), forward and forward+backward")  # fmt: skip
    print("   (multi_lora: the segmented kernel; with 1 user, the two plain matmuls it routes to)")
    print(f"{'tokens':>7s} {'users':>6s} {'kernel fwd':>11s} {'loop fwd':>9s} {'one adapter':>12s} {'kernel f+b':>11s} {'loop f+b':>9s} {'rel err':>8s}")  # fmt: skip
    for tokens in (1024, 4096, 16384):
        for users in (1, 8, 64):
            row = time_case(tokens, users, k, n, r, dt)
            rows.append(row)
            print(f"{tokens:7d} {users:6d} {row['kernel_fwd_ms']:11.3f} {row['loop_fwd_ms']:9.3f} {row['one_adapter_fused_ms']:12.3f} {row['kernel_fwd_bwd_ms']:11.3f} {row['loop_fwd_bwd_ms']:9.3f} {row['rel_err']:8.1e}")  # fmt: skip
    results["kernel"] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}  # fmt: skip


def time_case(tokens: int, users: int, k: int, n: int, r: int, dt, dev: str = "cuda") -> dict:
    """One row of the kernel table: checked against the float32 definition, then timed
    (``dev`` "cpu" with Triton's interpreter runs the same code: tests/test_bench_kernel_rows.py)."""
    import torch
    from minift.kernels.lora import lora_linear
    from minift.kernels.multi_lora import multi_lora, multi_lora_loop, multi_lora_reference
    from triton.testing import do_bench

    x = torch.randn(tokens, k, device=dev, dtype=dt, requires_grad=True)
    a = (torch.randn(users, r, k, device=dev) / k**0.5).to(dt).requires_grad_()
    b = (torch.randn(users, n, r, device=dev) * 0.1).to(dt).requires_grad_()
    ids = torch.randint(0, users, (tokens,), device=dev)
    s = torch.full((users,), 2.0, device=dev)
    ref = multi_lora_reference(x.float(), a.float(), b.float(), ids, s)
    err = ((multi_lora(x, a, b, ids, s).float() - ref).norm() / ref.norm()).item()
    g = torch.randn(tokens, n, device=dev, dtype=dt)
    w0 = torch.zeros(n, k, device=dev, dtype=dt)

    def kernel_fwd():
        return multi_lora(x, a, b, ids, s)

    def loop_fwd():
        return multi_lora_loop(x, a, b, ids, s)

    def both(fn):
        return lambda: torch.autograd.grad(fn(), [x, a, b], g)

    def bench(fn):
        return do_bench(fn, return_mode="median")

    return {
        "tokens": tokens, "users": users, "rel_err": err,
        "kernel_fwd_ms": bench(kernel_fwd), "loop_fwd_ms": bench(loop_fwd),
        "one_adapter_fused_ms": bench(lambda: lora_linear(x, w0, None, a[0], b[0], 2.0)),
        "kernel_fwd_bwd_ms": bench(both(kernel_fwd)), "loop_fwd_bwd_ms": bench(both(loop_fwd)),
    }  # fmt: skip


def plot(results: dict, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [k for k in ("quality", "decoding") if k in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        if key == "quality":
            table = results["quality"]["per_user"]
            users, methods = list(table), list(next(iter(table.values())))
            width = 0.8 / len(methods)
            for j, m in enumerate(methods):
                ax.bar(np.arange(len(users)) + j * width, [table[u][m][0] for u in users], width,
                       yerr=[table[u][m][1] for u in users], capsize=2, label=m)  # fmt: skip
            ax.set(xticks=np.arange(len(users)) + 0.4 - width / 2, xticklabels=users, ylim=(0, 1),
                   ylabel="held-out preference accuracy", title="per-user quality")  # fmt: skip
            ax.legend(fontsize=7, ncol=3)
        else:
            rows = results["decoding"]
            names = list(rows)
            x = np.arange(len(names))
            ax.bar(x - 0.2, [rows[n]["free_ms"] for n in names], 0.4, label="free")
            ax.bar(x + 0.2, [rows[n]["masked_ms"] for n in names], 0.4, label="constrained")
            ax.set(xticks=x, xticklabels=names, ylabel="ms per token", title="constrained decoding")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "personal.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ["MINIFT_FAST"] = "1"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"argv": sys.argv[1:], "load": os.getloadavg()}
    sections = [kernel] if args.gpu_only else [quality, decoding, kernel]
    for section in sections:
        section(results)
        (out / "personal.json").write_text(json.dumps(results, indent=1))
    plot(results, out)
    print(f"\nwrote {out / 'personal.json'} and {out / 'personal.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
