"""`minift pretrain`, `minift generate` and `minift tasks`: the base model and the task list."""

from __future__ import annotations


def register(sub) -> None:
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

    s = sub.add_parser("tasks", help="list the registered tasks")
    s.set_defaults(func=cmd_tasks)


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


def cmd_tasks(args) -> None:
    from minift.recipes.tasks import get_task, list_tasks

    for name in list_tasks():
        print(get_task(name).summary())
