"""`minift distill`: distil a teacher into a smaller, faster student and report it.

    minift distill                                   # the default task, a sliced student
    minift distill --baseline --transfer 32          # + the student without a teacher,
                                                     #   + 32 unlabelled texts per batch
    minift distill --task pydocs --divergence reverse --on-policy 0.5   # a language model

The job is minift.recipes.distill (DistillJob, run_distill); every default here is that
config's.
"""

from __future__ import annotations

import argparse

from minift.distill.config import FEATURE_LOSSES


def register(sub) -> None:
    from minift.distill.shape import INITS
    from minift.recipes.distill import DistillJob

    job = DistillJob()  # the defaults
    d, t = job.distill, job.distill.train
    s = sub.add_parser("distill", help="distil a teacher into a smaller, faster student")
    s.add_argument("--task", default=job.task, help="task name, a .jsonl path, or 'pydocs' (LM)")
    s.add_argument("--teacher-steps", type=int, default=job.teacher_steps)
    s.add_argument("--steps", type=int, default=t.steps)
    s.add_argument("--init", default=job.init, choices=INITS)
    s.add_argument("--budget", type=float, default=job.budget, help="student params / teacher's")
    s.add_argument("--layers", type=int, default=job.layers, help="student blocks (default half)")
    s.add_argument("--heads", type=int, default=job.heads, help="student heads (default half)")
    s.add_argument("--alpha", type=float, default=d.alpha, help="weight of the soft loss")
    s.add_argument("--temperature", type=float, default=d.temperature)
    s.add_argument("--divergence", default=d.divergence, choices=["forward", "reverse", "jsd"])
    s.add_argument("--beta", type=float, default=d.beta, help="the generalized JSD's beta")
    for name in FEATURE_LOSSES:
        flag = "--" + name.replace("_", "-")
        s.add_argument(
            flag, type=float, default=getattr(d, name), help=f"weight of the {name} loss"
        )
    s.add_argument("--transfer", type=int, default=job.transfer, help="unlabelled texts per batch (task)")  # fmt: skip
    s.add_argument("--on-policy", type=float, default=job.on_policy, help="fraction of student samples (LM)")  # fmt: skip
    s.add_argument("--prompt-len", type=int, default=job.prompt_len)
    s.add_argument("--baseline", action="store_true", help="also train without distillation")
    s.add_argument("--lr", type=float, default=t.lr)
    s.add_argument("--batch-size", type=int, default=job.batch_size)
    s.add_argument("--eval-every", type=int, default=t.eval_every)
    s.add_argument("--seed", type=int, default=t.seed)
    s.add_argument("--speed-repeats", type=int, default=job.speed_repeats)
    s.add_argument("--out", default=job.out, help="report folder (default runs/distill)")
    s.add_argument("--save", default=job.save, help="save the student's backbone here")
    s.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> None:
    from minift.distill.config import DistillConfig, train_config
    from minift.recipes.distill import DistillJob, run_distill

    train = train_config(steps=args.steps, lr=args.lr, eval_every=args.eval_every, seed=args.seed)
    losses = {name: getattr(args, name) for name in FEATURE_LOSSES}
    config = DistillConfig(
        alpha=args.alpha, temperature=args.temperature, divergence=args.divergence,
        beta=args.beta, **losses, train=train,
    )  # fmt: skip
    job = DistillJob(
        task=args.task, teacher_steps=args.teacher_steps, init=args.init, budget=args.budget,
        layers=args.layers, heads=args.heads, batch_size=args.batch_size,
        transfer=args.transfer, on_policy=args.on_policy, prompt_len=args.prompt_len,
        baseline=args.baseline, speed_repeats=args.speed_repeats, out=args.out,
        save=args.save, distill=config,
    )  # fmt: skip
    run_distill(job)  # bad values fail above, in the configs, before any training
