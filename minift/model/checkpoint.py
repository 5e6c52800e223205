"""minift's own model format: a folder with model.safetensors and config.json.

Tensors go to safetensors (no pickle, so loading runs no code); everything else is JSON.
Every write is atomic: a temporary file renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minift.io import atomic_path
from minift.model.config import GPTConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without the tied lm_head copy (safetensors refuses shared storage)."""
    sd = model.state_dict()
    if getattr(model.config, "tie_weights", False):
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def weights_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over every tensor's name, dtype, shape and bytes: the same
    weights give the same fingerprint on any machine, any change gives another."""
    h = hashlib.sha256()
    for name, t in sorted(unique_state_dict(model).items()):
        t = t.detach().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def save_state(tensors: dict[str, torch.Tensor], path: str | pathlib.Path, metadata=None) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_state(path: str | pathlib.Path, device="cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or corrupt file is a ValueError naming it."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"cannot read checkpoint {path}: truncated or corrupt ({err})") from err


def check_shapes(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict whose tensors do not fit the model, naming each mismatch."""
    expected = model.state_dict()
    if getattr(model.config, "tie_weights", False):
        expected = {k: v for k, v in expected.items() if k != "lm_head.weight"}
    problems = []
    for name, t in state.items():
        if name not in expected:
            problems.append(f"unexpected tensor {name!r}")
        elif tuple(t.shape) != tuple(expected[name].shape):
            problems.append(
                f"{name!r} has shape {tuple(t.shape)}, the config needs {tuple(expected[name].shape)}"
            )
    missing = sorted(set(expected) - set(state))
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if problems:
        raise ValueError(f"checkpoint {source} does not fit the model: " + "; ".join(problems))


def save_model(model, path: str | pathlib.Path) -> None:
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_state(unique_state_dict(model), path / WEIGHTS)
    with atomic_path(path / CONFIG) as tmp:
        tmp.write_text(model.config.to_json())


def read_model_folder(path: str | pathlib.Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The config and tensors of a minift model folder (GPT.load builds the model)."""
    path = pathlib.Path(path)
    if not (path / CONFIG).exists():
        raise FileNotFoundError(f"{path} holds no {CONFIG}; is it a minift model folder?")
    try:
        config = GPTConfig.from_dict(json.loads((path / CONFIG).read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG} is not a valid minift model config ({err})") from None
    return config, load_state(path / WEIGHTS)
