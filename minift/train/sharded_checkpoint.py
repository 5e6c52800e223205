"""Training checkpoints of an FSDP-sharded model: checkpoint.py's layout, written by every
process, so that no process ever holds the whole model to save it.

A checkpoint is a folder step-NNNNNN/ with
  __R_0.distcp, .metadata  each process's shards of the weights and of the optimizer state
                           (Adam's moments are sharded like their parameters), in PyTorch's
                           distributed checkpoint format (minift.train.fsdp.save_sharded)
  state.json               step, scheduler, history, best metric, as checkpoint.py writes it
and latest.json names the newest folder, so latest_checkpoint() finds either kind. It is
as atomic as checkpoint.py's: every process writes its shards under one temporary name,
rank 0 renames the folder once all have finished, then replaces latest.json, then removes
older folders. A run stopped at step k and resumed from here ends bit-identical to one that
never stopped: the weights and optimizer state come back exactly, and everything else a
step depends on (batches, dropout masks) is a function of (seed, step) (minift.train.trainer).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import torch
import torch.distributed as dist

from minift.train import distributed as D
from minift.train.checkpoint import publish
from minift.train.fsdp import load_sharded, save_sharded


def save_sharded_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    extra: dict[str, Any],
    keep: int = 1,
) -> pathlib.Path:
    """Every process calls it (it is collective); rank 0 writes the JSON and renames."""
    info = D.current()
    out = pathlib.Path(out_dir)
    tmp = out / f".step-{step:06d}.partial"  # one name that every process agrees on
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a run that crashed while saving
            shutil.rmtree(tmp)
    dist.barrier()
    save_sharded(model, optimizer, tmp)  # returns once every process has written its shards
    if info.is_main:
        state = {
            "step": step,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "sharded": {"world_size": info.world_size},
            **extra,
        }
        publish(out, tmp, step, state, keep)
    dist.barrier()  # no process goes on (to read it, or to write the next) before it is complete
    return out / f"step-{step:06d}"


def load_sharded_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
) -> dict[str, Any]:
    """Restore the sharded model, its optimizer and the scheduler in place (every process
    calls it); return the JSON state."""
    path = pathlib.Path(path)
    state = json.loads((path / "state.json").read_text())
    if not state.get("sharded"):
        raise ValueError(
            f"{path} holds a one-process checkpoint; resume it without FSDP (or start the "
            "sharded run again with overwrite)"
        )
    load_sharded(model, optimizer, path)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state
