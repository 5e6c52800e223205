"""The `minift` command: pretrain, generate, finetune, demo, tasks, and the subcommands of
the technique packages (distill; rlhf and feedback)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules with a register(subparsers) function that adds their subcommands.
CLI_MODULES: tuple[str, ...] = ("minift.cli.distill", "minift.cli.rlhf")


def cmd_pretrain(args) -> None:
    from minift.recipes.pretrain import base_report, load_base

    load_base(fast=args.fast or None)
    report = base_report(fast=args.fast or None)
    print(
        f"base model ready: {report['params']:,} parameters, val loss {report['val_loss']:.3f}, "
        f"{report['tokens_seen']:,} tokens in {report['seconds']} s ({report['tokens_per_second']:,} tok/s)"
    )


def load_model_and_encoding(path: str | None):
    from minift.model import GPT
    from minift.recipes.pretrain import load_base

    if path is None:
        return load_base()
    import pathlib

    folder = pathlib.Path(path)
    config = (folder / "config.json").read_text() if (folder / "config.json").exists() else ""
    if '"model_type"' in config:  # a Hugging Face GPT-2 folder
        from minift.tokenizer import gpt2_encoding

        return GPT.from_pretrained(folder).eval(), gpt2_encoding()
    from minift.data.encoding import default_encoding

    return GPT.load(folder).eval(), default_encoding()


def cmd_generate(args) -> None:
    import torch

    from minift.tokenizer import eot_id

    model, enc = load_model_and_encoding(args.model)
    ids = enc.encode_ordinary(args.prompt) or [eot_id(enc)]
    gen = torch.Generator().manual_seed(args.seed)
    out = model.generate(
        torch.tensor([ids]),
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_token_id=eot_id(enc),
        generator=gen,
    )
    print(enc.decode([t for t in out[0].tolist() if t < enc.n_vocab and t != eot_id(enc)]))


def cmd_finetune(args) -> None:
    from minift.data.tasks import get_task
    from minift.recipes.demo import format_table
    from minift.recipes.finetune import FinetuneConfig, finetune

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


def cmd_tasks(args) -> None:
    from minift.data.tasks import get_task, list_tasks

    for name in list_tasks():
        print(get_task(name).summary())


def build_parser() -> argparse.ArgumentParser:
    from minift.data.tasks import DEFAULT_TASK
    from minift.recipes.finetune import METHODS

    p = argparse.ArgumentParser(prog="minift", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "pretrain", help="build the default tokenizer and pretrain the base GPT on pydocs"
    )
    s.add_argument("--fast", action="store_true", help="the tiny fast-mode base (as tests use)")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("generate", help="sample text from the base model or a saved model")
    s.add_argument("--prompt", default="Return the")
    s.add_argument("--model", help="a minift model folder or a Hugging Face GPT-2 folder")
    s.add_argument("--max-new-tokens", type=int, default=60)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_generate)

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

    s = sub.add_parser("tasks", help="list the registered tasks")
    s.set_defaults(func=cmd_tasks)
    for module in CLI_MODULES:  # each technique adds its own subcommands
        importlib.import_module(module).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"minift: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
