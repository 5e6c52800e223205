"""`minift finetune` and `minift demo`: fine-tune the base on a task, compare strategies."""

from __future__ import annotations

from minift.cli.model import load_model_and_encoding


def register(sub) -> None:
    from minift.data.tasks import DEFAULT_TASK
    from minift.peft.methods import METHODS

    s = sub.add_parser("finetune", help="fine-tune on a registered task or a JSONL file")
    s.add_argument(
        "--task", default=DEFAULT_TASK, help="task name (see `minift tasks`) or a .jsonl path"
    )
    s.add_argument("--method", default="full", choices=sorted(METHODS))
    s.add_argument("--model", help="base model folder (default: the embedded base)")
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, default=None)
    s.add_argument("--max-len", type=int, default=64)
    s.add_argument("--eval-every", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="folder for metrics.jsonl and loss.png")
    s.add_argument("--save", help="save the fine-tuned model here")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser(
        "demo", help="the main job: compare fine-tuning strategies on the default task"
    )
    s.add_argument("--methods", help="comma-separated methods (default: all)")
    s.add_argument("--task", default=DEFAULT_TASK)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="output folder under runs/ (default runs/demo)")
    s.set_defaults(func=cmd_demo)


def cmd_finetune(args) -> None:
    from minift.recipes.demo import format_table
    from minift.recipes.finetune import FinetuneConfig, finetune
    from minift.recipes.tasks import get_task

    base, enc = load_model_and_encoding(args.model)
    task = get_task(args.task, seed=args.seed)
    print(task.summary())
    config = FinetuneConfig(
        method=args.method,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_len=args.max_len,
        seed=args.seed,
        out_dir=args.out,
        eval_every=args.eval_every,
    )
    result = finetune(task, base, enc, config, keep_model=args.save is not None)
    print(format_table([result]))
    if args.save:
        model = result.model
        backbone = getattr(model, "backbone", model)
        backbone.save(args.save)
        print(f"saved the fine-tuned backbone to {args.save}")


def cmd_demo(args) -> None:
    from minift.recipes.demo import DEFAULT_METHODS, run_demo

    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
    run_demo(methods=methods, task_name=args.task, steps=args.steps, seed=args.seed, out=args.out)
