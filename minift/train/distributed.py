"""Data-parallel training with torchrun and DistributedDataParallel (Li et al. 2020).

Each of W processes holds a full copy of the model, takes 1/W of every global batch,
and DDP averages the gradients across processes during backward (an all-reduce), so the
update equals one process training on the whole batch. gloo runs on CPUs, nccl on GPUs.
Launch with `torchrun --nproc_per_node=W your_script.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_type: str | None = None) -> DistInfo:
    """Join the process group that torchrun describes in RANK/WORLD_SIZE, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if device_type is None:
            device_type = "cuda" if torch.cuda.is_available() else "cpu"
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return DistInfo()


def shard(batch, rank: int, world_size: int):
    """This rank's contiguous slice of a global batch (tensors split on dim 0)."""
    if world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.size(0)
        if n % world_size:
            raise ValueError(f"batch of {n} rows does not split over {world_size} processes")
        per = n // world_size
        return batch[rank * per : (rank + 1) * per]
    if isinstance(batch, dict):
        return {k: shard(v, rank, world_size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(v, rank, world_size) for v in batch)
    return batch


def all_reduce_mean(value: float, info: DistInfo, device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item() / info.world_size)


def cleanup(together: bool = True) -> None:
    """Leave the process group; ``together``: after a barrier, so no rank tears its group
    down while a peer still has collectives in flight (on 2 loaded CPU processes with gloo,
    rank 0 once aborted in teardown, "terminate called without an active exception"). After
    an error, ``together=False``: a peer that failed would never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()
