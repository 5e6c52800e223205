"""`minift distill`: distil a teacher into a smaller, faster student and report it.

    minift distill                                   # the default task, a sliced student
    minift distill --baseline --transfer 32          # + the student without a teacher,
                                                     #   + 32 unlabelled texts per batch
    minift distill --task pydocs --divergence reverse --on-policy 0.5   # a language model

For a task, the teacher is the embedded base fully fine-tuned on it (--teacher-steps);
for ``--task pydocs`` the teacher is the base itself. The report (report.json,
curves.png under --out) gives both models' parameters, tokens per second (inference and
training) and metric, and, with --baseline, the same student trained the same steps on
the labels alone.
"""

from __future__ import annotations

import argparse
import json
import pathlib


def register(sub) -> None:
    s = sub.add_parser("distill", help="distil a teacher into a smaller, faster student")
    s.add_argument("--task", default=None, help="task name, a .jsonl path, or 'pydocs' (LM)")
    s.add_argument("--teacher-steps", type=int, default=240)
    s.add_argument("--steps", type=int, default=240)
    s.add_argument("--init", default="slice", choices=["slice", "scratch", "every-k"])
    s.add_argument("--budget", type=float, default=0.25, help="student params / teacher's")
    s.add_argument("--layers", type=int, default=None, help="student blocks (default half)")
    s.add_argument("--heads", type=int, default=None, help="student heads (default half)")
    s.add_argument("--alpha", type=float, default=0.5, help="weight of the soft loss")
    s.add_argument("--temperature", type=float, default=2.0)
    s.add_argument("--divergence", default="forward", choices=["forward", "reverse", "jsd"])
    s.add_argument("--beta", type=float, default=0.5, help="the generalized JSD's beta")
    for name in ("hidden", "cosine", "attention", "attention-kl", "value-kl"):
        s.add_argument(f"--{name}", type=float, default=0.0, help=f"weight of the {name} loss")
    s.add_argument("--transfer", type=int, default=0, help="unlabelled texts per batch (task)")
    s.add_argument("--on-policy", type=float, default=0.0, help="fraction of student samples (LM)")
    s.add_argument("--prompt-len", type=int, default=16)
    s.add_argument("--baseline", action="store_true", help="also train without distillation")
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--eval-every", type=int, default=40)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--speed-repeats", type=int, default=10)
    s.add_argument("--out", default=None, help="report folder (default runs/distill)")
    s.add_argument("--save", default=None, help="save the student's backbone here")
    s.set_defaults(func=cmd_distill)


def config_from_args(args: argparse.Namespace, task_kind: str):
    from minift.distill.loop import DistillConfig

    return DistillConfig(
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        alpha=args.alpha,
        temperature=args.temperature,
        divergence=args.divergence,
        beta=args.beta,
        hidden=args.hidden,
        cosine=args.cosine,
        attention=args.attention,
        attention_kl=args.attention_kl,
        value_kl=args.value_kl,
        seed=args.seed,
        progress=True,
        desc=f"distill {task_kind}",
    )


def cmd_distill(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from minift.data.tasks import DEFAULT_TASK
    from minift.distill.loop import distill
    from minift.distill.objectives import (
        lm_objective,
        pydocs_summaries,
        task_objective,
        transfer_objective,
    )
    from minift.distill.onpolicy import OnPolicyBatches
    from minift.distill.report import format_speed_table, plot_validation_curves, speed_table
    from minift.io import write_json
    from minift.recipes.distill import (
        finetune_teacher,
        fresh,
        lm_calibration,
        make_student,
        student_shape,
        task_calibration,
    )
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task
    from minift.utils import output_dir

    name = args.task or DEFAULT_TASK
    lm = name == "pydocs"
    config = config_from_args(args, name)  # bad numbers fail here, before any training
    if args.transfer and lm:
        raise ValueError("--transfer adds unlabelled texts to a classification task, not to pydocs")
    if args.on_policy and not lm:
        raise ValueError("--on-policy samples text from the student: use it with --task pydocs")
    out = pathlib.Path(args.out) if args.out else output_dir("distill")
    out.mkdir(parents=True, exist_ok=True)
    base, enc = load_base()
    if lm:
        teacher, teacher_run = base, None
        objective = lm_objective(enc, batch_size=args.batch_size // 2, seq_len=64, seed=args.seed)
        calibration = lm_calibration(objective.batch_fn)
        labelled = objective
    else:
        task = get_task(name, seed=args.seed)
        print(task.summary())
        teacher, teacher_run = finetune_teacher(task, base, enc, args.teacher_steps, args.seed)
        objective = task_objective(task, enc, args.batch_size, seed=args.seed)
        calibration = task_calibration(task, enc)
        labelled = objective  # what the baseline trains on: the labels alone
        if args.transfer:
            seen = {r["text"] for r in task.val + task.train}
            texts = pydocs_summaries(seen)
            objective = transfer_objective(
                task, enc, texts, args.batch_size, args.transfer, seed=args.seed
            )
    shape = student_shape(teacher, args.budget, args.layers, args.heads)
    student, info = make_student(teacher, args.init, shape, calibration, args.seed)
    print(f"student: {shape}")
    baseline_student = fresh(student)
    train_objective = objective
    if args.on_policy:
        batches = OnPolicyBatches(student, objective.batch_fn, args.prompt_len, args.on_policy)
        train_objective = replace(objective, batch_fn=batches)
    runs = {"distilled": distill(teacher, student, train_objective, config, info)}
    if args.baseline:
        plain = replace(
            config, alpha=0.0, hidden=0, cosine=0, attention=0, attention_kl=0, value_kl=0
        )
        runs["no distillation (baseline)"] = distill(
            teacher, baseline_student, labelled, replace(plain, desc="baseline")
        )
    teacher_metrics = objective.eval_fn(teacher)
    batch = objective.batch_fn(0, 0)
    batch = batch if isinstance(batch, dict) else {"idx": batch[0], "targets": batch[1]}
    batch = {k: v for k, v in batch.items() if k != "unlabeled"}
    speed = speed_table(
        {"teacher": teacher, "student": runs["distilled"].student}, batch, args.speed_repeats
    )
    print(format_speed_table(speed))
    metric = objective.monitor
    print(f"teacher {metric} = {teacher_metrics[metric]:.4f}")
    for run_name, r in runs.items():
        print(f"{run_name:28s} {metric} = {r.metric:.4f}  val_loss = {r.val_loss:.4f}")
    plot_validation_curves(
        {k: r.history for k, r in runs.items()},
        metric,
        out / "curves.png",
        title=f"student on {name}",
        reference=teacher_metrics[metric] if metric != "val_loss" else None,
    )
    report = {
        "task": name,
        "teacher": {
            "params": speed[0]["params"],
            "metrics": teacher_metrics,
            "finetune_steps": args.teacher_steps if teacher_run else 0,
        },
        "student": {"params": speed[1]["params"], "shape": shape.__dict__, "init": args.init},
        "speed": speed,
        "runs": {k: r.row() for k, r in runs.items()},
        "histories": {k: r.history for k, r in runs.items()},
    }
    write_json(out / "report.json", report)
    print(f"report: {out / 'report.json'}, curves: {out / 'curves.png'}")
    if args.save:
        backbone = getattr(runs["distilled"].student, "backbone", runs["distilled"].student)
        backbone.save(args.save)
        (pathlib.Path(args.save) / "distill.json").write_text(
            json.dumps(report["runs"]["distilled"], indent=2, default=str)
        )
        print(f"saved the student's backbone to {args.save}")
