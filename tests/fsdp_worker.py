"""Run by test_fsdp under torchrun (2 processes) and alone: train the same steps on the
same global batches, FSDP-sharded per block when there are 2 processes, then dump the
losses, the full weights, and how many parameter elements each process held; run the
`minift finetune` command (with --fsdp under torchrun) in float64; and, with 2 processes,
stop a sharded Trainer run and resume it from its sharded checkpoint."""

import json
import pathlib
import shutil
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from test_trainer import cfg, model_factory, windows  # noqa: E402

import minift.cli  # noqa: E402
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
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    if info.world_size > 1:
        shard_model(model)
    held = local_numel(model)
    counts = [held]
    if info.world_size > 1:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, held)
        counts = gathered
    trainer = Trainer(model, cfg(steps=5, grad_accum=2), windows(8))
    result = trainer.fit()
    state = full_state(model)
    names = {id(p): n for n, p in model.named_parameters()}
    optimized = sorted(names[id(p)] for g in trainer.optimizer.param_groups for p in g["params"])
    frozen_change = max((float((state[n] - t).abs().max()) for n, t in frozen.items()), default=0.0)
    return {
        "losses": result.losses(),
        "weights": {n: t.flatten().tolist() for n, t in state.items()},
        "world_size": info.world_size, "held": counts, "total": total,
        "optimized": optimized, "frozen": sorted(frozen), "frozen_change": frozen_change,
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


class Interrupted(Exception):
    pass


def sharded_resume(folder: pathlib.Path) -> dict:
    """A sharded run of 6 steps (checkpoints every 2, dropout on, 2 micro-batches), against
    the same run stopped during step 5 and resumed from its step-4 checkpoint."""

    def run(out, stop_at=None, resume=False):
        model = model_factory(dropout=0.1).double()  # dropout: its masks must replay too
        shard_model(model)
        batches = windows(8)

        def batch_fn(step, micro):
            if step == stop_at:
                raise Interrupted
            return batches(step, micro)

        config = cfg(steps=6, grad_accum=2, ckpt_every=2, out_dir=str(out))
        result = Trainer(model, config, batch_fn).fit(resume=resume)
        return result.losses(), full_state(model)

    losses, whole = run(folder / "whole")
    try:
        run(folder / "stopped", stop_at=4)
    except Interrupted:
        pass
    saved = sorted(p.name for p in (folder / "stopped" / "checkpoints").iterdir())
    resumed_losses, resumed = run(folder / "stopped", resume=True)
    diff = max(float((whole[n] - resumed[n]).abs().max()) for n in whole)
    return {"losses": losses, "resumed_losses": resumed_losses, "max_diff": diff, "saved": saved}


def cli_runs(info, folder: pathlib.Path) -> dict:
    """`minift finetune` as a user runs it (with --fsdp under torchrun), in float64, for
    full fine-tuning and LoRA; each saves its model and writes metrics.jsonl."""
    torch.set_default_dtype(torch.float64)  # the base loads into float64 parameters
    for method in ("full", "lora"):
        argv = ["finetune", "--task", "doc-returns", "--method", method, "--steps", "3", "--max-len", "16",
                "--batch-size", "8", "--out", str(folder / f"{method}_run"),
                "--save", str(folder / f"{method}_model"), "--overwrite"]  # fmt: skip
        if info.world_size > 1:
            argv.append("--fsdp")
        assert minift.cli.main(argv) == 0, argv
    torch.set_default_dtype(torch.float32)
    return {"folder": str(folder)}


def main(out: str) -> None:
    info = setup_distributed("cpu")
    torch.set_num_threads(1)
    runs = {mode: train(info, lora=mode == "lora") for mode in ("full", "lora")}
    if info.world_size > 1:
        folder = str(pathlib.Path(out).parent / "sharded_ckpt")
        runs["checkpoint"] = checkpoint_round_trip(info, folder)
        resume = pathlib.Path(out).parent / "resume"
        if info.is_main:
            shutil.rmtree(resume, ignore_errors=True)
        dist.barrier()
        runs["resume"] = sharded_resume(resume)
    runs["cli"] = cli_runs(info, pathlib.Path(out + "_cli"))
    if info.is_main:
        pathlib.Path(out + ".json").write_text(json.dumps(runs))
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
