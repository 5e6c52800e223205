"""The main job: prepare the base model, fine-tune it on the default task, compare.

Each strategy fine-tunes a copy of the same pretrained base on the same task, with the
same steps and batches, each at its own learning rate (chosen by scripts/sweep_lr.py).
Two reference lines: "scratch" trains the same architecture from a random initialisation
(what transfer must beat), and "probe" fits a linear head to convergence on the frozen
features (what training anything inside the network must beat to be worth its cost).

Every other method starts its head from that same probe, fitted on its own starting
features (LP-FT: Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution"). A head started from the label words is far from its
optimum, and its first large gradients flow into the network and distort the features it
is about to use; started at the probe's optimum, the gradient steps go to what the frozen
features lack. ``head="words"`` runs the other start, at the registry's learning rates.

Every method is compared with full fine-tuning and with the probe on the same validation
rows (paired bootstrap, minift.metrics.compare), so a difference within noise is
reported as such. The table is printed, saved as JSON, and drawn:
validation metric (with its standard error) against trainable parameters, and each
method's validation curve.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from typing import Any

import torch

from minift.data.tasks import DEFAULT_TASK
from minift.metrics import accuracy_se, compare
from minift.peft.methods import METHODS
from minift.plot_labels import place_labels
from minift.recipes.finetune import (
    FinetuneConfig,
    FinetuneResult,
    finetune,
    train_config,
)
from minift.recipes.pretrain import base_report, load_base, size_name
from minift.recipes.tasks import get_task
from minift.utils import fast_mode, output_dir

# The strategies of the comparison: full and layer-wise fine-tuning, the PEFT families, a
# hybrid, a linear probe on frozen features, and training from scratch as the baseline.
DEFAULT_METHODS = (
    "full", "layerwise", "bitfit", "probe", "lora", "dora", "adapter", "ia3", "prefix",
    "prompt", "hybrid", "scratch",
)  # fmt: skip
# Where the curves have flattened on the default base, all but prompt and prefix tuning's,
# which 240 steps (rates swept again) did not raise (docs/benchmarks.md).
DEFAULT_STEPS = 160
FAST_STEPS = 20
# Every head starts from the converged probe (LP-FT, Kumar et al. 2022): the runs start
# where the probe ends, so "vs probe" measures what training inside the network adds.
DEFAULT_HEAD = "probe"
# The learning rates with that start, swept like the registry's (which were swept with the
# label-word head): `python scripts/sweep_lr.py --head probe`, docs/results/lr_sweep_probe.json
# (tests/test_method_registry.py checks these against it). A method not listed here runs at
# the registry's rate.
PROBE_HEAD_LR = {
    "lora": 5e-3, "full": 1 / 3000, "bitfit": 1e-2, "layerwise": 3e-3, "dora": 5e-3,
    "ia3": 1 / 30, "prefix": 3e-2, "prompt": 1 / 30, "adapter": 1e-2, "hybrid": 1.5e-2,
    "scratch": 1e-3,
}  # fmt: skip


def demo_config(method: str, head: str = DEFAULT_HEAD, **train: Any) -> FinetuneConfig:
    """``method`` as the demo runs it: this head start, at its rate for that start (the
    registry's for the label words, or for a method PROBE_HEAD_LR does not list); ``train``
    changes the rest of train_config (steps, seed, ...)."""
    lr = PROBE_HEAD_LR.get(method) if head == "probe" else None
    return FinetuneConfig(method=method, head=head, train=train_config(lr=lr, **train))


def standard_error(r: FinetuneResult) -> float:
    n = len(r.val_scores) if r.val_scores else 0
    return accuracy_se(r.metric, n) if n else float("nan")


def verdicts(results: Sequence[FinetuneResult]) -> dict[str, dict[str, str]]:
    """Each method against full fine-tuning and against the probe, on the same rows:
    "+0.031 (within noise)" or "-0.120 (real)" (95% paired bootstrap interval)."""
    by = {r.method: r for r in results if r.val_scores}
    out: dict[str, dict[str, str]] = {}
    for r in by.values():
        out[r.method] = {}
        for ref in ("full", "probe"):
            if ref in by and ref != r.method:
                c = compare(r.method, r.val_scores, ref, by[ref].val_scores)
                out[r.method][ref] = (
                    f"{c.difference:+.3f} ({'noise' if c.within_noise else 'real'})"
                )
    return out


def format_table(results: Sequence[FinetuneResult]) -> str:
    vs = verdicts(results)
    head = (
        f"{'method':<11}{'trainable':>11}{'%':>8}{'lr':>8}{'time s':>8}{'val loss':>9}"
        f"{'metric':>8}{'+-se':>7}  {'vs full':<17}{'vs probe':<17}% of full"
    )
    lines = [head, "-" * len(head)]
    full = next((r.metric for r in results if r.method == "full"), None)
    for r in results:
        lr = f"{r.train.lr:.0e}" if r.train is not None and r.fit is None else "fit"
        share = f"{100 * r.metric / full:.0f}%" if full else ""
        lines.append(
            f"{r.method:<11}{r.trainable:>11,}{r.trainable_percent:>8.3f}{lr:>8}{r.seconds:>8.1f}"
            f"{r.val_loss:>9.3f}{r.metric:>8.3f}{standard_error(r):>7.3f}  "
            f"{vs.get(r.method, {}).get('full', ''):<17}{vs.get(r.method, {}).get('probe', ''):<17}{share}"
        )
    lines.append(
        f"(metric: {results[0].metric_name} on {len(results[0].val_scores or [])} validation rows; "
        "vs: the difference and whether its 95% paired-bootstrap interval holds 0)"
    )
    return "\n".join(lines)


def plot_results(results: Sequence[FinetuneResult], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    steps = max(h["step"] for r in results for h in r.history)
    lines, points = [], []  # labelled once the axes are final
    for i, r in enumerate(results):
        color = colors[i % len(colors)]
        if r.method in ("scratch", "probe"):  # the two lines every method should clear
            style = "--" if r.method == "scratch" else ":"
            for ax in (ax1, ax2):
                ax.axhline(r.metric, color=color, linestyle=style, linewidth=1.2)
            lines.append((r.method, r.metric, color))
        if r.method != "scratch":
            point = (max(r.trainable, 1), r.metric)
            ax1.errorbar(*point, yerr=standard_error(r), fmt="o", color=color, capsize=3)
            points.append((r.method, point, color, standard_error(r)))
        pts = [(h["step"], h[r.metric_name]) for h in r.history if r.metric_name in h]
        if r.fit is None:
            ax2.plot(*zip(*pts), "o-" if r.method != "scratch" else "o--", ms=3, label=r.method, color=color)  # fmt: skip
        else:
            ax2.plot([], [], ":", color=color, label=f"{r.method} (fitted)")
    ax2.set_xlim(0, steps)
    ax1.set_xscale("log")
    ax1.set_xlabel("trainable parameters (log)")
    ax1.set_ylabel(results[0].metric_name)
    ax1.set_title("metric (+- 1 s.e.) vs trainable parameters")
    ax2.set_xlabel("step")
    ax2.set_ylabel(results[0].metric_name)
    ax2.set_title("validation curves")
    ax2.legend(fontsize=7, ncol=2, loc="lower right")
    if results[0].metric_name.endswith("accuracy"):  # the whole scale: no zoomed-in noise
        ax1.set_ylim(0, 1)
        ax2.set_ylim(0, 1)
    fig.tight_layout()
    taken = []
    for name, y, color in lines:  # at the right end; scratch's below its line, the probe's above
        label = ax1.annotate(
            name, (1, y), xycoords=("axes fraction", "data"), ha="right", fontsize=8,
            va="top" if name == "scratch" else "bottom", color=color,
        )  # fmt: skip
        taken.append(label.get_window_extent(fig.canvas.get_renderer()))
    place_labels(ax1, points, avoid=taken)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(
    methods: Sequence[str] = DEFAULT_METHODS,
    task_name: str = DEFAULT_TASK,
    steps: int | None = None,
    seed: int = 0,
    out: str | None = None,
    progress: bool = True,
    base_size: str | None = None,
    threads: int | None = None,
    head: str = DEFAULT_HEAD,
) -> list[FinetuneResult]:
    """Fine-tune the base with each method and compare (see the module docstring).

    The figures are reproducible on one machine: every run is seeded, the CPU kernels
    are deterministic for a fixed number of threads, and ``threads`` fixes that number
    (default: torch's, recorded in results.json). Another CPU, thread count or torch
    version sums floating-point numbers in another order, which moves the last digits
    of the losses and, through them, an accuracy by a row or two."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    FinetuneConfig(head=head)  # a bad head start fails here, before any work
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
    t0 = time.perf_counter()
    size = size_name(base_size)
    base, enc = load_base(progress=progress, size=size)
    report = base_report(size=size)
    print(
        f"base {size!r}: {report['params']:,} parameters, {report['tokens_seen']:,} pretraining "
        f"tokens, pydocs val loss {report['val_loss']:.3f} "
        f"(ready in {time.perf_counter() - t0:.0f} s)"
    )
    task = get_task(task_name, seed=seed)
    print(f"task {task.summary()}")
    start = "the converged probe (LP-FT)" if head == "probe" else "the label words' embeddings"
    print(f"every classifier head starts from {start}")
    steps = steps or (FAST_STEPS if fast_mode() else DEFAULT_STEPS)
    results = []
    for name in methods:
        config = demo_config(name, head, steps=steps, seed=seed, progress=progress)
        result = finetune(task, base, enc, config)
        print(
            f"  {name:<10} {result.metric_name}={result.metric:.3f}  ({result.seconds:.1f} s)",
            flush=True,
        )
        results.append(result)
    print()
    print(format_table(results))
    folder = output_dir("demo") if out is None else output_dir(out)
    (folder / "results.json").write_text(
        json.dumps(
            {
                "task": task.name,
                "base_size": size,
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                },
                "base": {k: v for k, v in report.items() if k != "history"},
                "steps": steps,
                "head": head,
                "results": [r.row() for r in results],
                "verdicts": verdicts(results),
                "val_scores": {r.method: r.val_scores for r in results},
                "history": {r.method: r.history for r in results},
            },
            indent=1,
        )
    )
    plot_results(results, folder / "results.png")
    print(
        f"\nresults: {folder / 'results.json'}, plot: {folder / 'results.png'} "
        f"(total {time.perf_counter() - t0:.0f} s)"
    )
    return results
