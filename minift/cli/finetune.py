"""`minift finetune`, `minift eval` and `minift demo`: fine-tune the base on a task (and
save the result), evaluate a saved model, compare strategies.

`minift finetune --method M --help` lists M's own options, generated from its config
dataclass (minift.cli.options): e.g. `--method lora --r 16 --target-modules c_attn,c_fc`.
"""

from __future__ import annotations

from minift.cli.model import load_model_and_encoding
from minift.cli.options import method_options_parser


def register(sub) -> None:
    from minift.data.tasks import DEFAULT_TASK
    from minift.imbalance import BALANCES
    from minift.peft.methods import METHODS
    from minift.recipes.demo import DEFAULT_HEAD as DEMO_HEAD
    from minift.recipes.finetune import HEAD_STARTS, FinetuneConfig

    defaults = FinetuneConfig()  # one default per setting: the recipe's
    s = method_options_parser(
        sub, "finetune", METHODS, help="fine-tune on a registered task or a JSONL file",
        description="Fine-tune a copy of the base on a task. Each method has options of its "
        "own: `minift finetune --method M --help` lists those of M.",
    )  # fmt: skip
    s.add_argument(
        "--task", default=DEFAULT_TASK, help="task name (see `minift tasks`) or a .jsonl path"
    )
    s.add_argument("--method", default=defaults.method, choices=sorted(METHODS))
    s.add_argument("--model", help="base model folder (default: the embedded base)")
    s.add_argument("--steps", type=int, default=defaults.train.steps)
    s.add_argument("--batch-size", type=int, default=defaults.batch_size)
    s.add_argument("--lr", type=float, default=None, help="default: the method's own")
    s.add_argument("--max-len", type=int, default=defaults.max_len, help="tokens per example")
    s.add_argument("--head", default=defaults.head, choices=HEAD_STARTS,
                   help="where a classifier's head starts: the label words' embeddings, or the "
                   "converged linear probe on the starting features (LP-FT)")  # fmt: skip
    s.add_argument("--balance", default=defaults.balance, choices=BALANCES,
                   help="a remedy for skewed classes (smote: with --method probe only)")  # fmt: skip
    s.add_argument("--eval-every", type=int, default=defaults.train.eval_every)
    s.add_argument("--seed", type=int, default=defaults.train.seed)
    s.add_argument("--out", help="folder for metrics.jsonl and loss.png")
    s.add_argument("--save", help="save the fine-tuned model in this (new or empty) folder")
    s.add_argument("--merge", action="store_true", help="save LoRA/DoRA/IA3 merged into the weights")  # fmt: skip
    s.add_argument("--overwrite", action="store_true", help="replace what --save/--out hold")
    s.add_argument("--ckpt-every", type=int, default=defaults.train.ckpt_every,
                   help="checkpoint into --out every N steps (0: none)")  # fmt: skip
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint")  # fmt: skip
    s.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where it trains (under --fsdp: gloo on cpu, nccl on cuda:LOCAL_RANK)")  # fmt: skip
    s.add_argument("--fsdp", action="store_true",
                   help="shard the model over the processes of `torchrun --nproc_per_node=W -m minift finetune ...`")  # fmt: skip
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser(
        "eval", help="evaluate a model: its own task, a file, or a suite with a report",
        description="Without --suite: a model saved by `minift finetune --save` on its task "
        "(or --task / --data). With --suite default|TASK[,TASK] (or --model base, or a TSV/CSV "
        "--data): every task with its standard metrics and 95%% intervals, a table, and "
        "report.json + report.md in --out.",
    )  # fmt: skip
    s.add_argument("--model", required=True, help="a folder written by --save, a model folder, or 'base'")  # fmt: skip
    s.add_argument("--task", help="a registered task (default: the one it was trained on)")
    s.add_argument("--data", help="a JSONL file, or a TSV/CSV of labelled texts (every row)")
    s.add_argument("--suite", help="default, or comma-separated tasks (lm-pydocs for bits per byte)")  # fmt: skip
    s.add_argument("--text-column", default="text", help="TSV/CSV: the column of texts")
    s.add_argument("--label-column", default="label", help="TSV/CSV: the column of labels")
    s.add_argument("--out", help="folder for report.json and report.md (default runs/eval/NAME)")
    s.add_argument("--no-contamination", action="store_true", help="skip the n-gram overlap check")  # fmt: skip
    s.add_argument("--compare", help="a report.json of another model: paired tests, task by task")  # fmt: skip
    s.add_argument("--seed", type=int, default=0, help="the seed the tasks are built with")
    s.add_argument("--batch-size", type=int, default=defaults.batch_size)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser(
        "demo", help="the main job: compare fine-tuning strategies on the default task"
    )
    s.add_argument("--methods", help="comma-separated methods (default: all)")
    s.add_argument("--task", default=DEFAULT_TASK)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="output folder under runs/ (default runs/demo)")
    s.add_argument(
        "--base", default=None, help="base size: tiny | small | base | gpu (default: base)"
    )
    s.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads (fixed for figures that repeat exactly; default: torch's)",
    )  # fmt: skip
    s.add_argument("--head", default=DEMO_HEAD, choices=HEAD_STARTS,
                   help="where each head starts: the converged probe (LP-FT, each method at "
                   "its rate for that start) or the label words (the registry's rates)")  # fmt: skip
    s.set_defaults(func=cmd_demo)


