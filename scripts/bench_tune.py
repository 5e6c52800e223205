"""ASHA against random search on the same trials: does ASHA reach random search's best
validation metric with at most half of its training steps? (issue goal; Li et al. 2020)

    python scripts/bench_tune.py                  # 3 seeds, the default base (minutes)
    python scripts/bench_tune.py --quick          # fast-mode base, tiny budgets (smoke test)

For each seed, both searches sample the same configurations in the same order (method in
lora, dora, adapter; lr log-uniform in [1e-4, 3e-2]; rank 2..16; alpha/r; adapter width):
random search trains each of the n trials for max_steps; ASHA starts the same n trials at
min_steps and promotes the top 1/eta of each rung (eta = 3). Every evaluation is a fresh
run from the base, so every step trained is counted. The table gives, per seed, the best
full-budget validation accuracy of each search and the steps each spent; the summary the
means over seeds with their standard errors (minift.metrics.mean_se).

Writes docs/results/tune.json and tune.png (best accuracy so far against cumulative steps).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import torch

from minift.io import write_json
from minift.metrics import mean_se
from minift.recipes.pretrain import load_base
from minift.recipes.tune import TuneConfig, run_tune

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fast-mode base, tiny budgets")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=9)
    p.add_argument("--min-steps", type=int, default=6)
    p.add_argument("--max-steps", type=int, default=54)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        os.environ["MINIFT_FAST"] = "1"
        args.trials, args.min_steps, args.max_steps, args.seeds = 3, 1, 3, "0"
    base, enc = load_base(progress=False, verbose=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, curves = [], {}
    for seed in seeds:
        for scheduler in ("random", "asha"):
            config = TuneConfig(
                scheduler=scheduler, trials=args.trials, min_steps=args.min_steps,
                max_steps=args.max_steps, eta=3, seed=seed,
            )  # fmt: skip
            t0 = time.perf_counter()
            r = run_tune(config, base, enc)
            curve, best = [], None
            for cum, _, steps, value in r.history:
                if steps == args.max_steps and (best is None or value > best):
                    best = value
                if best is not None:
                    curve.append((cum, best))
            curves[f"{scheduler} seed {seed}"] = curve
            row = dict(seed=seed, scheduler=scheduler, best=r.best["metric"],
                       best_method=r.best["method"], best_lr=r.best["lr"],
                       steps=r.total_steps, flops=r.total_flops,
                       seconds=time.perf_counter() - t0)  # fmt: skip
            rows.append(row)
            print(f"seed {seed} {scheduler:6s} best {row['best']:.4f} ({row['best_method']}, "
                  f"lr {row['best_lr']:.2e}) with {row['steps']} steps, {row['seconds']:.0f} s",
                  flush=True)  # fmt: skip
    summary = {}
    for scheduler in ("random", "asha"):
        mine = [r for r in rows if r["scheduler"] == scheduler]
        summary[scheduler] = dict(
            best=mean_se([r["best"] for r in mine]).__dict__ if len(mine) > 1 else mine[0]["best"],
            steps=sum(r["steps"] for r in mine) / len(mine),
        )
    rand = [r for r in rows if r["scheduler"] == "random"]
    ash = [r for r in rows if r["scheduler"] == "asha"]
    reached = sum(a["best"] >= r["best"] for a, r in zip(ash, rand))
    ratio = sum(a["steps"] for a in ash) / sum(r["steps"] for r in rand)
    mean_rand = sum(r["best"] for r in rand) / len(rand)
    mean_asha = sum(a["best"] for a in ash) / len(ash)
    print(f"\nmean best: random {mean_rand:.4f}, ASHA {mean_asha:.4f}; ASHA reached random's best "
          f"in {reached}/{len(seeds)} seeds with {ratio:.2f} of its steps")  # fmt: skip
    goal = mean_asha >= mean_rand and ratio <= 0.5
    print(
        f"goal (ASHA's mean best >= random's with <= half the steps): {'met' if goal else 'not met'}"
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / ("tune_quick.json" if args.quick else "tune.json"), dict(
        rows=rows, summary=summary, reached=reached, step_ratio=ratio, goal_met=goal,
        args=vars(args), threads=torch.get_num_threads(), load=os.getloadavg(),
    ))  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curve in curves.items():
        if curve:
            ax.step(*zip(*curve), where="post", ls="-" if name.startswith("asha") else "--",
                    label=name)  # fmt: skip
    ax.set(xlabel="steps trained (cumulative)", ylabel="best val accuracy at full budget",
           title="ASHA against random search, same trials")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / ("tune_quick.png" if args.quick else "tune.png"), dpi=110)
    print(f"results in {out}")


if __name__ == "__main__":
    main()
