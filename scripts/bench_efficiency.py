"""Precision, activation checkpointing, QLoRA and optimizers, measured on one job.

    python scripts/bench_efficiency.py               # the default base (a few minutes on a CPU)
    python scripts/bench_efficiency.py --quick       # fast-mode base, few steps (smoke test)
    python scripts/bench_efficiency.py --threads 1   # steadier on a CPU shared with other jobs
    python scripts/bench_efficiency.py --kernel-only # CUDA: the NF4 matmul kernel alone

The job: full fine-tuning (or LoRA / QLoRA, r = 8 on c_attn, c_proj, c_fc) of the pydocs
base on pycode, batch 8 x 64 tokens, the same batches for every row; the validation loss on
96 fixed windows of held-out modules. Timings are medians of the steps after the first
(the warm-up), on this machine and its load; the JSON records both.

Tables:
- precision: fp32 and bf16 autocast (and fp16 with minift's loss scaler on CUDA): ms/step,
  validation loss;
- activation checkpointing at T = 32, 64, 128: the bytes autograd keeps for the backward
  pass (a saved-tensors hook; on CUDA also torch.cuda.max_memory_allocated) and ms/step;
- QLoRA: bits per frozen weight, frozen-weight MiB in fp32 / bf16 / NF4, ms/step and
  validation loss of LoRA and QLoRA;
- optimizers: a 3-point learning-rate sweep for AdamW, SGD with momentum, Adafactor and
  Lion (40 steps), the best rate's validation loss, ms/step and state floats per parameter.

- NF4 kernel (CUDA only): y = x W^T with W in NF4, bf16, 4096 x 4096 (and 4096 -> 11008):
  the Triton kernel that decodes W's tiles inside the matmul, against dequantize-then-matmul
  (the CPU path) and against a plain bf16 weight, forward only (the backward dequantizes in
  both paths); relative error against the float32 definition.

Writes docs/results/efficiency.json and efficiency.png (or --out).
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import platform
import statistics
import time

import numpy as np
import torch

from minift.data.batching import window_batches
from minift.data.tokens import corpus_tokens
from minift.io import write_json
from minift.peft import LoRAConfig, apply_lora
from minift.quant import apply_qlora, frozen_weight_bits
from minift.recipes.pretrain import load_base
from minift.train import TrainConfig, Trainer
from minift.train.optimizers import state_floats_per_param

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS = ["c_attn", "c_proj", "c_fc"]
SWEEP = {"adamw": [3e-4, 1e-3, 3e-3], "sgd": [0.03, 0.1, 0.3], "adafactor": [3e-3, 1e-2, 3e-2],
         "lion": [1e-4, 3e-4, 1e-3]}  # fmt: skip


class Job:
    def __init__(self, base, enc, steps: int, device: torch.device, B=8, T=64, n_val=96):
        self.base, self.steps, self.device, self.B, self.T = base, steps, device, B, T
        self.batches = window_batches(corpus_tokens("pycode", "train", enc), B, T, seed=0)
        val = corpus_tokens("pycode", "val", enc)
        starts = np.linspace(0, len(val) - T - 2, n_val).astype(int)
        self.val = torch.from_numpy(np.stack([val[s : s + T + 1].astype(np.int64) for s in starts]))

    @torch.no_grad()
    def val_loss(self, model) -> float:
        model.eval()
        v = self.val.to(self.device)
        return float(np.mean([model(v[i : i + 32, :-1], v[i : i + 32, 1:]).loss.item()
                              for i in range(0, len(v), 32)]))  # fmt: skip

    def train(self, model, **changes) -> dict:
        times = []

        def on_step(done, trainer):
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        config = TrainConfig(**{"steps": self.steps, "lr": 1e-3, "warmup_steps": 2,
                                "weight_decay": 0.0, "progress": False, **changes})  # fmt: skip
        trainer = Trainer(model.to(self.device), config, self.batches, on_step=on_step)
        trainer.fit()
        ms = 1000 * statistics.median(np.diff(times)) if len(times) > 2 else float("nan")
        return dict(ms_per_step=ms, val_loss=self.val_loss(model), trainer=trainer)


def fresh(base, device):
    return copy.deepcopy(base).to(device)


def precision_rows(job: Job) -> list[dict]:
    rows = []
    precisions = ["fp32", "bf16"] + (["fp16"] if job.device.type == "cuda" else [])
    for p in precisions:
        r = job.train(fresh(job.base, job.device), precision=p)
        row = dict(precision=p, ms_per_step=r["ms_per_step"], val_loss=r["val_loss"])
        if p == "fp16":
            row["final_scale"] = r["trainer"].scaler.get_scale()
            row["skipped_steps"] = r["trainer"].scaler.skipped
        rows.append(row)
    return rows


def activation_bytes(model, x, y, checkpointing: bool) -> tuple[int, float, int | None]:
    model.activation_checkpointing = checkpointing
    model.train().zero_grad()
    weights = {p.data_ptr() for p in model.parameters()}
    total = [0]

    def pack(t):
        if t.data_ptr() not in weights:
            total[0] += t.numel() * t.element_size()
        return t

    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(4):
        t0 = time.perf_counter()
        ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if i == 0 else None
        if ctx is not None:
            with ctx:
                model(x, y).loss.backward()
        else:
            model(x, y).loss.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        model.zero_grad()
    if checkpointing:  # the block inputs checkpointing keeps (the hook cannot see them)
        total[0] += model.config.n_layer * x.numel() * model.config.n_embd * 4
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return total[0], 1000 * statistics.median(times[1:]), peak


def checkpoint_rows(job: Job) -> list[dict]:
    rows = []
    for T in sorted({min(t, job.base.config.block_size) for t in (32, 64, 128)}):
        x = torch.randint(0, job.base.config.vocab_size, (job.B, T), device=job.device)
        for ck in (False, True):
            model = fresh(job.base, job.device)
            nbytes, ms, peak = activation_bytes(model, x, x, ck)
            rows.append(dict(T=T, checkpointing=ck, activation_mib=nbytes / 2**20,
                             ms_per_fwd_bwd=ms, cuda_peak_mib=peak / 2**20 if peak else None))  # fmt: skip
    return rows


def qlora_rows(job: Job) -> list[dict]:
    rows = []
    lora = apply_lora(
        fresh(job.base, job.device), LoRAConfig(r=8, alpha=16, target_modules=TARGETS)
    )
    q = apply_qlora(fresh(job.base, job.device), r=8, alpha=16, target_modules=tuple(TARGETS))
    n_frozen = sum(m.base_layer.in_features * m.base_layer.out_features
                   for m in q.modules() if hasattr(m, "base_layer") and hasattr(m.base_layer, "packed"))  # fmt: skip
    bits = frozen_weight_bits(q)
    quantized_val = job.val_loss(q)
    for name, model in (("lora", lora), ("qlora", q)):
        r = job.train(model, lr=3e-3)
        rows.append(dict(method=name, ms_per_step=r["ms_per_step"], val_loss=r["val_loss"]))
    return [dict(bits_per_frozen_weight=bits, frozen_mib_fp32=n_frozen * 4 / 2**20,
                 frozen_mib_bf16=n_frozen * 2 / 2**20, frozen_mib_nf4=n_frozen * bits / 8 / 2**20,
                 base_val_loss=job.val_loss(job.base), nf4_base_val_loss=quantized_val)] + rows  # fmt: skip


def optimizer_rows(job: Job) -> list[dict]:
    rows = []
    for name, lrs in SWEEP.items():
        sweep = {}
        for lr in lrs:
            r = job.train(fresh(job.base, job.device), lr=lr, optimizer=name)
            sweep[lr] = r
        best = min(sweep, key=lambda lr: sweep[lr]["val_loss"])
        state = state_floats_per_param(sweep[best]["trainer"].optimizer)
        rows.append(dict(optimizer=name, sweep={str(k): v["val_loss"] for k, v in sweep.items()},
                         best_lr=best, val_loss=sweep[best]["val_loss"],
                         ms_per_step=sweep[best]["ms_per_step"], state_floats_per_param=state))  # fmt: skip
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    for row in rows:
        cells = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
        print("  " + "  ".join(c for c in cells if not c.startswith("sweep=")))
        if "sweep" in row:
            print(
                "    lr sweep (val loss): "
                + ", ".join(f"{k}: {v:.4f}" for k, v in row["sweep"].items())
            )


def nf4_kernel_rows(quick: bool = False) -> list[dict]:
    """Median ms of every way to apply an NF4 weight (CUDA, bf16), each checked first: the
    fused kernel (decode inside the matmul, its tiles tuned), the Triton dequantize pass then
    cuBLAS, PyTorch's dequantize ops then cuBLAS, the bf16 weight alone, and what
    ``nf4_linear`` runs (the tuner's pick between the first two)."""
    from minift.kernels.nf4 import dequantize_reference

    from minift.quant.nf4 import nf4_code_f32, quantize_nf4

    tokens = (16, 256, 4096) if quick else (16, 64, 256, 1024, 4096, 16384)
    shapes = ((4096, 4096),) if quick else ((4096, 4096), (11008, 4096))
    torch.manual_seed(0)
    dev, rows = torch.device("cuda"), []
    code = nf4_code_f32(dev)
    print(f"  {'tokens':>6} {'K -> N':>12} {'fused':>8} {'deq+mm':>8} {'torch deq':>9} "
          f"{'bf16':>8} {'auto':>8} {'picked':>8} {'auto/bf16':>9} {'rel err':>8}   (ms)")  # fmt: skip
    for n, k in shapes:
        q = quantize_nf4(torch.randn(n, k, device=dev) * 0.02)
        packed, scales = q.packed, q.block_scales()
        w32 = dequantize_reference(packed, scales, code, (n, k))
        for m in tokens:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            row = time_nf4(x, packed, scales, code, w32)
            rows.append(dict(tokens=m, n=n, k=k, **row))
            print(f"  {m:6d} {f'{k} -> {n}':>12} {row['fused_ms']:8.3f} {row['dequant_triton_then_matmul_ms']:8.3f} "
                  f"{row['dequant_torch_then_matmul_ms']:9.3f} {row['bf16_dense_ms']:8.3f} {row['auto_ms']:8.3f} "
                  f"{row['picked']:>8} {row['auto_vs_dense']:9.2f} {row['rel_err']:8.1e}")  # fmt: skip
    return rows


def time_nf4(x, packed, scales, code, w32) -> dict:
    """One row: each route's error against the float32 definition, then the timings (on CPU
    tensors with Triton's interpreter it runs too: tests/test_bench_kernel_rows.py)."""
    from minift.kernels import autotune
    from minift.kernels.nf4 import dequantize_reference, nf4_linear
    from minift.kernels.nf4_triton import nf4_matmul
    from triton.testing import do_bench

    shape, w16 = tuple(w32.shape), w32.to(x.dtype)
    ref = x.float() @ w32.T
    routes = {
        "fused": lambda: nf4_matmul(x, packed, scales, code, shape, UNFUSED=0),
        "dequant_triton_then_matmul": lambda: nf4_matmul(x, packed, scales, code, shape, UNFUSED=1),
        "dequant_torch_then_matmul": lambda: x @ dequantize_reference(packed, scales, code, shape).to(x.dtype).T,
        "bf16_dense": lambda: x @ w16.T,
        "auto": lambda: nf4_linear(x, packed, scales, code, shape),
    }  # fmt: skip
    row = {}
    for name, fn in routes.items():
        err = ((fn().float() - ref).norm() / ref.norm()).item()  # also compiles and tunes
        if name != "bf16_dense" and err > 2e-2:
            raise SystemExit(f"NF4 {name} at {tuple(x.shape)} -> {shape}: rel err {err:.2e}")
        row[f"{name}_ms"] = do_bench(fn, return_mode="median")
        row["rel_err"] = max(row.get("rel_err", 0.0), err if name != "bf16_dense" else 0.0)
    nf4 = [
        d
        for d in autotune.choices()
        if d["key"].startswith("nf4_matmul") and "UNFUSED" not in d["key"]
    ]
    row["picked"] = "unfused" if nf4 and nf4[-1]["config"].get("UNFUSED") else "fused"
    row["auto_vs_dense"] = row["auto_ms"] / row["bf16_dense_ms"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--kernel-only", action="store_true", help="only the NF4 kernel table (CUDA)")
    args = p.parse_args()
    if args.kernel_only:
        if not torch.cuda.is_available():
            raise SystemExit("--kernel-only times the NF4 Triton kernel and needs a CUDA GPU")
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print("== NF4 linear, bf16: Triton (decode in the matmul) vs dequantize-then-matmul vs bf16")  # fmt: skip
        write_json(out / "efficiency_nf4_kernel.json",
                   dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                        rows=nf4_kernel_rows(args.quick)))  # fmt: skip
        print(f"\nresults in {out}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
        args.steps = 4
    base, enc = load_base(progress=False, verbose=False)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = dict(machine=dict(cpu=platform.processor() or platform.machine(),
                                threads=torch.get_num_threads(), load=os.getloadavg(),
                                cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None),
                   steps=args.steps, base_params=base.num_params())  # fmt: skip
    for device in devices:
        job = Job(base, enc, args.steps, device)
        part = results[device.type] = {}
        for name, fn in (("precision", precision_rows), ("checkpointing", checkpoint_rows),
                         ("qlora", qlora_rows), ("optimizers", optimizer_rows)):  # fmt: skip
            t0 = time.perf_counter()
            part[name] = fn(job)
            show(f"[{device.type}] {name} ({time.perf_counter() - t0:.0f} s)", part[name])
        if device.type == "cuda":
            part["nf4_kernel"] = nf4_kernel_rows()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    write_json(out / f"efficiency{suffix}.json", results)
    plot(results, out / f"efficiency{suffix}.png")
    print(f"\nresults in {out}")


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = results["cpu"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ck = cpu["checkpointing"]
    for flag, style in ((False, "o-"), (True, "s--")):
        pts = [(r["activation_mib"], r["ms_per_fwd_bwd"]) for r in ck if r["checkpointing"] == flag]
        ax.plot(*zip(*pts), style, label="checkpointed" if flag else "plain")
        for r in ck:
            if r["checkpointing"] == flag:
                ax.annotate(f"T={r['T']}", (r["activation_mib"], r["ms_per_fwd_bwd"]), fontsize=7)
    ax.set(xlabel="activation MiB kept for backward", ylabel="ms per forward+backward",
           title="activation checkpointing (CPU)")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    opt = cpu["optimizers"]
    ax.bar([r["optimizer"] for r in opt], [r["state_floats_per_param"] for r in opt])
    for i, r in enumerate(opt):
        ax.annotate(f"val {r['val_loss']:.3f}\nlr {r['best_lr']:g}", (i, r["state_floats_per_param"]),
                    ha="center", fontsize=7)  # fmt: skip
    ax.set(ylabel="optimizer state floats per parameter", title="optimizers")
    ax = axes[2]
    q = cpu["qlora"][0]
    ax.bar(
        ["fp32", "bf16", "NF4"], [q["frozen_mib_fp32"], q["frozen_mib_bf16"], q["frozen_mib_nf4"]]
    )
    ax.set(ylabel="MiB of frozen linear weights", title=f"QLoRA base: {q['bits_per_frozen_weight']:.3f} bits/weight")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