def cmd_finetune(args) -> None:
    if not args.fsdp:
        return finetune_job(args, args.device)
    from minift.train.fsdp import fsdp_processes

    with fsdp_processes(args.device) as device:  # every process runs the job; rank 0 prints
        return finetune_job(args, device)


def finetune_job(args, device) -> None:
    from minift.peft.methods import METHODS
    from minift.recipes.demo import format_table
    from minift.recipes.finetune import FinetuneConfig, finetune, train_config
    from minift.recipes.saved import base_reference, check_destination, check_merge, save_finetuned
    from minift.recipes.tasks import get_task

    METHODS[args.method].make_config(args.options)  # bad options fail before any work
    if args.save:  # so is a destination that could not take the model
        check_destination(args.save, args.overwrite)
        if args.merge:
            check_merge(args.method)
    elif args.merge:
        raise ValueError("--merge applies to what --save writes; give --save DIR")
    if args.resume and (not args.out or args.overwrite):
        raise ValueError("--resume continues the run in --out: give --out DIR, without --overwrite")
    train = train_config(
        steps=args.steps, lr=args.lr, eval_every=args.eval_every, seed=args.seed,
        out_dir=args.out, overwrite=args.overwrite, ckpt_every=args.ckpt_every,
    )  # fmt: skip
    config = FinetuneConfig(
        method=args.method, options=args.options, batch_size=args.batch_size,
        max_len=args.max_len, balance=args.balance, head=args.head, train=train,
    )  # fmt: skip
    base, enc = load_model_and_encoding(args.model)
    refuse_unmerged_adapters(base, args.model)
    task = get_task(args.task, seed=args.seed)
    print(task.summary())
    result = finetune(
        task, base, enc, config, device, keep_model=args.save is not None, resume=args.resume,
        fsdp=args.fsdp,
    )  # fmt: skip
    print(format_table([result]))
    if result.cost is not None:
        from minift.train.cost import CostReport

        print("cost:", CostReport(**result.cost).line())
    if args.save and result.model is not None:  # under --fsdp only rank 0 holds the model
        ref = base_reference(args.model, base)
        path = save_finetuned(
            args.save, result, task, enc, ref, args.merge, args.overwrite, config=config
        )
        print(f"saved the fine-tuned model ({args.method}) in {path}")


def refuse_unmerged_adapters(base, path: str | None) -> None:
    """A saved adapter folder as --model: its adapters would be saved again inside a plain
    model folder that no loader reads, so ask for the merged model instead."""
    from minift.peft.core import adapter_layers

    methods = sorted({layer.method for _, layer in adapter_layers(base)})
    if methods:
        raise ValueError(
            f"--model {path} holds {', '.join(methods)} adapters that are not merged; fine-tune "
            "a merged copy (save it with --merge, or minift export --hf) or its base model"
        )


def cmd_eval(args) -> None:
    import sys

    from minift.data.tables import is_table

    if args.suite or args.model == "base" or (args.data and is_table(args.data)):
        return cmd_eval_suite(args)
    from minift.recipes.evaluate import evaluate_saved, record_on_card

    metrics, meta, task, n = evaluate_saved(args.model, args.task, args.data, args.batch_size, count=True)  # fmt: skip
    shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    print(f"{args.model} ({meta['method']}) on {task.name}, {len(task.val)} rows: {shown}")
    try:
        card = record_on_card(args.model, metrics, task, n, args.data)
    except ValueError as err:  # the evaluation stands; a card edited by hand is left alone
        return print(f"minift: the model card was not updated: {err}", file=sys.stderr)
    print(f"updated the metrics of the model card {card}" if card else "no model card to update")


def cmd_eval_suite(args) -> None:
    import pathlib

    from minift.io import read_json
    from minift.recipes.evaluate import compare_reports, report_markdown, run_suite, write_report

    other = read_json(args.compare, "report") if args.compare else None  # before any work
    suite = args.suite or (args.task if args.task else None if args.data else "default")
    if args.task and args.suite:
        raise ValueError("give --suite or --task, not both (a suite may be one task: --suite T)")
    report = run_suite(
        args.model, suite, args.data, args.text_column, args.label_column, args.seed,
        check_contamination=not args.no_contamination,
    )  # fmt: skip
    print(report_markdown(report))
    name = pathlib.Path(args.model).name or "model"
    paths = write_report(report, args.out or pathlib.Path("runs", "eval", name))
    print("wrote", " and ".join(paths))
    for comparison in compare_reports(report, other) if other else []:
        print(comparison)


def cmd_demo(args) -> None:
    from minift.recipes.demo import DEFAULT_METHODS, run_demo

    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
    run_demo(
        methods=methods, task_name=args.task, steps=args.steps, seed=args.seed, out=args.out,
        base_size=args.base, threads=args.threads, head=args.head,
    )  # fmt: skip
