"""`minift adapt`: unsupervised domain adaptation of a task to a target domain."""

from __future__ import annotations


def register(sub) -> None:
    from minift.recipes.adapt import (
        BACKBONE_DEFAULTS,
        BACKBONE_METHODS,
        BACKBONES,
        EMBEDDED_TARGET,
        METHODS,
        AdaptConfig,
    )

    d = AdaptConfig()
    s = sub.add_parser(
        "adapt", help="adapt a classification task to an unlabelled target domain",
        description="Fit a task on its (source) rows and adapt it to target text whose labels "
        "are never used: continued pretraining on target-domain text (dapt) or on the task's "
        "target texts (tapt), domain-adversarial training (dann) or self-training, or the chains "
        "tapt-dann (DANN from the TAPT base) and tapt-dann-self-train (its pseudo-labels, "
        "then DANN again each round); on the "
        "base's frozen features or with a fine-tuned backbone (--backbone lora|full). With --target-text pycode and --task stdlib-package the target "
        "(code comments) has labels, used only to report the gap closed.",
    )  # fmt: skip
    s.add_argument("--task", default="stdlib-package", help="the source task (classification)")
    s.add_argument("--target-text", default=EMBEDDED_TARGET,
                   help="a UTF-8 text file (one text per line) or 'pycode' (the stdlib's code comments)")  # fmt: skip
    s.add_argument("--method", default=d.method, choices=METHODS + BACKBONE_METHODS,
                   help=f"{', '.join(BACKBONE_METHODS)}: with --backbone lora|full only")  # fmt: skip
    s.add_argument("--backbone", default=d.backbone, choices=BACKBONES,
                   help="frozen: heads on the base's features; lora/full: fine-tune end to end")  # fmt: skip
    s.add_argument("--steps", type=int, default=d.steps, help="fine-tuning steps (lora/full)")
    s.add_argument("--lr", type=float, default=d.lr, help="fine-tuning lr (default: the method's)")  # fmt: skip
    s.add_argument("--self-train-from-dapt", action="store_true",
                   help="self-train from the base after task-adaptive pretraining (lora/full)")  # fmt: skip
    s.add_argument("--model", help="base model folder (default: the embedded base)")
    e = BACKBONE_DEFAULTS
    s.add_argument("--threshold", type=float, help=f"self-training confidence (default {d.threshold} frozen, {e['threshold']} lora/full)")  # fmt: skip
    s.add_argument("--rounds", type=int, help=f"self-training rounds (default {d.rounds} frozen, {e['rounds']} lora/full)")  # fmt: skip
    s.add_argument("--dann-lambda", type=float, help=f"DANN's final reversal weight (default {d.dann.lambd} frozen, {e['lambd']} lora/full)")  # fmt: skip
    s.add_argument("--dann-steps", type=int, default=d.dann.steps, help="DANN's steps on frozen features")  # fmt: skip
    s.add_argument("--dapt-steps", type=int, help=f"continued pretraining steps (default {d.dapt_steps} frozen, {e['dapt_steps']} lora/full)")  # fmt: skip
    s.add_argument("--seed", type=int, default=d.seed)
    s.set_defaults(func=cmd_adapt)


def cmd_adapt(args) -> None:
    import dataclasses

    from minift.cli.model import load_model_and_encoding
    from minift.recipes.adapt import (
        BACKBONE_DEFAULTS,
        AdaptConfig,
        run_adapt,
        target_rows,
    )
    from minift.recipes.tasks import get_task

    d = AdaptConfig()
    # unset options take the frozen defaults, or the trained backbone's (BACKBONE_DEFAULTS)
    e = BACKBONE_DEFAULTS if args.backbone != "frozen" else {"threshold": d.threshold, "rounds": d.rounds, "lambd": d.dann.lambd, "dapt_steps": d.dapt_steps, "dapt_lr": d.dapt_lr}  # fmt: skip
    pick = lambda value, key: e[key] if value is None else value  # noqa: E731
    config = AdaptConfig(
        method=args.method, backbone=args.backbone, steps=args.steps, lr=args.lr,
        self_train_from_dapt=args.self_train_from_dapt, seed=args.seed,
        threshold=pick(args.threshold, "threshold"), rounds=pick(args.rounds, "rounds"),
        dann=dataclasses.replace(d.dann, lambd=pick(args.dann_lambda, "lambd"), steps=args.dann_steps),
        dapt_steps=pick(args.dapt_steps, "dapt_steps"), dapt_lr=e["dapt_lr"],
    )  # fmt: skip
    task = get_task(args.task, seed=args.seed)
    target_rows(task, args.target_text, args.seed)  # a bad target fails before the base loads
    base, enc = load_model_and_encoding(args.model)
    print(task.summary())
    print(format_result(run_adapt(task, args.target_text, base, enc, config)))


def format_result(r) -> str:
    """What `minift adapt` prints: the shift (A-distance), then the target accuracies."""
    lines = [
        f"method {r.method}: source val accuracy {r.source_accuracy:.3f}",
        f"proxy A-distance source/target: {r.a_distance_before:.3f} before, "
        + (f"{r.a_distance_after:.3f} after" if r.a_distance_after is not None else "n/a after"),
    ]
    if r.target_accuracy is not None:
        closed = r.gap_closed
        lines.append(
            f"target accuracy: source-only {r.source_only_target:.3f}, {r.method} {r.target_accuracy:.3f}, "
            f"oracle {r.oracle_target:.3f}" + (f"; {closed:.0%} of the gap closed" if closed is not None else "")
        )  # fmt: skip
    else:
        lines.append(f"target (no labels): predicted classes {r.target_predictions}")
    return "\n".join(lines)
