"""A fine-tuned model as a folder: saved after `minift finetune --save DIR`, loaded back
exactly by load_finetuned(DIR), evaluated by `minift eval --model DIR`.

    finetune.json        what was trained: the method and all its options, the task (its
                         labels), the head, max_len, the final metrics, and the base it
                         started from (the embedded default, or a path) with a fingerprint
                         of its weights. Written last: a folder without it is incomplete.
    encoding.json        the tokenizer it was trained with (minift.tokenizer.save_encoding)
    and what trained, one of:
    model.safetensors    "model": the whole transformer, + config.json (a minift model
      + config.json      folder: GPT.load reads it). Any method that changed backbone
                         weights (full, layer-wise, ...), and PEFT methods saved with merge
                         (the adapter folded into the weights).
    adapter_model.safetensors + adapter_config.json
                         "adapter": a PEFT method's tensors and configs (minift.peft.io);
                         loading re-applies them to the referenced base.
    (nothing more)       "head": only the head trained (probe); the base is referenced.
    head.safetensors     the task head of a classification task, in every case.
    README.md            the model card (minift.recipes.model_card and finetune_card):
                         base, data, method and settings, metrics with intervals, fairness
                         when the rows carry a group, limitations, the command.

The destination is checked before training (check_destination), files are written
atomically (minift.io) with the permissions a plain open() gives.
"""

from __future__ import annotations

import copy
import os
import pathlib
from dataclasses import asdict
from typing import Any

import torch.nn as nn

from minift.data.tasks import Task
from minift.io import read_json, write_json
from minift.model import GPT
from minift.model.checkpoint import load_state, save_state, weights_fingerprint
from minift.model.heads import SequenceClassifier
from minift.model.params import find_gpt
from minift.peft.core import adapter_layers
from minift.peft.io import load_adapter, save_adapter
from minift.peft.methods import get_method
from minift.peft.targets import replace_module
from minift.recipes.finetune import FinetuneResult
from minift.recipes.finetune_card import finetune_card, measured_fairness
from minift.recipes.model_card import CARD, write_card
from minift.recipes.pretrain import load_base, size_name
from minift.tokenizer import encoding_fingerprint, load_encoding, save_encoding
from minift.utils import fast_mode

MARKER = "finetune.json"
FORMAT, VERSION = "minift-finetune", 1
ENCODING, HEAD = "encoding.json", "head.safetensors"
MODEL_FILES = ("model.safetensors", "config.json")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
FILES = (MARKER, ENCODING, HEAD, CARD, *MODEL_FILES, *ADAPTER_FILES)


# ------------------------------------------------------------------ before training
def check_destination(path: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Refuse, before any training, a folder that could not take the saved model: a file,
    a path below a file, a folder that cannot be written, or (unless ``overwrite``) a
    folder that already holds something."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--save {path}: a file is there; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--save {path}: {existing} is a file, so no folder can be made below it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--save {path}: {existing} is not writable")
    if existing == path and any(path.iterdir()) and not overwrite:
        raise ValueError(
            f"--save {path}: the folder is not empty; choose an empty or new folder, or "
            "pass --overwrite to replace a saved model there"
        )
    return path


def check_merge(method_name: str) -> None:
    """Refuse --merge, before training, for a method that cannot fold into the weights."""
    if get_method(method_name).merge is None:
        raise ValueError(
            f"--merge: method {method_name!r} cannot be folded into the weights (LoRA, DoRA "
            "and IA3 can); save it without --merge"
        )


def base_reference(source: str | os.PathLike | None, base: GPT) -> dict[str, Any]:
    """How a loader finds the base again: the embedded default (in fast mode or not) or a
    folder, with a fingerprint of its weights to check that it is still the same."""
    default = {"source": "default", "fast": fast_mode(), "size": size_name()}
    ref = default if source is None else {"source": "path"}
    if source is not None:
        ref["path"] = str(pathlib.Path(source).resolve())
    return {**ref, "fingerprint": weights_fingerprint(base)}


# ------------------------------------------------------------------ saving
def save_finetuned(
    path: str | os.PathLike,
    result: FinetuneResult,
    task: Task,
    enc,
    base: dict[str, Any],
    merge: bool = False,
    overwrite: bool = False,
    task_seed: int | None = None,
    config=None,
    card: dict | None = None,
    card_fn=None,
) -> pathlib.Path:
    """Write ``result.model`` (finetune(..., keep_model=True)) to the folder ``path``;
    ``base`` is base_reference(...) of the model it started from, ``task_seed`` the seed
    the task was built with (default: the training seed), for evaluating it again;
    ``config`` the FinetuneConfig it ran with, and ``card`` more facts for the model card
    (finetune_card's fairness, robustness, their notes, command_line); ``card_fn(meta)``,
    when given, writes the card instead (a model trained by another recipe, as distill's
    student)."""
    model = result.model
    if model is None:
        raise ValueError("the result holds no model; fine-tune with keep_model=True")
    path = check_destination(path, overwrite)
    if merge:
        model = merged(copy.deepcopy(model), result.method)
    kind = stored_kind(model, merge)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).unlink(missing_ok=True)  # the folder is incomplete until the end
    if kind == "adapter":
        (adapter_name,) = model.peft_config  # finetune() applies one (named) adapter
        save_adapter(model, path, adapter_name)
    elif kind == "model":
        find_gpt(model).save(path)
    if isinstance(model, SequenceClassifier):
        save_state({k: v.detach().cpu() for k, v in model.head.state_dict().items()}, path / HEAD)
    save_encoding(enc, path / ENCODING)
    written = {ENCODING, MARKER, CARD} | (
        {HEAD} if isinstance(model, SequenceClassifier) else set()
    )
    written |= set({"adapter": ADAPTER_FILES, "model": MODEL_FILES}.get(kind, ()))
    for stale in set(FILES) - written:  # an earlier save's files (--overwrite)
        (path / stale).unlink(missing_ok=True)
    if task_seed is None:
        task_seed = result.train.seed if result.train is not None else 0
    meta = _metadata(result, task, task_seed, enc, base, kind, merge, model)
    if card_fn is not None:
        write_card(path, card_fn(meta))
        write_json(path / MARKER, meta)
        return path
    card = dict(card or {})
    if "fairness" not in card:  # measured here when the rows carry a group
        card["fairness"] = measured_fairness(model, task, enc, result.max_len)
    n = len(result.val_scores) if result.val_scores else None
    write_card(path, finetune_card(meta, task, str(path), n, config, **card))
    write_json(path / MARKER, meta)
    return path


