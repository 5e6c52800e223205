"""PEFT step time and memory: every minift method on the base model, and minift's LoRA
against peft's on the same transformers GPT-2.

    python scripts/bench_peft.py              # CPU (and CUDA when present)
    python scripts/bench_peft.py --quick      # fewer methods and steps
    python scripts/bench_peft.py --threads 1  # steadier on a shared CPU
    python scripts/bench_peft.py --quick --cuda-only  # the CUDA rows alone

Part 1, methods: for each fine-tuning method, one training step of the default task's
classifier on the base model (forward, backward, AdamW on the trainable parameters only),
batch 32 x 24 tokens: median step time and peak memory of the step.
Part 2, LoRA vs peft: a GPT-2 layout (width 256, 4 layers, 4096 tokens, batch 8 x 128)
with LoRA r=8 on c_attn, minift (GPT + apply_lora) against transformers' GPT2LMHeadModel +
peft.get_peft_model, with identical weights (bench_train.hf_model copies them) and identical
LoRA matrices (checked: the same loss before timing).

Every measurement runs in a fresh subprocess (peak memory is per process); timings are the
median of the timed steps after warm-up. Table to stdout, results.json and a plot to --out.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_train import cpu_name, hf_model, minift_model, release_freed_memory, warn_if_busy  # noqa: E402

from minift.utils import output_dir, peak_memory_mb, reset_peak_memory  # noqa: E402

METHODS = (
    "full",
    "layerwise",
    "bitfit",
    "probe",
    "lora",
    "dora",
    "adapter",
    "ia3",
    "prefix",
    "prompt",
    "hybrid",
)
QUICK_METHODS = ("full", "lora", "prefix")
GPT2_FIELDS = dict(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=256)
LORA_BATCH = (8, 128)


def timed_steps(step, warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(median seconds per step, peak MB over the timed steps)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    release_freed_memory()
    reset_peak_memory(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak_memory_mb(device)


def method_worker(method: str, device: torch.device, warmup: int, steps: int) -> dict:
    from minift.data.tasks import DEFAULT_TASK
    from minift.model.params import count_parameters
    from minift.peft.methods import METHODS, RunContext
    from minift.recipes.finetune import FinetuneConfig, build_model
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task
    from minift.train.objectives import task_objective

    base, enc = load_base(progress=False, verbose=False)
    task = get_task(DEFAULT_TASK)
    config = FinetuneConfig(method=method)
    run = RunContext(METHODS[method].lr, config.train.steps, config.train.weight_decay)
    model = build_model(base, task, enc, config)
    METHODS[method].prepare(model, METHODS[method].make_config(), run)
    model.to(device).train()
    batch_fn, loss_fn, *_ = task_objective(task, enc, config.max_len, config.batch_size)
    batch = {k: v.to(device) for k, v in batch_fn(0, 0).items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss, _ = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds, peak = timed_steps(step, warmup, steps, device)
    trainable, total = count_parameters(model)
    return {
        "method": method,
        "ms": 1000 * seconds,
        "peak_mb": peak,
        "trainable": trainable,
        "total": total,
    }


def lora_worker(impl: str, device: torch.device, warmup: int, steps: int) -> dict:
    from minift.peft import LoRAConfig, apply_lora

    B, T = LORA_BATCH
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, GPT2_FIELDS["vocab_size"], (B, T + 1), generator=g)
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    torch.manual_seed(1)
    A = [torch.randn(8, GPT2_FIELDS["n_embd"]) * 0.02 for _ in range(GPT2_FIELDS["n_layer"])]
    Bm = [torch.randn(3 * GPT2_FIELDS["n_embd"], 8) * 0.02 for _ in range(GPT2_FIELDS["n_layer"])]
    if impl == "minift":
        model = apply_lora(
            minift_model(GPT2_FIELDS), LoRAConfig(r=8, alpha=16, target_modules=["c_attn"])
        )
        with torch.no_grad():
            for i, block in enumerate(model.transformer.h):
                block.attn.c_attn.lora_A.copy_(A[i])
                block.attn.c_attn.lora_B.copy_(Bm[i])

        def loss_fn():
            return model(x, y).loss
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            hf_model(GPT2_FIELDS),
            LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True),
        )
        with torch.no_grad():
            for i, block in enumerate(model.base_model.model.transformer.h):
                block.attn.c_attn.lora_A["default"].weight.copy_(A[i])
                block.attn.c_attn.lora_B["default"].weight.copy_(Bm[i])

        def loss_fn():
            logits = model(input_ids=x, use_cache=False).logits
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    model.to(device).train()
    first_loss = loss_fn().item()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds, peak = timed_steps(step, warmup, steps, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"impl": impl, "ms": 1000 * seconds, "tok_s": B * T / seconds, "peak_mb": peak,
            "trainable": trainable, "first_loss": first_loss}  # fmt: skip


def run_child(args, kind: str, name: str, device: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, name, "--device", device,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {name} on {device} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(methods: list[dict], lora: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in methods:
        a.scatter(r["trainable"], r["ms"], s=30)
        a.annotate(
            r["method"],
            (r["trainable"], r["ms"]),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=8,
        )
    a.set_xscale("log")
    a.set_xlabel("trainable parameters (log)")
    a.set_ylabel("ms per training step")
    a.set_title(f"methods on the base model ({methods[0]['device']})")
    labels = [f"{r['impl']}\n{r['device']}" for r in lora]
    b.bar(labels, [r["ms"] for r in lora], color=["tab:blue", "tab:orange"] * len(lora))
    b.set_ylabel("ms per training step")
    b.set_title("LoRA r=8 on c_attn: minift vs peft")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cuda-only", action="store_true", help="skip the CPU rows (needs CUDA)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, name = args.child
        fn = method_worker if kind == "method" else lora_worker
        print(
            json.dumps(
                {
                    **fn(name, torch.device(args.device), args.warmup, args.steps),
                    "device": args.device,
                }
            )
        )
        return
    if args.quick:
        args.steps, args.warmup = min(args.steps, 5), min(args.warmup, 2)
    if args.cuda_only and not torch.cuda.is_available():
        sys.exit("bench_peft: --cuda-only needs a CUDA device, and torch sees none")
    devices = (
        ["cuda"] if args.cuda_only else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    warn_if_busy("start")
    methods, lora = [], []
    for device in devices:
        for m in QUICK_METHODS if args.quick else METHODS:
            methods.append(run_child(args, "method", m, device))
        for impl in ("minift", "peft"):
            lora.append(run_child(args, "lora", impl, device))
    print(
        f"\n{cpu_name()}, torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}"
    )
    print(
        f"{'device':6s} {'method':10s} {'trainable':>10s} {'%':>7s} {'ms/step':>8s} {'peak MB':>8s}"
    )
    for r in methods:
        print(f"{r['device']:6s} {r['method']:10s} {r['trainable']:>10,} {100 * r['trainable'] / r['total']:>7.2f} "
              f"{r['ms']:>8.1f} {r['peak_mb']:>8.1f}")  # fmt: skip
    print(
        f"\nLoRA r=8 on c_attn, width {GPT2_FIELDS['n_embd']}, {GPT2_FIELDS['n_layer']} layers, batch {LORA_BATCH}"
    )
    print(
        f"{'device':6s} {'impl':7s} {'trainable':>10s} {'ms/step':>8s} {'tok/s':>8s} {'peak MB':>8s} {'loss@0':>8s}"
    )
    for r in lora:
        print(f"{r['device']:6s} {r['impl']:7s} {r['trainable']:>10,} {r['ms']:>8.1f} {r['tok_s']:>8.0f} "
              f"{r['peak_mb']:>8.1f} {r['first_loss']:>8.4f}")  # fmt: skip
    for device in devices:
        pair = {r["impl"]: r for r in lora if r["device"] == device}
        if abs(pair["minift"]["first_loss"] - pair["peft"]["first_loss"]) > 1e-4:
            raise SystemExit(
                f"LoRA parity failed on {device}: the two models compute different losses"
            )
        print(
            f"{device}: minift/peft step time {pair['minift']['ms'] / pair['peft']['ms']:.2f}x, "
            f"peak memory {pair['minift']['peak_mb'] / max(pair['peft']['peak_mb'], 1e-9):.2f}x"
        )
    out = pathlib.Path(args.out) if args.out else output_dir("bench_peft")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"cpu": cpu_name(), "methods": methods, "lora": lora}, indent=1)
    )
    plot(methods, lora, out / "bench_peft.png")
    print(f"results: {out / 'results.json'}, plot: {out / 'bench_peft.png'}")


if __name__ == "__main__":
    main()
