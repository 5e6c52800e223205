"""The embedded default base model: a small GPT pretrained by minift on ``pydocs``.

Built on first use, then cached under $MINIFT_HOME/base/ (by minift.cache.build_once:
complete or absent), keyed by everything that decides its weights (tokenizer,
architecture, training recipe, Python version), so a second call is instant and the same
seed gives the same model. Fine-tuning lessons and
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

from minift.cache import build_once
from minift.data.batching import window_batches
from minift.data.encoding import default_encoding
from minift.data.tokens import corpus_tokens
from minift.io import write_json
from minift.model import GPT, GPTConfig
from minift.tokenizer import encoding_fingerprint
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, minift_home

FORMAT_VERSION = 1
BASE_FILES = ("config.json", "model.safetensors", "report.json")  # a complete base folder


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

    def train_config(self, out_dir: str | None = None, progress: bool = True) -> TrainConfig:
        """How the recipe trains, as the Trainer reads it (six evaluations in a run). The
        recipe keeps its settings flat: they are also the record of a built base (its
        cache key and report), which stays the same for every base built before."""
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            eval_every=max(1, self.steps // 6),
            out_dir=out_dir,
            seed=self.seed,
            progress=progress,
            desc="pretrain base",
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
    config = recipe.train_config(str(out_dir) if out_dir else None, progress)
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

    def build(tmp: pathlib.Path) -> None:
        if verbose:
            print(f"pretraining the base model ({recipe.steps} steps) into {path} ...", flush=True)
        model, report = pretrain(recipe, enc, out_dir=tmp / "run", progress=progress)
        model.save(tmp)
        write_json(tmp / "report.json", report)
        if verbose:
            print(
                f"base model: {report['params']:,} parameters, val loss {report['val_loss']:.3f}, "
                f"{report['seconds']:.0f} s",
                flush=True,
            )

    return GPT.load(build_once(path, build, BASE_FILES)).eval(), enc


def base_report(fast: bool | None = None) -> dict:
    """The pretraining report of the cached base model (building it if needed)."""
    load_base(fast, verbose=False)
    path = cache_dir(default_recipe(fast), default_encoding(fast))
    return json.loads((path / "report.json").read_text())
