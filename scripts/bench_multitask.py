"""Multi-task and continual benchmarks: the tables of issue 12, mean and spread over seeds.

    python scripts/bench_multitask.py            # 3 seeds, the shipped base (tens of minutes on 2 cores)
    python scripts/bench_multitask.py --quick    # 1 seed, fast mode's tiny base, few steps

Tables (each accuracy the mean over seeds, ± the standard deviation across seeds):
1. each task alone vs all together, at equal total steps (equal mixing);
2. the small task (the last of --tasks) against the temperature T of the sampler;
3. pairs: each task trained with one other, minus alone (> 0 transfer, < 0 interference);
4. AdapterFusion for the small task over adapters of the other tasks, against one adapter
   trained on the small task alone (same steps) and against full fine-tuning alone;
5. the continual stream: ACC, BWT, forgetting and seconds of every method.
Writes docs/results/multitask.json and docs/multitask.png (--out changes the folder).
Record the output in docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import itertools
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


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = results["tasks"]
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.6))
    ax = axes[0]
    x = np.arange(len(names))
    for k, key in enumerate(("alone", "together")):
        vals = [statistics.mean(results[key][n]) for n in names]
        errs = [_sd(results[key][n]) for n in names]
        ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, yerr=errs, capsize=3, label=key)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 1), ylabel="val accuracy (mean ± SD over seeds)", title="alone vs together, equal total steps")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    temps = sorted(results["by_temperature"], key=float)
    ys = [statistics.mean(results["by_temperature"][t]) for t in temps]
    es = [_sd(results["by_temperature"][t]) for t in temps]
    ax.errorbar([float(t) for t in temps], ys, yerr=es, marker="o", capsize=3)
    ax.set(xscale="log", xlabel="temperature T", ylabel=f"{names[-1]} accuracy", ylim=(0, 1), title="the small task against T")  # fmt: skip
    ax.set_xticks([float(t) for t in temps], [f"{float(t):g}" for t in temps])
    ax.minorticks_off()
    ax = axes[2]
    grid = np.full((len(names), len(names)), np.nan)
    for key, xs in results["pairs"].items():
        a, b = key.split(" + ")
        grid[names.index(a), names.index(b)] = statistics.mean(xs)
    lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim)
    for i, j in itertools.product(range(len(names)), repeat=2):
        if np.isfinite(grid[i, j]):
            ax.text(j, i, f"{grid[i, j]:+.3f}", ha="center", va="center", fontsize=8)
    ax.set(xticks=x, xticklabels=names, yticks=x, yticklabels=names, xlabel="trained with", ylabel="task", title="pair minus alone (blue: transfer)")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[3]
    methods = list(results["continual"])
    acc = [statistics.mean(results["continual"][m]["acc"]) for m in methods]
    fgt = [statistics.mean(results["continual"][m]["forgetting"]) for m in methods]
    xm = np.arange(len(methods))
    ax.bar(xm - 0.2, acc, 0.4, yerr=[_sd(results["continual"][m]["acc"]) for m in methods], capsize=3, label="ACC")  # fmt: skip
    ax.bar(xm + 0.2, fgt, 0.4, yerr=[_sd(results["continual"][m]["forgetting"]) for m in methods], capsize=3, label="forgetting")  # fmt: skip
    ax.set(xticks=xm, xticklabels=methods, title="continual stream", ylim=(0, 1))
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def multitask_tables(names, seeds, steps, run, base, enc) -> dict:
    """Tables 1-4: alone vs together, the temperature sweep, pairs, AdapterFusion."""
    from minift.recipes.finetune import FinetuneConfig, finetune
    from minift.recipes.multitask import load_tasks, run_adapter_fusion, train_config

    alone: dict[str, list[float]] = {n: [] for n in names}
    together: dict[str, list[float]] = {n: [] for n in names}
    by_t: dict[str, list[float]] = {str(t): [] for t in (1.0, 2.0, 5.0)}
    pairs: dict[str, list[float]] = {}
    fusion: dict[str, list[float]] = {"fusion": [], "one adapter": [], "full alone": []}
    small = names[-1]
    for seed in seeds:
        tasks = load_tasks(names, seed=seed)
        for t in tasks:
            alone[t.name].append(run([t], steps, seed)[t.name])
        joint = run(tasks, steps * len(tasks), seed, sampling="equal")
        for n in names:
            together[n].append(joint[n])
        for temp in by_t:
            by_t[temp].append(run(tasks, steps * len(tasks), seed, temperature=float(temp))[small])  # fmt: skip
        for a, b in itertools.permutations(range(len(tasks)), 2):
            m = run([tasks[a], tasks[b]], 2 * steps, seed, sampling="equal")
            pairs.setdefault(f"{names[a]} + {names[b]}", []).append(m[names[a]] - alone[names[a]][-1])  # fmt: skip
        # AdapterFusion: adapters of the other tasks, fused for the small one; against one
        # adapter on the small task (the same steps as the fusion stage, the adapters' rate).
        adapter_train = _with_lr(train_config(steps=steps, seed=seed, progress=False))
        fr = run_adapter_fusion(tasks[:-1], tasks[-1], base, enc, train=adapter_train, source_train=adapter_train)  # fmt: skip
        one = finetune(tasks[-1], base, enc, FinetuneConfig(method="adapter", options={"layout": "pfeiffer"}, train=adapter_train))  # fmt: skip
        fusion["fusion"].append(fr.metric)
        fusion["one adapter"].append(one.metric)
        fusion["full alone"].append(alone[small][-1])

    print("\n| task | alone | together | together - alone |\n|---|---|---|---|")
    for n in names:
        diff = [j - a for j, a in zip(together[n], alone[n])]
        print(f"| {n} | {mean_sd(alone[n])} | {mean_sd(together[n])} | {mean_sd(diff)} |")
    print(f"\n| T | {small} accuracy |\n|---|---|")
    for temp, xs in by_t.items():
        print(f"| {float(temp):g} | {mean_sd(xs)} |")
    print("\n| task + trained with | accuracy minus alone |\n|---|---|")
    for key, xs in pairs.items():
        print(f"| {key} | {mean_sd(xs)} |")
    print(f"\n| {small}, {steps} steps | accuracy |\n|---|---|")
    for key, xs in fusion.items():
        print(f"| {key} | {mean_sd(xs)} |")

    return {
        "alone": alone,
        "together": together,
        "by_temperature": by_t,
        "pairs": pairs,
        "fusion": fusion,
    }


def print_continual(continual: dict) -> None:
    """Table 5, with each method's share of naive's forgetting removed, its cost against
    naive's (CPU seconds), and where its ACC sits between naive (0) and joint (1)."""
    mean = {m: {k: statistics.mean(v) for k, v in rows.items()} for m, rows in continual.items()}
    naive, joint = mean["naive"], mean["joint"]
    print("\n| method | ACC | BWT | forgetting | forgetting removed | CPU time / naive | naive (0) to joint (1) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for m, rows in continual.items():
        removed = 1 - mean[m]["forgetting"] / naive["forgetting"] if naive["forgetting"] > 0 else float("nan")  # fmt: skip
        where = (mean[m]["acc"] - naive["acc"]) / (joint["acc"] - naive["acc"]) if joint["acc"] != naive["acc"] else float("nan")  # fmt: skip
        print(f"| {m} | {mean_sd(rows['acc'])} | {mean_sd(rows['bwt'])} | {mean_sd(rows['forgetting'])} | {removed:.0%} | x{mean[m]['cpu_seconds'] / naive['cpu_seconds']:.2f} | {where:+.2f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, tiny base, few steps")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="steps per task")
    p.add_argument("--tasks", default="stdlib-package,doc-kind,doc-argcount")
    p.add_argument("--out", default=None, help="folder for multitask.json and multitask.png")
    p.add_argument("--only", choices=("continual",), help="rerun table 5 alone, keeping the rest")
    args = p.parse_args()
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
        args.seeds, args.steps = 1, 6

    from minift.io import read_json, write_json
    from minift.recipes.continual import (  # fmt: skip
        CONTINUAL_METHODS,
        DEFAULT_STREAM,
        ContinualConfig,
        run_continual,
    )
    from minift.recipes.multitask import (  # fmt: skip
        MultitaskConfig,
        load_tasks,
        run_multitask,
        train_config,
    )
    from minift.recipes.pretrain import load_base

    t_start = time.perf_counter()
    base, enc = load_base(progress=False)
    names = args.tasks.split(",")
    seeds = list(range(args.seeds))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}; steps per task {args.steps}, seeds {seeds}")

    def run(task_list, steps, seed, **kw):
        cfg = MultitaskConfig(train=train_config(steps=steps, seed=seed, progress=False), **kw)
        return run_multitask(task_list, base, enc, cfg).metrics

    out = pathlib.Path(args.out) if args.out else (ROOT / "docs" if not args.quick else ROOT / "runs" / "bench_multitask")  # fmt: skip
    if args.only == "continual":  # keep the multi-task tables of the last full run
        results = read_json(out / "results" / "multitask.json", "the last full run's results")
    else:
        results = {"machine": machine, "steps_per_task": args.steps, "seeds": seeds, "tasks": names}
        results.update(multitask_tables(names, seeds, args.steps, run, base, enc))

    # Interleaved (each seed runs every method in turn) so that a change in the machine's
    # load falls on all methods alike; the CPU seconds of this process are the fairer cost
    # when other work shares the cores.
    continual: dict[str, dict[str, list[float]]] = {
        m: {"acc": [], "bwt": [], "forgetting": [], "seconds": [], "cpu_seconds": []} for m in CONTINUAL_METHODS
    }  # fmt: skip
    for seed in seeds:
        for method in CONTINUAL_METHODS:
            cfg = ContinualConfig(method=method, train=train_config(steps=args.steps, seed=seed, progress=False))  # fmt: skip
            cpu0 = time.process_time()
            r = run_continual(load_tasks(DEFAULT_STREAM, seed=seed), base, enc, cfg)
            rows = continual[method]
            for key in ("acc", "bwt", "forgetting"):
                rows[key].append(r.summary[key])
            rows["seconds"].append(r.seconds)
            rows["cpu_seconds"].append(time.process_time() - cpu0)
    print_continual(continual)

    results.update(
        command=" ".join(["python scripts/bench_multitask.py", *sys.argv[1:]]),
        stream=list(DEFAULT_STREAM), continual=continual,
        continual_seconds=time.perf_counter() - t_start,
    )  # fmt: skip
    (out / "results").mkdir(parents=True, exist_ok=True)
    write_json(out / "results" / "multitask.json", results)
    plot(results, out / "multitask.png")
    print(f"\nwrote {out / 'results' / 'multitask.json'} and {out / 'multitask.png'} ({time.perf_counter() - t_start:.0f}s)")  # fmt: skip


def _with_lr(train):
    """The adapters' registered learning rate (both stages of AdapterFusion use it)."""
    from dataclasses import replace

    from minift.peft.methods import METHODS

    return replace(train, lr=METHODS["adapter"].lr)


if __name__ == "__main__":
    main()
