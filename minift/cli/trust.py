"""`minift robust`: adversarial training and attacks on a fine-tuned classifier.

    minift robust --task doc-returns --method full --radius 0.2 --trainings standard,fgm,pgd,freelb
    minift robust --method lora --norm linf --radius 0.005 --radii 0.002,0.005 --swaps 1

The job is minift.recipes.robust; the algorithms minift.robust.
"""

from __future__ import annotations

import argparse


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def register(sub) -> None:
    from minift.peft.methods import METHODS
    from minift.recipes.robust import AttackConfig
    from minift.robust import NORMS

    a = AttackConfig()
    s = sub.add_parser("robust", help="adversarial training, and attacks on the result")
    s.add_argument("--task", default="doc-returns", help="a classification task")
    s.add_argument("--method", default="full", choices=sorted(METHODS))
    s.add_argument(
        "--trainings", default="standard,fgm,pgd,freelb",
        help="comma-separated: standard and any of fgm, pgd, freelb",
    )  # fmt: skip
    s.add_argument("--radius", type=float, default=0.2, help="adversarial training's radius")
    s.add_argument("--adv-steps", type=int, default=3, help="K ascent steps (pgd, freelb)")
    s.add_argument("--norm", default=a.norm, choices=NORMS)
    s.add_argument("--radii", type=_floats, default=a.radii, help="PGD attack radii")
    s.add_argument("--attack-steps", type=int, default=a.steps)
    s.add_argument("--swaps", type=int, default=a.swaps, help="HotFlip: tokens changed at most")
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--lr", type=float, default=None, help="default: the method's")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_robust)


def cmd_robust(args: argparse.Namespace) -> None:
    from minift.errors import UserError
    from minift.metrics import compare
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.robust import AttackConfig, run_robust
    from minift.recipes.tasks import get_task
    from minift.robust import ADVERSARIAL, AdversarialConfig
    from minift.utils import default_device

    names = [t.strip() for t in args.trainings.split(",") if t.strip()]
    unknown = [t for t in names if t != "standard" and t not in ADVERSARIAL]
    if unknown or not names:
        raise UserError(
            f"unknown training {unknown or names}; choices: standard, {', '.join(ADVERSARIAL)}"
        )
    trainings = {
        t: None if t == "standard" else AdversarialConfig(t, args.radius, args.norm, args.adv_steps)
        for t in names
    }
    attacks = AttackConfig(tuple(args.radii), args.norm, args.attack_steps, args.swaps)
    changes = {"steps": args.steps, "seed": args.seed, "eval_every": 0}
    if args.lr is not None:
        changes["lr"] = args.lr
    config = FinetuneConfig(method=args.method, train=train_config(**changes))
    task = get_task(args.task, seed=args.seed)
    base, enc = load_base()
    runs = run_robust(task, base, enc, config, trainings, attacks, default_device())
    cols = list(runs[0].scores)
    print(f"{args.task}, {args.method}, trained at radius {args.radius} ({args.norm}); accuracy:")
    print(f"{'training':12s}" + "".join(f"{c:>15s}" for c in cols) + f"{'seconds':>9s}")
    for r in runs:
        acc = r.accuracy()
        print(
            f"{r.training:12s}" + "".join(f"{acc[c]:>15.3f}" for c in cols) + f"{r.seconds:>9.1f}"
        )
    ref = runs[0]
    for r in runs[1:]:
        for c in cols:
            print(
                " ", compare(f"{r.training} {c}", r.scores[c], f"{ref.training} {c}", ref.scores[c])
            )
