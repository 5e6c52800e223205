"""The embedded default base model: a small GPT pretrained by minift on ``pydocs``.

Built on first use, then cached under $MINIFT_HOME/base/ (by minift.cache.build_once:
complete or absent), keyed by everything that decides its weights (tokenizer,
architecture, training recipe, Python version), so a second call is instant and the same
seed gives the same model. Fine-tuning lessons and
the demo start from it, which makes transfer real: the pretrained base must beat the same
architecture trained from scratch on a downstream task.

Sizes (``minift pretrain --size NAME``, ``load_base(size=NAME)``):

    tiny   2 x 64,  512-token BPE, 150 steps: fast mode (MINIFT_FAST=1, tests), seconds
    small  4 x 128, 4096-token BPE, 450 steps (0.9M tokens): about two minutes on 2 cores
    base   4 x 128, 1800 steps (3.7M tokens, ~8 passes over pydocs): the default of the
           demo and the lessons; about seven minutes on 2 cores, so it is shipped in the
           package (minift/assets/base-4x128/, checked by its SHA-256) and loads at once
    gpu    8 x 512, block 256, 3000 steps of 64 x 256 tokens (49M tokens): a few minutes
           on one GPU (`--device cuda`); not shipped

Why ship "base" rather than pretrain it on first use: its 4x more tokens are what makes
LoRA reach full fine-tuning on the default task (docs/benchmarks.md, "LoRA's share
against pretraining compute"), and seven minutes of pretraining before a demo that must
finish in five is not an option. Shipping costs 5 MB; `minift pretrain --size base`
retrains it from scratch and reports how far its weights are from the shipped ones
(floating-point summation order differs between machines, so not bit for bit).
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
from minift.io import read_json, write_json
from minift.model import GPT, GPTConfig
from minift.model.checkpoint import weights_fingerprint
from minift.shipped import shipped_file
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


SIZES: dict[str, PretrainRecipe] = {
    "tiny": FAST_RECIPE,
    "small": PretrainRecipe(),
    "base": PretrainRecipe(steps=1800, warmup_steps=60),
    "gpu": PretrainRecipe(
        n_layer=8, n_head=8, n_embd=512, block_size=256, steps=3000, batch_size=64, lr=1e-3,
        warmup_steps=100,
    ),
}  # fmt: skip
DEFAULT_SIZE = "base"  # normal mode; fast mode uses "tiny"
# The shipped bases: folder under minift/assets/ and the SHA-256 of its weights.
SHIPPED_BASES = {
    "base": ("base-4x128", "7e8ffb6d0d3fe1646d90bc72c2a500b963efb4b61a7a7cc856f26b1023c8f832"),
}


def size_name(size: str | None = None, fast: bool | None = None) -> str:
    """``size`` checked, or the default: "tiny" in fast mode, else DEFAULT_SIZE."""
    if size is None:
        return "tiny" if (fast_mode() if fast is None else fast) else DEFAULT_SIZE
    if size not in SIZES:
        raise ValueError(f"unknown base size {size!r}; sizes: {', '.join(SIZES)}")
    return size


def default_recipe(fast: bool | None = None, size: str | None = None) -> PretrainRecipe:
    return SIZES[size_name(size, fast)]


def size_encoding(size: str):
    """The tokenizer of a size: the fast-mode BPE for "tiny", the shipped one otherwise."""
    return default_encoding(fast=size == "tiny")


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


def shipped_base_dir(size: str) -> pathlib.Path | None:
    """The package folder of a shipped base, its weights checked; None if it ships none."""
    if size not in SHIPPED_BASES:
        return None
    folder, sha256 = SHIPPED_BASES[size]
    return shipped_file(f"{folder}/model.safetensors", sha256).parent


def base_dir(
    size: str | None = None,
    fast: bool | None = None,
    progress: bool = True,
    verbose: bool = True,
    rebuild: bool = False,
    device: str = "cpu",
) -> pathlib.Path:
    """The folder of a base (config, weights, report): the shipped one, or the cache
    entry, pretrained on first use. rebuild=True pretrains it even where one is shipped
    (into the cache: the shipped copy is never overwritten)."""
    size = size_name(size, fast)
    if not rebuild and (shipped := shipped_base_dir(size)) is not None:
        return shipped
    return built_base_dir(SIZES[size], size_encoding(size), progress, verbose, device)


def built_base_dir(
    recipe: PretrainRecipe, enc, progress: bool = True, verbose: bool = True, device: str = "cpu"
) -> pathlib.Path:
    """The cache folder of the base ``recipe`` pretrains, pretrained on first use."""
    path = cache_dir(recipe, enc)

    def build(tmp: pathlib.Path) -> None:
        if verbose:
            print(f"pretraining the base model ({recipe.steps} steps) into {path} ...", flush=True)
        model, report = pretrain(recipe, enc, out_dir=tmp / "run", progress=progress, device=device)
        model.save(tmp)
        write_json(tmp / "report.json", report)
        from minift.recipes.base_card import pretrain_card

        size = next((name for name, r in SIZES.items() if r == recipe), None)
        pretrain_card(tmp, recipe, report, size, str(device), weights_fingerprint(model))
        if verbose:
            print(
                f"base model: {report['params']:,} parameters, val loss {report['val_loss']:.3f}, "
                f"{report['seconds']:.0f} s",
                flush=True,
            )

    return build_once(path, build, BASE_FILES)


def load_base(
    fast: bool | None = None, progress: bool = True, verbose: bool = True, size: str | None = None
) -> tuple[GPT, object]:
    """A base model and its tokenizer: ``size`` (default: "tiny" in fast mode, else
    "base"), shipped or pretrained on first use and cached."""
    size = size_name(size, fast)
    path = base_dir(size, progress=progress, verbose=verbose)
    return GPT.load(path).eval(), size_encoding(size)


def base_report(fast: bool | None = None, size: str | None = None) -> dict:
    """The pretraining report of a base (building it if needed)."""
    return read_json(base_dir(size_name(size, fast), verbose=False) / "report.json", "base report")
