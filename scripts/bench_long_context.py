"""Long contexts: time and peak memory of one forward + backward against sequence length.

    python scripts/bench_long_context.py              # T = 512 .. 16k, CPU (+ CUDA if any)
    python scripts/bench_long_context.py --quick      # T = 512 .. 2k, a minute or two
    python scripts/bench_long_context.py --threads 1  # steadier on a shared CPU (default)
    python scripts/bench_long_context.py --quick --cuda-only  # the CUDA part alone

Configurations, all a small GPT (2 layers, width 64, 2 heads, 512-token vocabulary):

- dense-explicit: dense causal attention with the (T, T) probabilities materialised (the
  explicit path, ``output_attentions=True``): the textbook O(T^2) memory;
- dense-sdpa: the model's default dense path, PyTorch's fused scaled_dot_product_attention
  (on the CPU a flash-style kernel that never stores the (T, T) matrix: O(T) memory,
  still O(T^2) time);
- sliding-window: the linear-memory gather path (sparse impl "efficient"), windows of 2
  blocks of 64 tokens (each query sees 65 .. 128 keys);
- bigbird: the same path, window 2 + 1 global + 1 random block of 64;
- hierarchical: HANClassifier over segments of 512 tokens (dense attention inside a
  segment, attention pooling across segments).

Each (configuration, T) runs in a fresh subprocess: build the model, one warm-up step at
T = 128 (loads kernels, builds layouts), then reset the peak memory and time ONE
forward + backward at T (batch 1; the loss is the mean square of the final hidden
states, or the classifier's cross-entropy). Memory is the growth of the peak resident
set over its value just before that step (minift.utils.reset_peak_memory /
peak_memory_mb); on CUDA, torch.cuda.max_memory_allocated. A configuration is skipped
at lengths where its estimated memory would exceed --max-gb: dense-explicit stops early
and its fitted line is extrapolated to 16k (said so in the table).

Slopes are least-squares fits of log(value) against log(T) over T >= --fit-from (small
lengths are dominated by fixed costs). On CUDA the sparse configurations run the
block-sparse Triton kernel (minift.kernels.block_sparse_attention); without CUDA that
part is skipped with a message.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time

CONFIGS = ("dense-explicit", "dense-sdpa", "sliding-window", "bigbird", "hierarchical")
SPARSE = ("sliding-window", "bigbird")
LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_LENGTHS = (512, 1024, 2048)
WIDTH = dict(vocab_size=512, n_layer=2, n_head=2, n_embd=64)
SEGMENT = 512


# ------------------------------------------------------------------------ one measurement
def build(name: str, T: int):
    import torch

    from minift.longctx.hierarchical import HANClassifier
    from minift.model import GPT, GPTConfig

    torch.manual_seed(0)
    if name == "hierarchical":
        return HANClassifier(GPT(GPTConfig(block_size=SEGMENT, **WIDTH)), 4)
    block = max(T, 128)
    sparse = {}
    if name == "sliding-window":
        sparse = dict(pattern="sliding_window", window=2)
    elif name == "bigbird":
        sparse = dict(pattern="bigbird", window=2, n_global=1, n_random=1)
    if sparse:
        sparse.update(block_size=64, impl="efficient")
        block = math.ceil(block / 64) * 64
    return GPT(GPTConfig(block_size=block, **WIDTH, sparse=sparse))


def step(name: str, model, T: int, device) -> None:
    import torch
    import torch.nn.functional as F

    from minift.longctx.hierarchical import segment_batch

    g = torch.Generator().manual_seed(T)
    ids = torch.randint(0, 500, (1, T), generator=g)
    if name == "hierarchical":
        batch = segment_batch(ids.tolist(), SEGMENT, 511)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch, labels=torch.zeros(1, dtype=torch.long, device=device)).loss
    else:
        out = model(
            ids.to(device), compute_logits=False, output_attentions=name == "dense-explicit"
        )
        loss = F.mse_loss(out.last_hidden.float(), torch.zeros_like(out.last_hidden.float()))
    loss.backward()


def worker(args: argparse.Namespace) -> dict:
    import torch

    from minift.utils import peak_memory_mb, reset_peak_memory

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.config, args.T).to(device)
    step(args.config, model, 128, device)  # warm-up: kernels, layouts, allocator
    model.zero_grad(set_to_none=True)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed pages back: a clean baseline
    except OSError:
        pass
    reset_peak_memory(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(args.config, model, args.T, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"config": args.config, "T": args.T, "device": device.type, "seconds": seconds,
            "peak_mb": peak_memory_mb(device)}  # fmt: skip


# ------------------------------------------------------------------------ the driver
def estimate_gb(name: str, T: int) -> float:
    """A rough upper bound of one step's memory, to skip runs that would not fit."""
    if name == "dense-explicit":  # scores, probs, grads: ~6 (T, T) float tensors per layer
        return 6 * WIDTH["n_layer"] * WIDTH["n_head"] * T * T * 4 / 2**30
    return T * 64 * 200 * 4 / 2**30  # linear: a few hundred floats per token and channel


def run_one(args, name: str, T: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--config", name, "--T", str(T),
           "--threads", str(args.threads), "--device", device]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} at T={T} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(rows: list[dict], key: str, fit_from: int) -> tuple[float, float] | None:
    """(slope, intercept) of log(value) = slope log(T) + intercept over T >= fit_from."""
    pts = [(math.log(r["T"]), math.log(max(r[key], 1e-9))) for r in rows if r["T"] >= fit_from]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return slope, my - slope * mx


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarise(rows: list[dict], lengths, fit_from: int) -> dict:
    out = {}
    top = max(lengths)
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        if not mine:
            continue
        entry = {}
        for key in ("seconds", "peak_mb"):
            f = fit(mine, key, fit_from)
            entry[f"{key}_slope"] = f[0] if f else None
            at_top = [r[key] for r in mine if r["T"] == top]
            if at_top:
                entry[f"{key}_at_max"], entry[f"{key}_at_max_extrapolated"] = at_top[0], False
            elif f:
                entry[f"{key}_at_max"] = math.exp(f[1] + f[0] * math.log(top))
                entry[f"{key}_at_max_extrapolated"] = True
        out[name] = entry
    return out


