"""`minift pretrain`, `minift generate`, `minift export` and `minift tasks`: the base
model, sampling and exporting a model, and the task list."""

from __future__ import annotations


def register(sub) -> None:
    s = sub.add_parser("pretrain", help="pretrain a base GPT of a given size on pydocs")
    s.add_argument(
        "--size", default=None,
        help="tiny | small | base | gpu (default: base; tiny with --fast); see minift.recipes.pretrain",
    )  # fmt: skip
    s.add_argument("--fast", action="store_true", help="the tiny fast-mode base (as tests use)")
    s.add_argument(
        "--rebuild", action="store_true",
        help="pretrain from scratch even where the size ships with the package, and compare",
    )  # fmt: skip
    s.add_argument("--ship", action="store_true", help="write the result into minift/assets/")
    s.add_argument("--device", default="cpu", help="cpu or cuda (the gpu size wants cuda)")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("generate", help="sample text from the base model or a saved model")
    s.add_argument("--prompt", default="Return the")
    s.add_argument("--model", help="a minift model folder or a Hugging Face GPT-2 folder")
    s.add_argument("--adapter", help="a user's adapter: a name under $MINIFT_HOME/adapters or a folder (minift personalize)")  # fmt: skip
    s.add_argument("--max-new-tokens", type=int, default=60)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser(
        "export", help="write a saved model as a Hugging Face GPT-2 folder (transformers loads it)"
    )
    s.add_argument(
        "--hf", nargs=2, metavar=("DIR", "OUT"), required=True,
        help="DIR: a minift model folder or a fine-tuned folder (--save); OUT: the new folder",
    )  # fmt: skip
    s.add_argument("--overwrite", action="store_true", help="replace what OUT holds")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("tasks", help="list the registered tasks")
    s.set_defaults(func=cmd_tasks)


def cmd_pretrain(args) -> None:
    from minift.io import read_json
    from minift.recipes.pretrain import base_dir, size_name
    from minift.recipes.ship import compare_with_shipped, ship_base

    size = size_name(args.size, fast=args.fast or None)
    rebuild = args.rebuild or args.ship
    folder = base_dir(size, rebuild=rebuild, device=args.device)
    report = read_json(folder / "report.json", "base report")
    print(
        f"base {size!r} ready in {folder}: {report['params']:,} parameters, val loss "
        f"{report['val_loss']:.3f}, {report['tokens_seen']:,} tokens in {report['seconds']} s "
        f"({report['tokens_per_second']:,} tok/s)"
    )
    if rebuild and (line := compare_with_shipped(size, folder)):
        print(line)
    if args.ship:
        print(f"shipped: {ship_base(size, folder)} (update SHIPPED_BASES with the hash printed)")


def load_model_and_encoding(path: str | None):
    """The language model and tokenizer of ``path``: the embedded base (None), a folder
    saved by `minift finetune --save` (its backbone), a Hugging Face GPT-2 folder (with its
    own tokenizer files, read offline), or a minift model folder (its encoding.json, or
    the default tokenizer)."""
    import pathlib

    from minift.model import GPT
    from minift.recipes.pretrain import load_base

    if path is None:
        return load_base()
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"--model {folder}: no such folder")
    if (folder / "finetune.json").is_file():
        from minift.recipes.saved import load_language_model

        return load_language_model(folder)
    config = (folder / "config.json").read_text() if (folder / "config.json").exists() else ""
    if '"model_type"' in config:  # a Hugging Face GPT-2 folder
        from minift.model.hf_tokenizer import encoding_from_hf_folder

        enc = encoding_from_hf_folder(folder)  # first: a missing tokenizer is a one-line error
        return _checked(GPT.from_pretrained(folder).eval(), enc, folder)
    from minift.tokenizer import load_encoding

    if (folder / "encoding.json").is_file():
        enc = load_encoding(folder / "encoding.json")
    else:
        from minift.data.encoding import default_encoding

        enc = default_encoding()
    return _checked(GPT.load(folder).eval(), enc, folder)


def _checked(model, enc, folder):
    if enc.n_vocab > model.config.vocab_size:
        raise ValueError(
            f"{folder}: the tokenizer has {enc.n_vocab} tokens but the model embeds only "
            f"{model.config.vocab_size}; they do not belong together"
        )
    return model, enc


def load_for_export(path: str):
    """(model, tokenizer) of a folder to export: a fine-tuned folder with its adapters
    merged into the weights (its task head, if any, still attached), or a model folder."""
    import pathlib

    if not (pathlib.Path(path) / "finetune.json").is_file():
        return load_model_and_encoding(path)
    from minift.peft.methods import get_method
    from minift.recipes.saved import load_finetuned, merged

    model, enc, meta = load_finetuned(path)
    if meta["weights"] == "adapter":
        if get_method(meta["method"]).merge is None:
            raise ValueError(
                f"{path}: method {meta['method']!r} cannot be folded into the weights, so it "
                "has no GPT-2 form (LoRA, DoRA and IA3 can be exported)"
            )
        model = merged(model, meta["method"])
    return model, enc


def cmd_export(args) -> None:
    from minift.model.hf_export import check_destination, export_hf
    from minift.model.params import find_gpt

    src, out = args.hf
    check_destination(out, args.overwrite)  # before loading anything
    model, enc = load_for_export(src)
    gpt = find_gpt(model)
    if model is not gpt:
        print(
            f"note: the task head of {src} ({type(model).__name__}) is not part of GPT-2's "
            "format and is left out; the folder holds the language model"
        )
    export_hf(gpt, enc, out, overwrite=args.overwrite)
    from minift.recipes.base_card import export_card
    from minift.recipes.saved import weights_fingerprint

    export_card(src, out, model is not gpt, weights_fingerprint(gpt))
    print(
        f"wrote {out}: config.json, model.safetensors, vocab.json, merges.txt, README.md "
        "(transformers.GPT2LMHeadModel.from_pretrained and GPT2TokenizerFast load it)"
    )


def cmd_generate(args) -> None:
    import torch

    from minift.tokenizer import eot_id

    if args.adapter:
        from minift.recipes.personalize import load_user_model

        model, enc = load_user_model(args.adapter)
    else:
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
