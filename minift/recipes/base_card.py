"""The model card of a base: the cache entry `minift pretrain` builds (pretrain_card), and
the folder `minift export --hf` converts to the Hugging Face GPT-2 layout (export_card).
Both written as every card is (minift.recipes.model_card)."""

from __future__ import annotations

import math
import pathlib
import shlex

from minift.recipes.cards import NOT_FOR, USE, command
from minift.recipes.model_card import ModelCard, evaluation, write_card


def pretrain_card(folder: pathlib.Path, recipe, report: dict, size: str | None, device: str, fingerprint: str) -> pathlib.Path:  # fmt: skip
    """README.md of a pretrained base: the corpus, the recipe, its validation loss."""
    loss = report["val_loss"]
    metrics = {"val_loss": loss, "val_perplexity": math.exp(loss)}
    windows = f"{recipe.eval_batches} x {recipe.batch_size} windows of {recipe.block_size} tokens"
    evals = [evaluation(f"pydocs validation split ({windows})", metrics, None, "minift pretrain")]
    values = {"size": size, "rebuild": True, "device": device if device != "cpu" else None}
    extra = [] if size else ["a recipe that is none of the named sizes: see the settings above"]
    card = ModelCard(
        title=f"minift's {size or 'custom'} base, pretrained on pydocs", kind="pretrain",
        base={"source": "none: trained from random weights (seed "
              f"{recipe.seed})", "weights fingerprint": fingerprint, "parameters": report["params"]},
        data={"name": "pydocs", "source": "the docstrings of the installed Python standard "
              "library, split into train and validation by module",
              "train tokens": report["train_tokens"], "validation tokens": report["val_tokens"],
              "tokens seen in training": report["tokens_seen"]},
        method="causal language modelling (next-token cross-entropy), AdamW",
        settings=dict(report["recipe"]), evaluations=evals,
        command=command("pretrain", values, False, extra),
        intended_use=["A small base for the lessons and for trying fine-tuning methods on a "
                      "CPU; not a general language model.", NOT_FOR],
        limitations=[
            "It has read only Python's docstrings: technical English about the standard "
            "library. It knows little else, and may repeat docstrings it saw.",
            "The loss is a mean over token windows; no interval is given.",
        ],
        fairness_note="A base model is not a classifier: no group metric applies.",
        robustness_note="Not measured for a base.",
        loading="Load it with minift.model.GPT.load(DIR) or `minift finetune --model DIR`.",
    )  # fmt: skip
    return write_card(folder, card)


def export_card(src: str, out: str, head_dropped: bool, fingerprint: str) -> pathlib.Path:
    """`minift export --hf SRC OUT`: the source folder's card with a note that this is its
    GPT-2-format export (and, for a classifier, that its head was left out); a source
    without a card gets a card that says what little is known."""
    from minift.io import atomic_path
    from minift.recipes.model_card import CARD

    note = (
        f"> Exported by `minift export --hf` from {src} to the Hugging Face GPT-2 layout "
        "(transformers loads it, with the same logits)."
        + (" The task head is not part of GPT-2's format and was left out: the metrics below "
           "were measured with it, on the classifier, not on this language model alone." if head_dropped else "")
    )  # fmt: skip
    source = pathlib.Path(src) / CARD
    if source.is_file():
        text = source.read_text(encoding="utf-8").replace("library_name: minift", "library_name: transformers", 1)  # fmt: skip
        title, _, rest = text.partition("\n# ")
        head, _, body = rest.partition("\n")
        with atomic_path(pathlib.Path(out) / CARD) as tmp:
            tmp.write_text(f"{title}\n# {head}\n\n{note}\n{body}", encoding="utf-8")
        return pathlib.Path(out) / CARD
    card = ModelCard(
        title=f"the GPT-2-format export of {pathlib.Path(src).name}", kind="export",
        base={"source": f"the model folder {src}", "weights fingerprint": fingerprint},
        data={"name": "unknown", "source": f"{src} has no model card: what it was trained on is not recorded"},  # fmt: skip
        method="conversion to the Hugging Face GPT-2 layout (the same logits)", settings={},
        evaluations=[], command=shlex.join(["minift", "export", "--hf", src, out]),
        intended_use=[USE], limitations=[note.lstrip("> "), NOT_FOR],
        fairness_note="Nothing is known about the model's fairness.",
        robustness_note="Nothing is known about the model's robustness.",
        loading="Load it with transformers.GPT2LMHeadModel.from_pretrained(DIR).",
    )  # fmt: skip
    return write_card(out, card)


__all__ = ["export_card", "pretrain_card"]
