"""Load a Hugging Face GPT-2 checkpoint from a local folder into minift's GPT.

GPT-2 was written with a "Conv1D" layer that stores its weight as (in, out), the
transpose of nn.Linear's (out, in); those four matrices per block are transposed on load.
minift never downloads: point it at a folder you already have (config.json plus
model.safetensors, or pytorch_model.bin).
"""

from __future__ import annotations

import json
import pathlib

import torch

from minift.model.checkpoint import load_state
from minift.model.config import GPTConfig

CONV1D_SUFFIXES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def config_from_hf(hf: dict) -> GPTConfig:
    """Map GPT-2's config.json onto GPTConfig, refusing variants minift does not model."""
    act = hf.get("activation_function", "gelu_new")
    if act not in SUPPORTED_ACTIVATIONS:
        raise ValueError(
            f"activation_function {act!r} unsupported; minift's GPT-2 uses {SUPPORTED_ACTIVATIONS}"
        )
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise ValueError(f"GPT-2 variant with {flag}=true is not supported")
    if not hf.get("scale_attn_weights", True):
        raise ValueError("GPT-2 variant with scale_attn_weights=false is not supported")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        n_inner=hf.get("n_inner"),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_weights=hf.get("tie_word_embeddings", True),
        bias=True,
    )


def read_hf_weights(path: pathlib.Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        return load_state(path / "model.safetensors")
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin")


def convert_hf_state(hf_state: dict[str, torch.Tensor], tie: bool) -> dict[str, torch.Tensor]:
    state = {}
    for name, t in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # the causal-mask buffers of old checkpoints, not weights
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # GPT2Model checkpoints lack the prefix
        if name.endswith(CONV1D_SUFFIXES):
            t = t.t()
        state[name] = t.contiguous()
    if tie:
        state.pop("lm_head.weight", None)
    return state


def read_hf_gpt2(path, **overrides) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The config and minift-named tensors of a Hugging Face GPT-2 folder; overrides (e.g.
    dropout=0.1) are applied to the config. GPT.from_pretrained builds the model."""
    path = pathlib.Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path} holds no config.json; expected a Hugging Face GPT-2 folder"
        )
    try:
        hf = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path / 'config.json'} is not valid JSON ({err})") from None
    if "model_type" not in hf and "n_embd" in hf and "vocab_size" in hf and "pos_emb" in hf:
        raise ValueError(
            f"{path} is a minift model folder, not a Hugging Face one: load it with GPT.load "
            "(GPT.from_pretrained reads transformers' GPT-2 folders)"
        )
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{path} holds a {model_type!r} model; from_pretrained reads GPT-2 only")
    config = config_from_hf(hf)
    if overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    return config, convert_hf_state(read_hf_weights(path), config.tie_weights)
