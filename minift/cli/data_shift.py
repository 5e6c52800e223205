"""`minift adapt`: unsupervised domain adaptation of a task to a target domain."""

from __future__ import annotations


def register(sub) -> None:
    from minift.recipes.adapt import EMBEDDED_TARGET, METHODS, AdaptConfig

    d = AdaptConfig()
    s = sub.add_parser(
        "adapt", help="adapt a classification task to an unlabelled target domain",
        description="Fit a task on its (source) rows and adapt it to target text whose labels "
        "are never used: continued pretraining (dapt), domain-adversarial training (dann) or "
        "self-training. With --target-text pycode and --task stdlib-package the target "
        "(code comments) has labels, used only to report the gap closed.",
    )  # fmt: skip
    s.add_argument("--task", default="stdlib-package", help="the source task (classification)")
    s.add_argument("--target-text", default=EMBEDDED_TARGET,
                   help="a UTF-8 text file (one text per line) or 'pycode' (the stdlib's code comments)")  # fmt: skip
    s.add_argument("--method", default=d.method, choices=METHODS)
    s.add_argument("--model", help="base model folder (default: the embedded base)")
    s.add_argument("--threshold", type=float, default=d.threshold, help="self-training confidence")  # fmt: skip
    s.add_argument("--rounds", type=int, default=d.rounds, help="self-training rounds")
    s.add_argument("--dann-lambda", type=float, default=d.dann.lambd, help="DANN's final reversal weight")  # fmt: skip
    s.add_argument("--dann-steps", type=int, default=d.dann.steps)
    s.add_argument("--dapt-steps", type=int, default=d.dapt_steps)
    s.add_argument("--seed", type=int, default=d.seed)
    s.set_defaults(func=cmd_adapt)


def cmd_adapt(args) -> None:
    import dataclasses

    from minift.cli.model import load_model_and_encoding
    from minift.recipes.adapt import AdaptConfig, format_result, run_adapt, target_rows
    from minift.recipes.tasks import get_task

    d = AdaptConfig()
    config = AdaptConfig(
        method=args.method, threshold=args.threshold, rounds=args.rounds, seed=args.seed,
        dann=dataclasses.replace(d.dann, lambd=args.dann_lambda, steps=args.dann_steps),
        dapt_steps=args.dapt_steps,
    )  # fmt: skip
    task = get_task(args.task, seed=args.seed)
    target_rows(task, args.target_text, args.seed)  # a bad target fails before the base loads
    base, enc = load_model_and_encoding(args.model)
    print(task.summary())
    print(format_result(run_adapt(task, args.target_text, base, enc, config)))
