"""Export a minift GPT as a Hugging Face GPT-2 folder: the inverse of hf_gpt2.py.

The folder holds what ``transformers.GPT2LMHeadModel.from_pretrained`` and
``GPT2TokenizerFast.from_pretrained`` read: config.json, model.safetensors (GPT-2's
names, its four Conv1D matrices per block stored (in, out), so transposed back from
nn.Linear's (out, in)) and the tokenizer's vocab.json, merges.txt and
tokenizer_config.json (minift.model.hf_tokenizer). Loaded back, it gives minift's logits.

GPT-2 has one architecture: learned positions, LayerNorm, a GELU MLP, dense causal
attention. A config outside it (RoPE, RMSNorm, SwiGLU, MoE, sparse attention, the encoder
mode) is refused, naming the field. ``bias=False`` is exported as zero biases, which
compute the same thing. Adapters must be merged into the weights first, and a task head
has no place in GPT-2's format: pass the GPT itself.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch
import torch.nn as nn

from minift.io import atomic_path
from minift.model.checkpoint import save_state
from minift.model.config import GPTConfig
from minift.model.gpt import GPT
from minift.model.hf_gpt2 import CONV1D_SUFFIXES
from minift.model.hf_tokenizer import hf_tokenizer_files

LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def gpt2_incompatibilities(config: GPTConfig) -> list[str]:
    """The fields of ``config`` that GPT-2's architecture cannot express (empty: exportable)."""
    problems = []
    if config.norm != "layernorm":
        problems.append(f"norm={config.norm!r} (GPT-2 uses LayerNorm)")
    if config.pos_emb != "learned":
        problems.append(f"pos_emb={config.pos_emb!r} (GPT-2 learns absolute positions)")
    if config.mlp != "gelu":
        problems.append(f"mlp={config.mlp!r} (GPT-2's MLP is GELU)")
    if not config.causal:
        problems.append("causal=False (GPT-2 is a causal decoder, not an encoder)")
    if config.is_sparse:
        problems.append(f"sparse.pattern={config.sparse.pattern!r} (GPT-2 attends densely)")
    if config.moe.experts:
        problems.append(f"moe.experts={config.moe.experts} (GPT-2's MLPs are dense)")
    return problems


def gpt2_config(config: GPTConfig, eos_id: int | None = None) -> dict:
    """GPT-2's config.json for ``config`` (checked with gpt2_incompatibilities first)."""
    problems = gpt2_incompatibilities(config)
    if problems:
        raise ValueError("cannot export as GPT-2: " + "; ".join(problems))
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.n_inner,
        "activation_function": "gelu_new",  # the tanh approximation, as minift's "gelu"
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }


def gpt2_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's tensors under GPT-2's names and layout. Anything GPT-2 does not have
    (adapter tensors, soft prompts, prefixes) is refused; missing biases become zeros."""
    c = model.config
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"}
    for i in range(c.n_layer):
        expected |= {f"transformer.h.{i}.{m}.weight" for m in ("ln_1", "ln_2", *LINEARS)}
    expected |= {"transformer.ln_f.weight"}
    biases = {n.replace(".weight", ".bias") for n in expected if "transformer.w" not in n}
    biases.discard("lm_head.bias")
    state = model.state_dict()
    extra = sorted(set(state) - expected - biases)
    if extra:
        raise ValueError(
            f"the model holds tensors GPT-2 has no place for ({', '.join(extra[:3])}"
            f"{' ...' if len(extra) > 3 else ''}): merge its adapters into the weights "
            "first (a soft prompt or prefix cannot be merged)"
        )
    out = {}
    for name in sorted(expected | biases):
        if name in state:
            t = state[name].detach().cpu()
            out[name] = (t.t() if name.endswith(CONV1D_SUFFIXES) else t).contiguous()
        else:  # bias=False: zero biases compute the same thing
            weight = state[name.replace(".bias", ".weight")]
            out[name] = torch.zeros(weight.size(0), dtype=weight.dtype)
    if c.tie_weights:
        del out["lm_head.weight"]  # transformers ties it to wte, as minift does
    return out


def check_destination(out: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Refuse a destination that is a file, or a non-empty folder unless ``overwrite``."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"export destination {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"export destination {out} is not empty; choose a new or empty folder, or "
            "overwrite it (--overwrite)"
        )
    return out


def export_hf(
    model: nn.Module, enc, out: str | os.PathLike, overwrite: bool = False
) -> pathlib.Path:
    """Write ``model`` (a minift GPT) and its tokenizer ``enc`` to the folder ``out`` as a
    Hugging Face GPT-2 model. Everything is checked and converted before the first file is
    written; a non-empty ``out`` is refused unless ``overwrite``."""
    if not isinstance(model, GPT):
        raise ValueError(
            f"export_hf takes a minift GPT, got {type(model).__name__}: pass its GPT "
            "(minift.model.params.find_gpt); a task head has no place in GPT-2's format"
        )
    out = check_destination(out, overwrite)
    eot = enc.eot_token if "<|endoftext|>" in enc.special_tokens_set else None
    if enc.n_vocab > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {enc.n_vocab} tokens but the model only "
            f"{model.config.vocab_size}: it is not this model's tokenizer"
        )
    config = gpt2_config(model.config, eot)
    state = gpt2_state(model)
    files = hf_tokenizer_files(enc, model.config.block_size)
    out.mkdir(parents=True, exist_ok=True)
    save_state(state, out / "model.safetensors", metadata={"format": "pt"})
    for name, text in {**files, "config.json": json.dumps(config, indent=2) + "\n"}.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return out
