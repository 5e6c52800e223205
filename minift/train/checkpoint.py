"""Training checkpoints: everything needed to resume a run exactly.

A checkpoint is a folder step-NNNNNN/ with
  model.safetensors      every parameter and buffer of the model
  optimizer.safetensors  the optimizer's per-parameter state (Adam's moments, step counts)
  state.json             step, scheduler, optimizer hyper-parameters, history, best metric
and latest.json names the newest folder. The folder is written under a temporary name and
renamed, then latest.json is replaced atomically, then older folders are removed: a crash
at any point leaves a complete checkpoint that latest.json points to.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import torch

from minift.io import write_json
from minift.model.checkpoint import load_state, save_state

LATEST = "latest.json"


def flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (safetensors) and the rest (JSON)."""
    tensors, scalars = {}, {}
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    extra: dict[str, Any],
    keep: int = 1,
) -> pathlib.Path:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out, prefix=f".step-{step:06d}."))
    try:
        model_state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        # Tied weights share storage, which safetensors refuses: keep one name per tensor.
        seen: dict[int, str] = {}
        aliases = {}
        for k, v in list(model_state.items()):
            ptr = v.data_ptr() if v.numel() else id(v)
            if ptr in seen:
                aliases[k] = seen[ptr]
                del model_state[k]
            else:
                seen[ptr] = k
        save_state(model_state, tmp / "model.safetensors")
        opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
        save_state(opt_tensors, tmp / "optimizer.safetensors")
        state = {
            "step": step,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "optimizer": opt_meta,
            "aliases": aliases,
            **extra,
        }
        return publish(out, tmp, step, state, keep)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def publish(
    out: pathlib.Path, tmp: pathlib.Path, step: int, state: dict[str, Any], keep: int
) -> pathlib.Path:
    """The end of every save (one process, or rank 0 of a sharded run, once all shards are
    in ``tmp``): state.json into the temporary folder, the folder renamed to step-NNNNNN
    (replacing one of that step left by an earlier attempt), latest.json pointed at it,
    older checkpoints rotated out. Returns the checkpoint's folder."""
    (tmp / "state.json").write_text(json.dumps(state, indent=1, default=_json_default))
    final = out / f"step-{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(out / LATEST, {"step": step, "path": final.name})
    rotate(out, step, keep)
    return final


def checkpoint_step(path: pathlib.Path) -> int | None:
    """The step of a folder named step-NNNNNN (None for any other name)."""
    digits = path.name.removeprefix("step-")
    return int(digits) if path.name.startswith("step-") and digits.isdigit() else None


def rotate(out: pathlib.Path, step: int, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints up to ``step``, by step number (not by name:
    step-1000000 sorts before step-999999); a folder past ``step`` is left by an earlier
    attempt that this resumed run has replaced, so it goes too."""
    if keep <= 0:
        return
    folders = [(s, p) for p in out.glob("step-*") if (s := checkpoint_step(p)) is not None]
    kept = sorted((s for s, _ in folders if s <= step), reverse=True)[:keep]
    for s, path in folders:
        if s not in kept:
            shutil.rmtree(path)


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON")


def latest_checkpoint(out_dir: str | os.PathLike) -> pathlib.Path | None:
    """The checkpoint latest.json names; None when there is no latest.json. A pointer to a
    folder that is gone is an error: resuming from step 0 instead would be silent."""
    pointer = pathlib.Path(out_dir) / LATEST
    if not pointer.exists():
        return None
    try:
        path = pathlib.Path(out_dir) / json.loads(pointer.read_text())["path"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{pointer} is corrupt ({err}); cannot tell which checkpoint to resume"
        ) from None
    if not (path / "state.json").exists():
        raise ValueError(
            f"{pointer} names checkpoint {path.name}, which is missing or incomplete; "
            "cannot resume (remove the folder, or start again with overwrite)"
        )
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
) -> dict[str, Any]:
    """Restore model, optimizer and scheduler in place; return the JSON state."""
    path = pathlib.Path(path)
    state = json.loads((path / "state.json").read_text())
    if state.get("sharded"):
        n = state["sharded"]["world_size"]
        raise ValueError(
            f"{path} is a sharded checkpoint of an FSDP run ({n} processes); resume it under "
            "torchrun with FSDP (minift.train.sharded_checkpoint)"
        )
    device = next(model.parameters()).device
    model_state = load_state(path / "model.safetensors", device=device)
    for alias, source in state.get("aliases", {}).items():
        model_state[alias] = model_state[source]
    model.load_state_dict(model_state)
    opt_tensors = load_state(path / "optimizer.safetensors", device=device)
    optimizer.load_state_dict(unflatten_optimizer(opt_tensors, state["optimizer"]))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state
