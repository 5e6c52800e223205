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
``torchrun --nproc_per_node=W``; `minift finetune --fsdp` is such a launch
(fsdp_processes below), and the Trainer checkpoints a sharded model with
minift.train.sharded_checkpoint.
"""

from __future__ import annotations

import contextlib
import os

import torch

from minift.errors import UserError
from minift.train import distributed as D


def require_processes(world_size: int) -> None:
    if world_size < 2:
        raise UserError(
            "FSDP needs at least 2 processes (launch with torchrun --nproc_per_node=2 or more); "
            f"this run has {world_size}"
        )


def shard_model(
    model: torch.nn.Module, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Shard ``model`` (a GPT, or a module holding one as ``.gpt``/``.model``) in place over
    the processes of the current group: each transformer block, then the root. Each
    process's shards move to ``device`` (default: where the model is), so a model built in
    host memory reaches each GPU as 1/W of itself."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    info = D.current()
    require_processes(info.world_size)
    blocks = [m for name, m in model.named_modules() if name.endswith("transformer.h")]
    if not blocks:
        raise UserError("FSDP shards per transformer block, and this model has no transformer.h")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    # An explicit mesh: torch's default is CUDA whenever a GPU is present, even for a gloo run.
    mesh = init_device_mesh(device.type, (info.world_size,))
    for block in blocks[0]:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
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


def gather_full_model(model: torch.nn.Module, target: torch.nn.Module | None):
    """Load the whole weights of the sharded ``model`` into ``target``, an unsharded copy
    of it in host memory on rank 0 (None on the other ranks), and return ``target``.
    Every process must call it: each block is all-gathered in turn."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # cpu_offload: the gathered tensors land in host memory on rank 0 only.
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    if target is not None:
        target.load_state_dict(state)
    return target


@contextlib.contextmanager
def fsdp_processes(device: str = "cpu"):
    """The set-up of a job launched by ``torchrun --nproc_per_node=W`` for FSDP: join the
    process group (gloo for ``device="cpu"``, nccl for ``"cuda"``), yield this process's
    device (cuda:LOCAL_RANK on GPUs), and send the stdout of every process but rank 0 to
    nowhere, so the job prints once. The group is left as found (a caller's stays)."""
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be cpu or cuda, got {device!r}")
    require_processes(int(os.environ.get("WORLD_SIZE", "1")))
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda: no CUDA GPU is visible; use --device cpu (gloo)")
    created = not torch.distributed.is_initialized()
    info = D.setup_distributed(device)
    failed = True
    try:
        with contextlib.ExitStack() as stack:
            if not info.is_main:
                devnull = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stdout(devnull))
            yield torch.device("cuda", info.local_rank) if device == "cuda" else torch.device("cpu")
        failed = False
    finally:
        if created:
            D.cleanup(together=not failed)


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
