"""The main job: prepare the base model, fine-tune it on the default task, compare.

Each strategy fine-tunes a copy of the same pretrained base on the same task, with the
same steps and batches; "scratch" trains the same architecture from a random
initialisation, the baseline every transfer method must beat. The results table is
printed, saved as JSON, and drawn: validation metric against trainable parameters, and
each method's validation curve.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from minift.data.tasks import DEFAULT_TASK
from minift.peft.methods import METHODS
from minift.recipes.finetune import FinetuneConfig, FinetuneResult, finetune, train_config
from minift.recipes.pretrain import base_report, load_base
from minift.recipes.tasks import get_task
from minift.utils import fast_mode, output_dir

# The strategies of the comparison: full and layer-wise fine-tuning, the PEFT families, a
# hybrid, a linear probe on frozen features, and training from scratch as the baseline.
DEFAULT_METHODS = (
    "full", "layerwise", "bitfit", "probe", "lora", "dora", "adapter", "ia3", "prefix",
    "prompt", "hybrid", "scratch",
)  # fmt: skip


def format_table(results: Sequence[FinetuneResult]) -> str:
    head = f"{'method':<12}{'trainable':>12}{'%':>9}{'time s':>9}{'peak MB':>9}{'val loss':>10}  metric"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.method:<12}{r.trainable:>12,}{r.trainable_percent:>9.3f}{r.seconds:>9.1f}"
            f"{r.peak_mb:>9.1f}{r.val_loss:>10.3f}  {r.metric_name}={r.metric:.3f}"
        )
    return "\n".join(lines)


def plot_results(results: Sequence[FinetuneResult], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    for i, r in enumerate(results):
        color = colors[i % len(colors)]
        if r.method == "scratch":  # the baseline every transfer method should clear
            ax1.axhline(r.metric, color="grey", linestyle="--", linewidth=1)
        point = (max(r.trainable, 1), r.metric)
        ax1.scatter(*point, s=40, color=color)
        ax1.annotate(r.method, point, textcoords="offset points", xytext=(4, 4))
        pts = [(h["step"], h[r.metric_name]) for h in r.history if r.metric_name in h]
        style = "o--" if r.method == "scratch" else "o-"
        ax2.plot(*zip(*pts), style, label=r.method, color=color)
    ax1.set_xscale("log")
    ax1.set_xlabel("trainable parameters (log)")
    ax1.set_ylabel(results[0].metric_name)
    ax1.set_title("metric vs trainable parameters")
    ax2.set_xlabel("step")
    ax2.set_ylabel(results[0].metric_name)
    ax2.set_title("validation curves")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(
    methods: Sequence[str] = DEFAULT_METHODS,
    task_name: str = DEFAULT_TASK,
    steps: int | None = None,
    seed: int = 0,
    out: str | None = None,
    progress: bool = True,
) -> list[FinetuneResult]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
    t0 = time.perf_counter()
    base, enc = load_base(progress=progress)
    report = base_report()
    print(
        f"base model: {report['params']:,} parameters, pydocs val loss {report['val_loss']:.3f} "
        f"(ready in {time.perf_counter() - t0:.0f} s)"
    )
    task = get_task(task_name, seed=seed)
    print(f"task {task.summary()}")
    steps = steps or (20 if fast_mode() else 80)
    results = []
    for name in methods:
        train = train_config(steps=steps, seed=seed, progress=progress)
        config = FinetuneConfig(method=name, train=train)
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
                "base": {k: v for k, v in report.items() if k != "history"},
                "results": [r.row() for r in results],
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
