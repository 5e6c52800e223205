"""`minift tune`: hyperparameter search over fine-tuning runs (minift.recipes.tune).

    minift tune --methods lora,dora,adapter --time-budget 10m --trials 30
    minift tune --methods lora --scheduler random --trials 9 --max-steps 60

--methods with one name fixes the method; every default is TuneConfig's.
"""

from __future__ import annotations

import argparse


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '10m' or '1.5h' (argparse prints the message as given)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read duration {text!r}; write e.g. 90s, 10m or 1.5h"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be > 0, got {text!r}")
    return value


def register(sub) -> None:
    from minift.automl import SCHEDULERS
    from minift.recipes.tune import TuneConfig

    c = TuneConfig()
    s = sub.add_parser("tune", help="search method, learning rate and rank (random, halving, ASHA)")
    s.add_argument("--task", default=c.task)
    s.add_argument("--methods", default=",".join(c.methods), help="comma-separated; one name fixes it")  # fmt: skip
    s.add_argument("--scheduler", default=c.scheduler, choices=SCHEDULERS)
    s.add_argument("--trials", type=int, default=c.trials, help="trials sampled at most")
    s.add_argument("--time-budget", type=parse_duration, default=None, help="e.g. 10m; none by default")  # fmt: skip
    s.add_argument("--min-steps", type=int, default=c.min_steps, help="rung 0 (halving, ASHA)")
    s.add_argument("--max-steps", type=int, default=c.max_steps, help="full budget of a trial")
    s.add_argument("--eta", type=int, default=c.eta, help="keep the top 1/eta at each rung")
    s.add_argument("--lr", default=f"{c.lr[0]}:{c.lr[1]}", help="log-uniform range low:high")
    s.add_argument("--rank", default=f"{c.rank[0]}..{c.rank[1]}", help="LoRA rank range low..high")
    s.add_argument("--batch-size", type=int, default=c.batch_size)
    s.add_argument("--seed", type=int, default=c.seed)
    s.add_argument("--out", default=None, help="folder for trials.json and tune.png")
    s.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> None:
    import pathlib

    from minift.automl import parse_dimension
    from minift.io import write_json
    from minift.recipes.pretrain import load_base
    from minift.recipes.tune import TuneConfig, plot_tune, run_tune
    from minift.utils import output_dir

    lr = parse_dimension(f"lr={args.lr}:log")[1]
    rank = parse_dimension(f"r={args.rank}")[1]
    config = TuneConfig(
        task=args.task, methods=tuple(m for m in args.methods.split(",") if m),
        scheduler=args.scheduler, trials=args.trials, min_steps=args.min_steps,
        max_steps=args.max_steps, eta=args.eta, lr=(lr.low, lr.high), rank=(rank.low, rank.high),
        time_budget=args.time_budget, batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    base, enc = load_base()
    r = run_tune(config, base, enc)
    print(
        f"{'trial':>5s} {'method':8s} {'lr':>9s} {'options':24s} {'steps':>5s} {r.metric_name:>14s}"
    )
    for row in r.trials:
        opts = ", ".join(f"{k}={row[k]}" for k in ("r", "alpha", "reduction_factor") if k in row)
        print(f"{row['trial']:5d} {row['method']:8s} {row['lr']:9.2e} {opts:24s} {row['steps']:5d} {row['metric']:14.4f}")  # fmt: skip
    b = r.best
    print(f"best: trial {b['trial']} {b['method']} lr {b['lr']:.2e} -> {b['metric']:.4f} at {b['steps']} steps")  # fmt: skip
    print(f"cost: {r.total_steps} steps, {r.total_flops:.3g} FLOPs, {r.seconds:.1f} s")
    out = pathlib.Path(args.out) if args.out else output_dir("tune")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "trials.json", {"best": b, "trials": r.trials, "total_steps": r.total_steps,
                                     "seconds": r.seconds, "config": vars(args) | {"func": None}})  # fmt: skip
    plot_tune(r, out / "tune.png")
    print(f"trials and plot in {out}")
