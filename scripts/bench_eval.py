"""Label efficiency: accuracy against the number of labelled examples, for k-shot
prompting, the converged linear probe, LoRA and full fine-tuning (issue 16).

    python scripts/bench_eval.py                 # 3 seeds, the shipped base (several minutes on 2 cores)
    python scripts/bench_eval.py --quick         # 1 seed, fast mode's tiny base, few steps

For each seed, each N draws a class-balanced subset of stdlib-package's training rows
(minift.recipes.prompting.balanced_subset); every method sees the same subset, and is
scored on the same 240 validation rows. Prompting shows k = min(N, what fits) of them,
the most similar to each query; zero-shot needs no label. Each cell: the mean over seeds
± the standard deviation across seeds. Writes docs/results/eval.json and docs/eval.png
(--out changes the folder). Put the output in your notes with the machine, the command
and the load (`uptime`).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for m, runs in results["accuracy"].items():
        means = [statistics.mean(r[i] for r in runs) for i in range(len(sizes))]
        sds = [statistics.stdev([r[i] for r in runs]) if len(runs) > 1 else 0 for i in range(len(sizes))]  # fmt: skip
        ax.errorbar(sizes, means, yerr=sds, marker="o", capsize=3, label=m)
    z = results["zero_shot"]
    ax.axhline(statistics.mean(z), color="k", ls="--", label="zero-shot")
    ax.axhline(1 / 6, color="grey", ls=":", label="chance")
    ax.set(xscale="log", xlabel="labelled examples N", ylabel="validation accuracy (mean ± SD over seeds)", title=f"label efficiency, {results['base']} base, {results['steps']} steps")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 seed, the tiny base, few steps")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--sizes", default=None, help="comma-separated N (default 6,24,96,384,all)")
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for results/eval.json and eval.png")  # fmt: skip
    args = p.parse_args()
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
    sys.path.insert(0, str(ROOT))
    from minift.io import write_json
    from minift.recipes.pretrain import load_base
    from minift.recipes.prompting import label_efficiency
    from minift.recipes.tasks import get_task

    seeds = range(args.seeds or (1 if args.quick else 3))
    steps = args.steps or (8 if args.quick else 60)
    base, enc = load_base(progress=False)
    t0 = time.perf_counter()
    results: dict = {"accuracy": {}, "zero_shot": []}
    for seed in seeds:
        task = get_task("stdlib-package", seed=seed)
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([6, 24, 96] if args.quick else [6, 24, 96, 384, len(task.train)])  # fmt: skip
        curve = label_efficiency(task, base, enc, sizes, steps=steps, seed=seed)
        for m, accs in curve.accuracy.items():
            results["accuracy"].setdefault(m, []).append(accs)
        results["zero_shot"].append(curve.zero_shot)
        results["max_shots"] = curve.max_shots
    results.update(sizes=sizes, steps=steps, seeds=list(seeds), base="tiny" if args.quick else "shipped",
                   seconds=time.perf_counter() - t0, machine=platform.platform(), python=platform.python_version())  # fmt: skip
    print(f"\nlabel efficiency on stdlib-package, {steps} steps, {len(seeds)} seed(s); largest k that fits: {results['max_shots']}")  # fmt: skip
    print(
        "| N | " + " | ".join(results["accuracy"]) + " |\n|---|" + "---|" * len(results["accuracy"])
    )
    for i, n in enumerate(sizes):
        print(f"| {n} | " + " | ".join(mean_sd([r[i] for r in runs]) for runs in results["accuracy"].values()) + " |")  # fmt: skip
    print(f"| 0 (zero-shot) | {mean_sd(results['zero_shot'])} | | | |")
    print(f"{results['seconds']:.0f} s")
    out = pathlib.Path(args.out)
    write_json(out / "results" / "eval.json", results)
    plot(results, out / "eval.png")
    print("wrote", out / "results" / "eval.json", "and", out / "eval.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