def format_table(rows: list[dict], summary: dict, lengths) -> str:
    lines = [f"{'config':16s} " + " ".join(f"{T:>15d}" for T in lengths)
             + f" {'slope s':>8s} {'slope MB':>8s}"]  # fmt: skip
    lines.append(f"{'':16s} " + " ".join(f"{'s / MB':>15s}" for _ in lengths))
    for name, entry in summary.items():
        cells = []
        for T in lengths:
            r = next((r for r in rows if r["config"] == name and r["T"] == T), None)
            cells.append(f"{r['seconds']:7.2f}/{r['peak_mb']:7.0f}" if r else f"{'(skipped)':>15s}")
        s, m = entry.get("seconds_slope"), entry.get("peak_mb_slope")
        lines.append(f"{name:16s} " + " ".join(cells)
                     + f" {s if s is None else f'{s:8.2f}'} {m if m is None else f'{m:8.2f}'}")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], summary: dict, path: pathlib.Path, title: str, fit_from: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in zip(axes, ("seconds", "peak_mb"), ("seconds", "peak memory (MB)")):
        for name in summary:
            mine = sorted((r for r in rows if r["config"] == name), key=lambda r: r["T"])
            f = fit(mine, key, fit_from)
            tag = f"{name} (slope {f[0]:.2f})" if f else name
            (line,) = ax.loglog([r["T"] for r in mine], [max(r[key], 1e-3) for r in mine],
                                "o-", label=tag)  # fmt: skip
            if f and mine and mine[-1]["T"] < max(r["T"] for r in rows):
                Ts = [mine[-1]["T"], max(r["T"] for r in rows)]
                ax.loglog(Ts, [math.exp(f[1] + f[0] * math.log(T)) for T in Ts], "--",
                          color=line.get_color(), alpha=0.6)  # fmt: skip
        ax.set_xlabel("sequence length T (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title + " (dashed: extrapolated fit)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_device(args, device: str, lengths) -> tuple[list[dict], dict]:
    rows = []
    for name in CONFIGS:
        for T in lengths:
            if estimate_gb(name, T) > args.max_gb:
                print(f"  {name:16s} T={T:6d}: skipped (~{estimate_gb(name, T):.0f} GB > --max-gb)")
                continue
            r = run_one(args, name, T, device)
            print(
                f"  {name:16s} T={T:6d}: {r['seconds']:8.3f} s {r['peak_mb']:9.1f} MB", flush=True
            )
            rows.append(r)
    return rows, summarise(rows, lengths, args.fit_from)


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    import torch

    if args.cuda_only and not torch.cuda.is_available():
        sys.exit("bench_long_context: --cuda-only needs a CUDA device, and torch sees none")
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": cpu_name(), "threads": args.threads, "cores": os.cpu_count(),
               "torch": torch.__version__, "load_average": os.getloadavg()[0]}  # fmt: skip
    print(
        f"CPU: {machine['cpu']}, {args.threads} thread(s), load average {machine['load_average']:.1f}"
    )
    results = {"machine": machine, "lengths": lengths, "fit_from": args.fit_from}
    summary, plots = {}, []
    if not args.cuda_only:
        rows, summary = run_device(args, "cpu", lengths)
        print(format_table(rows, summary, lengths))
        results["cpu"] = {"rows": rows, "summary": summary}
        plots.append(out / "bench_long_context_cpu.png")
        plot(rows, summary, plots[-1], "CPU, one forward + backward", args.fit_from)
    if torch.cuda.is_available():
        print(f"CUDA: {torch.cuda.get_device_name()} (sparse configs: Triton block-sparse kernel)")
        rows_gpu, summary_gpu = run_device(args, "cuda", lengths)
        print(format_table(rows_gpu, summary_gpu, lengths))
        results["cuda"] = {"rows": rows_gpu, "summary": summary_gpu,
                           "device": torch.cuda.get_device_name()}  # fmt: skip
        plots.append(out / "bench_long_context_cuda.png")
        plot(rows_gpu, summary_gpu, plots[-1], "CUDA", args.fit_from)
        summary = summary or summary_gpu  # the memory ratios below: CUDA's with --cuda-only
    else:
        print("no CUDA device: the GPU part (Triton block-sparse kernel) is skipped")
    dense = summary.get("dense-explicit", {}).get("peak_mb_at_max")
    for name in SPARSE:
        s = summary.get(name, {})
        if dense and s.get("peak_mb_at_max"):
            ratio = s["peak_mb_at_max"] / dense
            note = (
                " (dense extrapolated)"
                if summary["dense-explicit"]["peak_mb_at_max_extrapolated"]
                else ""
            )
            print(f"{name}: memory slope {s['peak_mb_slope']:.2f}, time slope "
                  f"{s['seconds_slope']:.2f}; at T={max(lengths)} {ratio:.3f} of dense-explicit's memory{note}")  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'results.json'} and {', '.join(map(str, plots))}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="T = 512 .. 2048 only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-gb", type=float, default=6.0, help="skip runs estimated above this")
    p.add_argument("--fit-from", type=int, default=1024, help="fit slopes over T >= this")
    p.add_argument("--cuda-only", action="store_true", help="skip the CPU part (needs CUDA)")
    p.add_argument("--out", default="runs/bench_long_context")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    main()
