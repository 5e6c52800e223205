"""`minift multitask`, `minift continual` and `minift fusion`: many tasks on one model, at
once, in turn, or as task adapters composed by AdapterFusion.

    minift multitask --tasks stdlib-package,doc-kind,doc-argcount --sampling temperature --temperature 2
    minift multitask --style instruction --weighting uncertainty
    minift continual --tasks doc-kind,stdlib-package,doc-returns --method ewc
    minift fusion --sources stdlib-package,doc-kind --target doc-argcount

The jobs are minift.recipes.multitask and minift.recipes.continual; every default here is
their configs'.
"""

from __future__ import annotations

import argparse
import math


def register(sub) -> None:
    from minift.multitask import SCHEMES
    from minift.multitask.weighting import WEIGHTINGS
    from minift.recipes.continual import CONTINUAL_METHODS, DEFAULT_STREAM, ContinualConfig
    from minift.recipes.multitask import DEFAULT_TASKS, STYLES, MultitaskConfig

    m = MultitaskConfig()
    s = sub.add_parser("multitask", help="fine-tune one model on several tasks at once")
    s.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated task names")
    s.add_argument("--sampling", default=m.sampling, choices=SCHEMES)
    s.add_argument("--temperature", type=float, default=m.temperature)
    s.add_argument("--cap", type=float, default=m.cap, help="K: examples a task counts as at most")
    s.add_argument("--weighting", default=m.weighting, choices=WEIGHTINGS)
    s.add_argument("--style", default=m.style, choices=STYLES)
    _common(s, m.train.steps, m.batch_size)
    s.set_defaults(func=cmd_multitask)

    c = ContinualConfig()
    s = sub.add_parser("continual", help="learn tasks one after another; measure forgetting")
    s.add_argument("--tasks", default=",".join(DEFAULT_STREAM), help="the stream, in order")
    s.add_argument("--method", default=c.method, choices=CONTINUAL_METHODS)
    s.add_argument("--ewc-lambda", type=float, default=c.ewc_lambda)
    s.add_argument("--l2sp-alpha", type=float, default=c.l2sp_alpha)
    s.add_argument("--replay-size", type=int, default=c.replay_size)
    _common(s, c.train.steps, c.batch_size, per_task=True)
    s.set_defaults(func=cmd_continual)

    s = sub.add_parser(
        "fusion", help="AdapterFusion: an adapter per source task, fused for a target"
    )
    s.add_argument(
        "--sources", default="stdlib-package,doc-kind", help="comma-separated task names"
    )
    s.add_argument("--target", default="doc-argcount", help="the task the fusion layer learns")
    s.add_argument("--reduction-factor", type=int, default=16, help="adapter width C / factor")
    s.add_argument("--fusion-reg", type=float, default=0.0, help="lambda of ||I - W_V||^2")
    _common(s, 60, 32, per_task=True)
    s.set_defaults(func=cmd_fusion)


def _common(s, steps: int, batch_size: int, per_task: bool = False) -> None:
    s.add_argument("--steps", type=int, default=steps, help="steps per task" if per_task else "steps in all")  # fmt: skip
    s.add_argument("--lr", type=float, default=None, help="default: full fine-tuning's")
    s.add_argument("--batch-size", type=int, default=batch_size)
    s.add_argument("--seed", type=int, default=0)


def _train(args, default_lr: float | None = None):
    from minift.recipes.multitask import train_config

    changes = {"steps": args.steps, "seed": args.seed}
    if args.lr is not None or default_lr is not None:
        changes["lr"] = args.lr if args.lr is not None else default_lr
    return train_config(**changes)


def cmd_multitask(args: argparse.Namespace) -> None:
    from minift.recipes.multitask import MultitaskConfig, load_tasks, run_multitask
    from minift.recipes.pretrain import load_base

    config = MultitaskConfig(
        sampling=args.sampling, temperature=args.temperature,
        cap=args.cap if args.cap > 0 else math.inf, weighting=args.weighting,
        style=args.style, batch_size=args.batch_size, train=_train(args),
    )  # fmt: skip
    tasks = load_tasks(args.tasks, seed=args.seed)  # bad names fail before the base loads
    base, enc = load_base()
    r = run_multitask(tasks, base, enc, config)
    print(f"{'task':16s} {'rate':>6s} {'steps':>5s} {'weight':>7s}  metric")
    for name, rate, n in zip(r.tasks, r.rates, r.steps_per_task):
        print(f"{name:16s} {rate:6.3f} {n:5d} {r.loss_weights[name]:7.3f}  {r.metric_names[name]} {r.metrics[name]:.3f}")  # fmt: skip
    print(f"mean {r.mean_metric:.3f} in {r.seconds:.1f}s")


def cmd_continual(args: argparse.Namespace) -> None:
    from minift.recipes.continual import ContinualConfig, run_continual
    from minift.recipes.multitask import load_tasks
    from minift.recipes.pretrain import load_base

    config = ContinualConfig(
        method=args.method, ewc_lambda=args.ewc_lambda, l2sp_alpha=args.l2sp_alpha,
        replay_size=args.replay_size, batch_size=args.batch_size, train=_train(args),
    )  # fmt: skip
    tasks = load_tasks(args.tasks, seed=args.seed)
    base, enc = load_base()
    r = run_continual(tasks, base, enc, config)
    print("accuracy matrix R[i][j] (row: after learning task i; column: task j)")
    print(" " * 16 + " ".join(f"{n[:10]:>10s}" for n in r.tasks))
    for name, row in zip(r.tasks, r.R):
        print(f"{name[:16]:16s}" + " ".join(f"{x:10.3f}" for x in row))
    s = r.summary
    print(f"{r.method}: ACC {s['acc']:.3f}, BWT {s['bwt']:+.3f}, forgetting {s['forgetting']:.3f}, {r.seconds:.1f}s")  # fmt: skip


def cmd_fusion(args: argparse.Namespace) -> None:
    from minift.peft.methods import METHODS
    from minift.recipes.multitask import load_tasks, run_adapter_fusion
    from minift.recipes.pretrain import load_base

    sources = load_tasks(args.sources, seed=args.seed)
    (target,) = load_tasks(args.target, seed=args.seed)
    if target.name in {t.name for t in sources}:
        raise ValueError(f"the target {target.name} is also a source; fuse other tasks' adapters")
    base, enc = load_base()
    train = _train(args, default_lr=METHODS["adapter"].lr)
    r = run_adapter_fusion(
        sources, target, base, enc, train=train, source_train=train,
        reduction_factor=args.reduction_factor, batch_size=args.batch_size,
        fusion_reg=args.fusion_reg,
    )  # fmt: skip
    for name, metric in r.source_metrics.items():
        print(f"adapter {name:16s} {r.metric_name} {metric:.3f} on its own task")
    print(f"fusion for {r.target}: {r.metric_name} {r.metric:.3f}, {r.trainable} trainable parameters, {r.seconds:.1f}s")  # fmt: skip
    print("mean attention over the adapters, per site:")
    for site, weights in r.weights.items():
        print(f"  {site}: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(r.sources, weights)))
