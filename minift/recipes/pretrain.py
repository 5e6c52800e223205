"""The embedded default base model: a small GPT pretrained by minift on ``pydocs``.

Built on first use, then cached under $MINIFT_HOME/base/, keyed by everything that
decides its weights (tokenizer, architecture, training recipe, Python version), so a
second call is instant and the same seed gives the same model. Fine-tuning lessons and
the demo start from it, which makes transfer real: the pretrained base must beat the same
architecture trained from scratch on a downstream task.

Sizes: the default (1.3M parameters, 4 layers of width 128, a 4096-token BPE) pretrains
in about two minutes on a 2-core CPU; fast mode (MINIFT_FAST=1, for tests and lessons)
builds a 2-layer width-64 model on a 512-token BPE in seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys
import time
from dataclasses import dataclass

import torch

from minift.cache import file_lock
from minift.data.batching import window_batches
from minift.data.encoding import default_encoding
from minift.data.tokens import corpus_tokens
from minift.io import write_json
from minift.model import GPT, GPTConfig
from minift.tokenizer import encoding_fingerprint
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, minift_home

FORMAT_VERSION = 1


@dataclass
class PretrainRecipe:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    steps: int = 450
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    eval_batches: int = 8
    seed: int = 0

    def config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )


FAST_RECIPE = PretrainRecipe(
    n_layer=2,
    n_head=2,
    n_embd=64,
    block_size=64,
    steps=150,
    batch_size=16,
    lr=5e-3,
    warmup_steps=10,
)


def default_recipe(fast: bool | None = None) -> PretrainRecipe:
    return FAST_RECIPE if (fast_mode() if fast is None else fast) else PretrainRecipe()


def lm_eval_fn(tokens, recipe: PretrainRecipe):
    """Validation loss on a fixed set of windows (the same ones at every evaluation)."""
    batches = [
        window_batches(tokens, recipe.batch_size, recipe.block_size, seed=10_000 + i)(0, 0)
        for i in range(recipe.eval_batches)
    ]

    def eval_fn(model) -> dict[str, float]:
        losses = [model(x, y).loss.item() for x, y in batches]
        return {"val_loss": sum(losses) / len(losses)}

    return eval_fn


def pretrain(
    recipe: PretrainRecipe,
    enc=None,
    out_dir: str | pathlib.Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[GPT, dict]:
    """Pretrain a GPT on pydocs from scratch; return the model and a report."""
    enc = enc or default_encoding()
    train_tokens = corpus_tokens("pydocs", "train", enc)
    val_tokens = corpus_tokens("pydocs", "val", enc)
    torch.manual_seed(recipe.seed)
    model = GPT(recipe.config(enc.n_vocab)).to(device)
    config = TrainConfig(
        steps=recipe.steps,
        lr=recipe.lr,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        eval_every=max(1, recipe.steps // 6),
        out_dir=str(out_dir) if out_dir else None,
        seed=recipe.seed,
        progress=progress,
        desc="pretrain base",
    )
    trainer = Trainer(
        model,
        config,
        window_batches(train_tokens, recipe.batch_size, recipe.block_size, seed=recipe.seed),
        eval_fn=lm_eval_fn(val_tokens, recipe),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    tokens_seen = recipe.steps * recipe.batch_size * recipe.block_size
    report = {
        "val_loss": result.history[-1]["val_loss"],
        "train_loss": result.history[-1]["loss"],
        "params": model.num_params(),
        "train_tokens": int(len(train_tokens)),
        "val_tokens": int(len(val_tokens)),
        "tokens_seen": tokens_seen,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens_seen / seconds),
        "recipe": dataclasses.asdict(recipe),
        "history": result.history,
    }
    return model.cpu().eval(), report


def cache_dir(recipe: PretrainRecipe, enc) -> pathlib.Path:
    key = json.dumps(
        {
            "recipe": dataclasses.asdict(recipe),
            "enc": encoding_fingerprint(enc),
            "v": FORMAT_VERSION,
        },
        sort_keys=True,
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    py = ".".join(map(str, sys.version_info[:2]))
    return minift_home() / "base" / f"pydocs-gpt-{recipe.n_layer}x{recipe.n_embd}-py{py}-{digest}"


def load_base(
    fast: bool | None = None, progress: bool = True, verbose: bool = True
) -> tuple[GPT, object]:
    """The default base model and its tokenizer, pretrained on first use and cached."""
    recipe = default_recipe(fast)
    enc = default_encoding(fast)
    path = cache_dir(recipe, enc)
    with file_lock(path):
        if not (path / "model.safetensors").exists():
            if verbose:
                print(
                    f"pretraining the base model ({recipe.steps} steps) into {path} ...", flush=True
                )
            model, report = pretrain(recipe, enc, out_dir=path / "run", progress=progress)
            model.save(path)
            write_json(path / "report.json", report)
            if verbose:
                print(
                    f"base model: {report['params']:,} parameters, val loss {report['val_loss']:.3f}, "
                    f"{report['seconds']:.0f} s",
                    flush=True,
                )
    return GPT.load(path).eval(), enc


def base_report(fast: bool | None = None) -> dict:
    """The pretraining report of the cached base model (building it if needed)."""
    load_base(fast, verbose=False)
    path = cache_dir(default_recipe(fast), default_encoding(fast))
    return json.loads((path / "report.json").read_text())
