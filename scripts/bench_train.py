"""Training-step speed and memory: minift's GPT against transformers' GPT2LMHeadModel.

    python scripts/bench_train.py              # CPU (and CUDA when present), a few minutes
    python scripts/bench_train.py --quick      # two small sizes, about a minute
    python scripts/bench_train.py --threads 1  # steadier on a CPU shared with other jobs
    python scripts/bench_train.py --quick --cuda-only  # the CUDA rows alone (make gpu-check)

A training step is forward + cross-entropy + backward + AdamW step + zero_grad, on the
same batch of token ids, for both models, with identical configuration and weights
(minift's weights copied into the Hugging Face model, Conv1D matrices transposed; the
parity of logits and gradients is checked before timing). Each (model, size, device) runs
in a fresh subprocess, so one model's peak memory cannot hide the other's, and neither
inherits the other's allocator state. Per run: warm-up steps, then the median of the
timed steps; tokens per second = batch x seq_len / median step time.

Memory is measured over the timed steps, after the warm-up (which allocates the AdamW
moments and pages in the code the step runs, one-time costs that would otherwise swamp
a small model's numbers). On CUDA: torch.cuda.max_memory_allocated, so weights and AdamW
moments included. On the CPU: the growth of the process's peak resident set over its
value before the timed steps (minift.utils.reset_peak_memory / peak_memory_mb), so what
one step allocates on top of the weights and optimizer state: activations, gradients,
logits and temporaries. results.json also lists the weights' size. (GPT-2's "gelu_new" in
transformers is five elementwise ops, each saving a 4C-wide tensor for backward; minift
calls the fused F.gelu(approximate="tanh"), which explains most of the memory gap.)

The table goes to stdout, results.json and bench_train.png to --out.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from minift.model import GPT, GPTConfig
from minift.model.hf_gpt2 import CONV1D_SUFFIXES
from minift.utils import peak_memory_mb, reset_peak_memory

# name: (GPTConfig fields, batch, seq_len); the GPTConfig defaults are GPT-2's.
CPU_SIZES = {
    "base": (dict(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=128), 16, 128),
    "mid": (dict(vocab_size=4096, block_size=256, n_layer=6, n_head=6, n_embd=384), 4, 256),
    "gpt2-w768-L2": (dict(n_layer=2), 2, 128),
}
CUDA_SIZES = {
    "base": (dict(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=128), 64, 128),
    "gpt2-small": (dict(), 8, 1024),
    "gpt2-medium": (dict(n_layer=24, n_head=16, n_embd=1024), 4, 1024),
}
QUICK_SIZES = {
    "base": (dict(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=128), 8, 128),
    "w768-L2-v4096": (dict(vocab_size=4096, block_size=128, n_layer=2), 2, 128),
}
IMPLS = ("minift", "hf")


# ------------------------------------------------------------------------ the two models
def minift_model(fields: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**fields))


def hf_config(cfg: GPTConfig):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.n_inner,
        activation_function="gelu_new",  # the tanh approximation, as minift's MLP
        layer_norm_epsilon=cfg.norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        use_cache=False,
        bos_token_id=cfg.vocab_size - 1,  # GPT-2's 50256 does not exist in small vocabularies
        eos_token_id=cfg.vocab_size - 1,
        attn_implementation="sdpa",  # as minift, which calls F.scaled_dot_product_attention
    )


def hf_model(fields: dict, seed: int = 0):
    """The Hugging Face model holding exactly the weights minift_model(fields, seed) has."""
    from transformers import GPT2LMHeadModel

    source = minift_model(fields, seed)
    model = GPT2LMHeadModel(hf_config(source.config))
    state = {
        name: (t.t() if name.endswith(CONV1D_SUFFIXES) else t).contiguous()
        for name, t in source.state_dict().items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to wte, loaded through it
    if missing or unexpected:
        raise RuntimeError(f"weight mapping failed: missing {missing}, unexpected {unexpected}")
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise RuntimeError("the Hugging Face lm_head is not tied to wte")
    return model


def loss_of(impl: str, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if impl == "minift":
        return model(x, y).loss
    # The same cross-entropy on the same (pre-shifted) targets as minift.
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def batch(cfg: GPTConfig, batch_size: int, seq_len: int, device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1), generator=g)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


# ------------------------------------------------------------------------ parity
def parity(fields: dict, device: str) -> dict:
    """Logits, loss and gradients of both models on a small batch of the size's config."""
    cfg = GPTConfig(**fields)
    a, b = minift_model(fields).to(device), hf_model(fields).to(device)
    x, y = batch(cfg, 2, min(32, cfg.block_size), device)
    la, lb = a(x, y), b(input_ids=x, use_cache=False).logits
    loss_b = F.cross_entropy(lb.float().view(-1, lb.size(-1)), y.reshape(-1))
    la.loss.backward()
    loss_b.backward()
    ga = a.transformer.h[0].attn.c_attn.weight.grad
    gb = b.transformer.h[0].attn.c_attn.weight.grad.t()
    result = {
        "logits_max_diff": (la.logits - lb).abs().max().item(),
        "loss_diff": abs(la.loss.item() - loss_b.item()),
        "grad_c_attn_max_diff": (ga - gb).abs().max().item(),
        "params_minift": a.num_params(),
        "params_hf": sum(p.numel() for p in b.parameters()),
    }
    del a, b
    gc.collect()
    return result


