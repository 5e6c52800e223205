"""What a distillation run is judged by: size, speed, and the task metric.

- Parameters: every tensor once (tied embeddings counted once), task head included.
- Tokens per second, inference: forward passes under no_grad on one batch, the median of
  the timed repeats after warm-up; training: forward + loss + backward + AdamW step.
  Speed is measured here and in scripts/bench_distill.py, never asserted in a test.
- Peak memory over the timed repeats (minift.utils.peak_memory_mb: the CUDA allocator's
  peak, or the growth of the resident set on the CPU).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from minift.distill.loop import DistillResult, count_params, forward
from minift.distill.losses import hard_label_loss
from minift.utils import peak_memory_mb, reset_peak_memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_speed(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    mode: str = "inference",
    repeats: int = 10,
    warmup: int = 3,
) -> dict[str, float]:
    """{"tokens_per_s", "step_ms", "peak_mb"} for one batch (a loop batch dict).

    Training runs on a copy of the model, so the model passed in is not changed.
    """
    if mode not in ("inference", "train"):
        raise ValueError(f"mode must be 'inference' or 'train', got {mode!r}")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    tokens = int(batch["idx"].numel())
    if mode == "train":
        model = copy.deepcopy(model).train().requires_grad_(True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            out = forward(model, batch)
            hard_label_loss(out.logits, out.labels).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    else:
        was_training = model.training
        model.eval()

        @torch.no_grad()
        def step() -> None:
            forward(model, batch)

    try:
        for _ in range(warmup):
            step()
        _sync(device)
        reset_peak_memory(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = peak_memory_mb(device)
    finally:
        if mode == "inference":
            model.train(was_training)
    median = statistics.median(times)
    return {"tokens_per_s": tokens / median, "step_ms": 1000 * median, "peak_mb": peak}


def speed_table(
    models: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], repeats: int = 10
) -> list[dict[str, Any]]:
    """One row per model: parameters, inference and training tokens/s and peak memory,
    and the speed-up over the first model (the teacher)."""
    rows = []
    for name, model in models.items():
        inf = measure_speed(model, batch, "inference", repeats)
        train = measure_speed(model, batch, "train", max(3, repeats // 2))
        rows.append(
            {
                "model": name,
                "params": count_params(model),
                "infer_tok_s": inf["tokens_per_s"],
                "infer_peak_mb": inf["peak_mb"],
                "train_tok_s": train["tokens_per_s"],
                "train_peak_mb": train["peak_mb"],
            }
        )
    for r in rows:
        r["param_ratio"] = r["params"] / rows[0]["params"]
        r["infer_speedup"] = r["infer_tok_s"] / rows[0]["infer_tok_s"]
        r["train_speedup"] = r["train_tok_s"] / rows[0]["train_tok_s"]
    return rows


def format_speed_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'model':<22}{'params':>11}{'x teacher':>10}{'infer tok/s':>13}{'speed-up':>9}"
        f"{'train tok/s':>13}{'speed-up':>9}{'infer MB':>10}{'train MB':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<22}{r['params']:>11,}{r['param_ratio']:>10.3f}"
            f"{r['infer_tok_s']:>13,.0f}{r['infer_speedup']:>9.2f}"
            f"{r['train_tok_s']:>13,.0f}{r['train_speedup']:>9.2f}"
            f"{r['infer_peak_mb']:>10.1f}{r['train_peak_mb']:>10.1f}"
        )
    return "\n".join(lines)


def format_results(
    results: dict[str, Sequence[DistillResult]], reference: float | None = None
) -> str:
    """One row per run name, mean and spread over its seeds; reference = the teacher's metric."""
    lines = []
    for name, runs in results.items():
        metrics = [r.metric for r in runs]
        losses = [r.val_loss for r in runs]
        mean = statistics.mean(metrics)
        spread = statistics.stdev(metrics) if len(metrics) > 1 else 0.0
        rel = f"{100 * mean / reference:7.1f}%" if reference else ""
        lines.append(
            f"{name:<26}{runs[0].metric_name}={mean:.3f} +- {spread:.3f}{rel}  "
            f"val_loss={statistics.mean(losses):.3f}  (n={len(runs)})"
        )
    return "\n".join(lines)


def plot_validation_curves(
    curves: dict[str, list[dict]],
    metric: str,
    path,
    title: str = "",
    reference: float | None = None,
) -> None:
    """The student's validation metric (and loss) against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [metric] + (["val_loss"] if metric != "val_loss" else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in curves.items():
            pts = [(h["step"], h[key]) for h in history if key in h]
            if pts:
                style = "--" if "no distillation" in name or "baseline" in name else "-"
                ax.plot(*zip(*pts), style, marker="o", markersize=3, label=name)
        if reference is not None and key == metric:
            ax.axhline(reference, color="black", linewidth=1, label="teacher")
            ax.axhline(
                0.95 * reference, color="grey", linewidth=1, linestyle=":", label="95% of teacher"
            )
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