def stored_kind(model: nn.Module, merged: bool = False) -> str:
    """What a save stores: a PEFT model's adapter; the whole model when an adapter was
    merged into it or any backbone weight trained; else the head alone (a probe)."""
    if getattr(model, "peft_config", None):
        return "adapter"
    trained = any(p.requires_grad for p in find_gpt(model).parameters())
    return "model" if merged or trained else "head"


def merged(model: nn.Module, method: str) -> nn.Module:
    """Fold the method's adapters into the weights (in place) and put the plain layers
    back: a model without adapters that computes what the adapted one did."""
    check_merge(method)
    get_method(method).merge(model)
    for name, layer in sorted(adapter_layers(model), key=lambda x: -len(x[0])):  # inner first
        if getattr(layer, "merged", False):
            replace_module(model, name, layer.base_layer)
    leftover = [name for name, _ in adapter_layers(model)]
    if leftover:
        raise ValueError(f"cannot merge the adapter layers {leftover[:3]} into the weights")
    model.__dict__.pop("peft_config", None)
    return model


def _metadata(result, task, task_seed, enc, base, kind, merge, model) -> dict[str, Any]:
    head = None
    if isinstance(model, SequenceClassifier):
        head = {"num_labels": model.num_labels, "pooling": model.pooling}
    return {
        "format": FORMAT,
        "version": VERSION,
        "weights": kind,
        "merged": merge,
        "method": result.method,
        "options": result.options,
        "task": {
            "name": task.name,
            "kind": task.kind,
            "labels": task.labels,
            "template": task.template,
            "seed": task_seed,
        },
        "head": head,
        "max_len": result.max_len,
        "metrics": {result.metric_name: result.metric, "val_loss": result.val_loss},
        "base": base,
        "encoding": encoding_fingerprint(enc),
        "train": asdict(result.train) if result.train is not None else None,
    }


# ------------------------------------------------------------------ loading
def is_finetuned(path: str | os.PathLike) -> bool:
    return (pathlib.Path(path) / MARKER).is_file()


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    meta = read_json(pathlib.Path(path) / MARKER, "saved fine-tuned model's metadata")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{path}/{MARKER} is not a minift fine-tuned model of version {VERSION} "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    return meta


def open_base(base: dict[str, Any]) -> GPT:
    """The base a saved adapter or head refers to, checked against its fingerprint."""
    if base["source"] == "default":
        # saved before sizes existed: the default was then what "small" is now
        size = base.get("size", "tiny" if base["fast"] else "small")
        model, _ = load_base(size=size, progress=False, verbose=False)
    else:
        folder = pathlib.Path(base["path"])
        if not folder.is_dir():
            raise FileNotFoundError(f"the base model folder {folder} does not exist any more")
        config = read_json(folder / "config.json", "model config")
        hf = "model_type" in config  # a Hugging Face GPT-2 folder
        model = GPT.from_pretrained(folder) if hf else GPT.load(folder)
    if weights_fingerprint(model) != base["fingerprint"]:
        where = "the embedded default base" if base["source"] == "default" else base["path"]
        raise ValueError(
            f"{where} is not the base this model was fine-tuned from (its weights changed: "
            f"fingerprint {weights_fingerprint(model)}, saved {base['fingerprint']})"
        )
    return model


def load_finetuned(path: str | os.PathLike) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, metadata) of a folder written by save_finetuned:
    the same model, giving the same outputs, as the one that was saved."""
    path = pathlib.Path(path)
    meta = read_metadata(path)
    enc = load_encoding(path / ENCODING)
    if encoding_fingerprint(enc) != meta["encoding"]:
        raise ValueError(f"{path / ENCODING} is not the tokenizer the model was saved with")
    gpt = GPT.load(path) if meta["weights"] == "model" else open_base(meta["base"])
    model: nn.Module = gpt
    if meta["head"] is not None:
        model = SequenceClassifier(gpt, meta["head"]["num_labels"], meta["head"]["pooling"])
        state = load_state(path / HEAD)
        if set(state) != {"weight", "bias"} or state["weight"].shape != model.head.weight.shape:
            raise ValueError(f"{path / HEAD} does not fit a head of {model.head}")
        model.head.load_state_dict(state)
    if meta["weights"] == "adapter":
        load_adapter(model, path)
    return model.eval(), enc, meta


def load_language_model(path: str | os.PathLike) -> tuple[GPT, Any]:
    """The language model of a saved folder (a classifier's backbone, with its adapters),
    and its tokenizer: what `minift generate --model DIR` samples from."""
    model, enc, _ = load_finetuned(path)
    return find_gpt(model).eval(), enc


__all__ = [
    "FILES", "MARKER", "base_reference", "check_destination", "check_merge", "is_finetuned",
    "load_finetuned", "load_language_model", "merged", "open_base", "read_metadata",
    "save_finetuned", "stored_kind", "weights_fingerprint",
]  # fmt: skip