# ------------------------------------------------------------------------ one worker run
def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so the RSS baseline is live memory only."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def worker(args: argparse.Namespace) -> dict:
    sizes = size_table(args)
    fields, batch_size, seq_len = sizes[args.size]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = (minift_model(fields) if args.impl == "minift" else hf_model(fields)).to(device)
    model.train()
    cfg = GPTConfig(**fields)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    x, y = batch(cfg, batch_size, seq_len, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> float:
        sync()
        t0 = time.perf_counter()
        with autocast:
            loss = loss_of(args.impl, model, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step()  # also allocates the AdamW moments and pages in the code the step runs
    release_freed_memory()
    reset_peak_memory(device)
    times = [step() for _ in range(args.steps)]
    peak = peak_memory_mb(device)
    median = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "impl": args.impl,
        "size": args.size,
        "device": device.type,
        "precision": args.precision,
        "batch": batch_size,
        "seq_len": seq_len,
        "params": n_params,
        "weights_mb": n_params * 4 / 2**20,
        "step_ms": 1e3 * median,
        "step_ms_all": [1e3 * t for t in times],
        "tokens_per_s": batch_size * seq_len / median,
        "peak_mb": peak,
        "threads": torch.get_num_threads(),
    }


def size_table(args: argparse.Namespace) -> dict:
    if args.quick:
        return QUICK_SIZES
    return CUDA_SIZES if args.device == "cuda" else CPU_SIZES


def run_worker(args: argparse.Namespace, impl: str, size: str, device: str) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", "--impl", impl, "--size", size,
        "--device", device, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--precision", args.precision, "--threads", str(args.threads),
    ] + (["--quick"] if args.quick else [])  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} {size} on {device} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ report
