"""Multi-task and continual benchmarks: the tables of issue 12, mean and spread over seeds.

    python scripts/bench_multitask.py            # 3 seeds, the shipped base (minutes on a CPU)
    python scripts/bench_multitask.py --quick    # 1 seed, fast mode's tiny base, few steps

Tables (each accuracy the mean over seeds, ± the standard deviation across seeds):
1. each task alone vs all together, at equal total steps (equal mixing);
2. the small task (doc-argcount) against the temperature T of the sampler;
3. pairs: each task trained with one other, minus alone (> 0 transfer, < 0 interference);
4. the continual stream: ACC, BWT, forgetting and seconds of every method.
Record the output in docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics


def mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, tiny base, few steps")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="steps per task")
    p.add_argument("--tasks", default="stdlib-package,doc-kind,doc-argcount")
    args = p.parse_args()
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
        args.seeds, args.steps = 1, 6

    from minift.recipes.continual import (  # fmt: skip
        CONTINUAL_METHODS,
        DEFAULT_STREAM,
        ContinualConfig,
        run_continual,
    )
    from minift.recipes.multitask import MultitaskConfig, load_tasks, run_multitask, train_config
    from minift.recipes.pretrain import load_base

    base, enc = load_base(progress=False)
    names = args.tasks.split(",")
    seeds = range(args.seeds)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; steps per task {args.steps}, seeds {list(seeds)}")  # fmt: skip

    def run(task_list, steps, seed, **kw):
        cfg = MultitaskConfig(train=train_config(steps=steps, seed=seed, progress=False), **kw)
        return run_multitask(task_list, base, enc, cfg).metrics

    alone = {n: [] for n in names}
    together = {n: [] for n in names}
    by_t: dict[float, list[float]] = {t: [] for t in (1.0, 2.0, 5.0)}
    pairs: dict[tuple[str, str], list[float]] = {}
    for seed in seeds:
        tasks = load_tasks(names, seed=seed)
        for t in tasks:
            alone[t.name].append(run([t], args.steps, seed)[t.name])
        joint = run(tasks, args.steps * len(tasks), seed, sampling="equal")
        for n in names:
            together[n].append(joint[n])
        small = names[-1]
        for temp in by_t:
            by_t[temp].append(run(tasks, args.steps * len(tasks), seed, temperature=temp)[small])
        for a, b in itertools.permutations(range(len(tasks)), 2):
            m = run([tasks[a], tasks[b]], 2 * args.steps, seed, sampling="equal")
            pairs.setdefault((names[a], names[b]), []).append(m[names[a]] - alone[names[a]][-1])

    print("\n| task | alone | together | together - alone |\n|---|---|---|---|")
    for n in names:
        diff = [j - a for j, a in zip(together[n], alone[n])]
        print(f"| {n} | {mean_sd(alone[n])} | {mean_sd(together[n])} | {mean_sd(diff)} |")
    print(f"\n| T | {names[-1]} accuracy |\n|---|---|")
    for temp, xs in by_t.items():
        print(f"| {temp:g} | {mean_sd(xs)} |")
    print("\n| task | trained with | accuracy minus alone |\n|---|---|---|")
    for (a, b), xs in pairs.items():
        print(f"| {a} | {b} | {mean_sd(xs)} |")

    print("\n| method | ACC | BWT | forgetting | seconds |\n|---|---|---|---|---|")
    for method in CONTINUAL_METHODS:
        rows = []
        for seed in seeds:
            cfg = ContinualConfig(method=method, train=train_config(steps=args.steps, seed=seed, progress=False))  # fmt: skip
            r = run_continual(load_tasks(DEFAULT_STREAM, seed=seed), base, enc, cfg)
            rows.append((r.summary["acc"], r.summary["bwt"], r.summary["forgetting"], r.seconds))
        cols = list(zip(*rows))
        print(f"| {method} | {mean_sd(list(cols[0]))} | {mean_sd(list(cols[1]))} | {mean_sd(list(cols[2]))} | {statistics.mean(cols[3]):.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
