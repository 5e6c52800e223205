"""Fully sharded data parallelism (FSDP; Zhao et al. 2023, after ZeRO, Rajbhandari et al. 2020).

DDP keeps a whole copy of the weights, gradients and optimizer state on each of W
processes. FSDP keeps 1/W of each: every parameter is split along dim 0 into W shards, one
per process. To run a block, its full weights are gathered (all-gather) just before its
forward and freed after; the backward gathers them again, and the gradients are averaged
and split back into shards (reduce-scatter), so each process steps the optimizer on its
own shard only. Memory per process for weights + gradients + Adam state:

    DDP:  16 bytes x N        FSDP: 16 bytes x N / W  (+ one block's full weights at a time)

Sharding per transformer block (fully_shard on each block, then on the root for the
embeddings, final norm and head) bounds the unsharded memory to about one block. The
update is the same as one process training on the whole global batch, which the tests
check on 2 CPU processes (gloo). PyTorch's ``torch.distributed.fsdp.fully_shard`` is the
engine (parameters become DTensors sharded on dim 0); launch with
``torchrun --nproc_per_node=W``.
"""

from __future__ import annotations

import torch

from minift.errors import UserError
from minift.train import distributed as D


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Shard ``model`` (a GPT, or a module holding one as ``.gpt``/``.model``) in place over
    the processes of the current group: each transformer block, then the root."""
    from torch.distributed.fsdp import fully_shard

    info = D.current()
    if info.world_size < 2:
        raise UserError(
            "FSDP needs at least 2 processes (launch with torchrun --nproc_per_node=2 or more); "
            f"this run has {info.world_size}"
        )
    blocks = [m for name, m in model.named_modules() if name.endswith("transformer.h")]
    if not blocks:
        raise UserError("FSDP shards per transformer block, and this model has no transformer.h")
    for block in blocks[0]:
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def local_numel(model: torch.nn.Module) -> int:
    """Parameter elements this process holds (its shards)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel()
    return total


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded weights (every process must call it: it all-gathers)."""
    out = {}
    for name, p in model.named_parameters():
        out[name] = (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
    return out


def save_sharded(model: torch.nn.Module, optimizer, path, extra: dict | None = None) -> None:
    """Each process writes its own shards of the weights and optimizer state (PyTorch's
    distributed checkpoint format: one file per rank plus a metadata file), so a model
    that fits no single device is never gathered in one place to be saved."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state, **(extra or {})}, checkpoint_id=str(path))


def load_sharded(model: torch.nn.Module, optimizer, path) -> None:
    """Read a save_sharded checkpoint into an already sharded model and its optimizer (the
    same number of processes, or another: the format reshards on load)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