def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def warn_if_busy(when: str) -> None:
    """Timings on a CPU that other jobs share swing by several times (OpenMP threads spin
    while a sibling waits for a core); say so rather than print numbers as if clean."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is not None and load > 0.5 * cores:
        print(f"warning ({when}): load average {load:.1f} on {cores} cores; CPU timings are "
              "noisy (try --threads 1 and --repeats 2)")  # fmt: skip


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'device':6s} {'size':14s} {'batch x seq':>11s} {'params':>11s} "
        f"{'minift tok/s':>13s} {'HF tok/s':>10s} {'speed':>6s} "
        f"{'minift MB':>10s} {'HF MB':>8s} {'logits diff':>11s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m, h = r["minift"], r["hf"]
        lines.append(
            f"{m['device']:6s} {r['size']:14s} {m['batch']:>5d} x {m['seq_len']:<4d} "
            f"{m['params']:>11,} {m['tokens_per_s']:>13,.0f} {h['tokens_per_s']:>10,.0f} "
            f"{m['tokens_per_s'] / h['tokens_per_s']:>5.2f}x {m['peak_mb']:>10.0f} "
            f"{h['peak_mb']:>8.0f} {r['parity']['logits_max_diff']:>11.1e}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['minift']['device']}\n{r['size']}" for r in rows]
    xs = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(rows) + 4), 4))
    for ax, key, title in (
        (ax1, "tokens_per_s", "training throughput (tokens/s, higher is better)"),
        (ax2, "peak_mb", "peak memory MB (CPU: RSS growth; CUDA: allocated)"),
    ):
        for j, impl in enumerate(IMPLS):
            values = [r[impl][key] for r in rows]
            bars = ax.bar([x + (j - 0.5) * 0.38 for x in xs], values, 0.38, label=impl)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.cuda_only and not torch.cuda.is_available():
        sys.exit("bench_train: --cuda-only needs a CUDA device, and torch sees none")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cuda_only:  # on a lent GPU the CPU rows would spend its minutes
        devices = ["cuda"]
    else:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    import transformers

    env = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "precision": args.precision,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "cpu_threads": args.threads or torch.get_num_threads(),
        "load_average_start": load_average(),
    }
    print(
        f"CPU: {env['cpu']} ({env['cores']} cores)" + (f"; GPU: {env['gpu']}" if env["gpu"] else "")
    )
    print(f"torch {env['torch']}, transformers {env['transformers']}, {args.precision}, "
          f"{env['cpu_threads']} CPU threads; {args.warmup} warm-up + median of {args.steps} "
          f"steps, best of {args.repeats} runs")  # fmt: skip
    warn_if_busy("start")
    rows = []
    t0 = time.perf_counter()
    for device in devices:
        args.device = device
        for size in size_table(args):
            fields = size_table(args)[size][0]
            check = parity(fields, device)
            if check["params_minift"] != check["params_hf"] or check["loss_diff"] > 1e-3:
                raise RuntimeError(f"{size}: the two models differ: {check}")
            best: dict[str, dict] = {}
            for rep in range(args.repeats):
                # Alternate the order, so drift on a shared machine favours neither.
                for impl in IMPLS if rep % 2 == 0 else IMPLS[::-1]:
                    r = run_worker(args, impl, size, device)
                    if impl not in best or r["tokens_per_s"] > best[impl]["tokens_per_s"]:
                        best[impl] = r
            rows.append({"size": size, "parity": check, **best})
            m, h = best["minift"], best["hf"]
            print(
                f"  {device} {size}: minift {m['tokens_per_s']:,.0f} tok/s, HF "
                f"{h['tokens_per_s']:,.0f} tok/s; parity: logits {check['logits_max_diff']:.1e}, "
                f"grad {check['grad_c_attn_max_diff']:.1e} ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    env["load_average_end"] = load_average()
    warn_if_busy("end")
    table = format_table(rows)
    print()
    print(table)
    print("MB: CPU = peak RSS growth during a step (activations, gradients, temporaries; not the")
    print("    weights and AdamW moments); CUDA = torch.cuda.max_memory_allocated (everything)")
    (out / "results.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    plot(rows, out / "bench_train.png")
    print(f"results in {out / 'results.json'}, plot in {out / 'bench_train.png'}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench_train", help="folder for results.json and the plot")
    p.add_argument("--quick", action="store_true", help="small sizes and few steps (< 1 minute)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (median taken)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=1, help="fresh runs per model; best is kept")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    only.add_argument("--cuda-only", action="store_true", help="skip the CPU rows (needs CUDA)")
    # Internal: one measurement in this process, printed as JSON.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps is None:
        args.steps = 3 if args.quick else 8
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    return args


if __name__ == "__main__":
    main()
