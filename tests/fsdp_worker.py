"""Run by test_fsdp under torchrun (2 processes) and alone: train the same steps on the
same global batches, FSDP-sharded per block when there are 2 processes, then dump the
losses, the full weights, and how many parameter elements each process held."""

import json
import pathlib
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from test_trainer import cfg, model_factory, windows  # noqa: E402

from minift.train import Trainer  # noqa: E402
from minift.train.distributed import cleanup, setup_distributed, shard  # noqa: E402
from minift.train.fsdp import (  # noqa: E402
    full_state,
    load_sharded,
    local_numel,
    save_sharded,
    shard_model,
)


def train(info, lora: bool) -> dict:
    torch.manual_seed(0)
    model = model_factory(dropout=0.0).double()  # float64: the ranks sum in another order
    if lora:
        from minift.peft import LoRAConfig, apply_lora

        torch.manual_seed(1)
        apply_lora(model, LoRAConfig(r=4, target_modules=["c_attn", "c_fc"]))
        for layer in model.modules():  # a non-zero B, so the adapters' gradients are all live
            if hasattr(layer, "lora_B"):
                torch.nn.init.normal_(layer.lora_B, std=0.02)
    total = sum(p.numel() for p in model.parameters())
    if info.world_size > 1:
        shard_model(model)
    held = local_numel(model)
    counts = [held]
    if info.world_size > 1:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, held)
        counts = gathered
    result = Trainer(model, cfg(steps=5, grad_accum=2), windows(8)).fit()
    state = full_state(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    return {
        "losses": result.losses(),
        "weights": {n: t.flatten().tolist() for n, t in state.items()},
        "world_size": info.world_size, "held": counts, "total": total, "trainable": trainable,
    }  # fmt: skip


def checkpoint_round_trip(info, folder: str) -> dict:
    """Train 3 steps, save the sharded checkpoint, load it into a fresh sharded model and
    optimizer, and take 2 more steps with both: the two must stay identical."""
    torch.manual_seed(0)

    def fresh():
        model = model_factory(dropout=0.0)
        shard_model(model)
        return model, torch.optim.AdamW(model.parameters(), lr=3e-3)

    def step(model, opt, k):
        x, y = windows(8)(k, 0)
        x, y = shard(x, info.rank, info.world_size), shard(y, info.rank, info.world_size)
        model(x, y).loss.backward()
        opt.step()
        opt.zero_grad()

    a, opt_a = fresh()
    for k in range(3):
        step(a, opt_a, k)
    save_sharded(a, opt_a, folder)
    b, opt_b = fresh()
    before = max(
        float((x - y).abs().max()) for x, y in zip(full_state(a).values(), full_state(b).values())
    )
    load_sharded(b, opt_b, folder)
    for k in range(3, 5):
        step(a, opt_a, k)
        step(b, opt_b, k)
    after = max(
        float((x - y).abs().max()) for x, y in zip(full_state(a).values(), full_state(b).values())
    )
    return {"differs_before_load": before, "max_diff_after_resume": after}


def main(out: str) -> None:
    info = setup_distributed("cpu")
    torch.set_num_threads(1)
    runs = {mode: train(info, lora=mode == "lora") for mode in ("full", "lora")}
    if info.world_size > 1:
        folder = str(pathlib.Path(out).parent / "sharded_ckpt")
        runs["checkpoint"] = checkpoint_round_trip(info, folder)
    if info.is_main:
        pathlib.Path(out + ".json").write_text(json.dumps(runs))
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
