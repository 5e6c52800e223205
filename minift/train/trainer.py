"""The training loop, readable top to bottom.

    for step in range(start, steps):
        for each of grad_accum micro-batches:  loss / grad_accum -> backward
        clip the gradient norm, optimizer step, schedule step
        every eval_every steps: evaluate, early-stop, checkpoint

Every batch and every dropout mask is a function of (seed, step, micro-step) alone, so a
run stopped at step k and resumed from its checkpoint gives the same losses as one that
never stopped, and k micro-batches of n rows give the same update as one batch of k*n.
Under torchrun each process takes its slice of the same global batch (DDP averages the
gradients, or FSDP reduce-scatters them), which also gives the single-process update; an
FSDP-sharded model is checkpointed shard by shard (minift.train.sharded_checkpoint).
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from minift.train import distributed as D
from minift.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from minift.train.config import TrainConfig
from minift.train.fsdp import is_sharded
from minift.train.loss_scale import LossScaler
from minift.train.metrics import MetricsLog
from minift.train.optim import make_optimizer, make_schedule
from minift.train.sharded_checkpoint import load_sharded_checkpoint, save_sharded_checkpoint

# What a run writes in its out_dir; their presence means the folder holds a run.
RUN_FILES = ("metrics.jsonl", "checkpoints", "loss.png")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_step: int | None = None
    steps_done: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    def evals(self) -> list[dict[str, Any]]:
        return [h for h in self.history if any(k.startswith("val") for k in h)]


def lm_loss(model, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """The default objective: batch = (inputs, targets), next-token cross-entropy."""
    x, y = batch[0], batch[1]
    return model(x, y).loss, {}


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Train ``model`` on ``batch_fn(step, micro_step) -> batch`` (the global micro-batch).

    loss_fn(model, batch) -> (loss, extra metrics); eval_fn(model) -> dict of metrics.
    param_groups overrides the default decay/no-decay split (e.g. layer-wise rates).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        batch_fn: Callable[[int, int], Any],
        loss_fn: Callable = lm_loss,
        eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        param_groups: list[dict] | None = None,
        on_step: Callable[[int, Trainer], None] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.batch_fn, self.loss_fn, self.eval_fn = batch_fn, loss_fn, eval_fn
        self.on_step = on_step
        self.stop_requested = False  # on_step may set it (a spent budget): stop after this step
        self.device = next(model.parameters()).device
        self.dist = D.current()
        self.ddp = model
        self.sharded = is_sharded(model)  # FSDP: each process checkpoints its own shards
        if self.dist.enabled and not self.sharded:  # FSDP already syncs (train.fsdp)
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
        self.optimizer = make_optimizer(
            model, config.lr, config.weight_decay, config.betas, param_groups, config.optimizer
        )
        self.scheduler = make_schedule(
            self.optimizer, config.steps, config.warmup_steps, config.min_lr_ratio, config.schedule
        )
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU; use precision='bf16' on the CPU")
        self.scaler = LossScaler(enabled=config.precision == "fp16")  # minift.train.loss_scale
        self.out = pathlib.Path(config.out_dir) if config.out_dir else None
        self.log = MetricsLog(
            self.out / "metrics.jsonl" if self.out and self.dist.is_main else None
        )

    # ------------------------------------------------------------------ pieces
    def autocast(self):
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.config.mode == "min" else value > best

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        # Dropout draws from the global generator: seed it from the step, for exact resume.
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        total, extras = 0.0, {}
        for micro in range(cfg.grad_accum):
            batch = D.shard(self.batch_fn(step, micro), self.dist.rank, self.dist.world_size)
            batch = to_device(batch, self.device)
            last = micro == cfg.grad_accum - 1
            sync = (
                contextlib.nullcontext()
                if (last or not hasattr(self.ddp, "no_sync"))
                else self.ddp.no_sync()
            )
            with sync:
                with self.autocast():
                    loss, extra = self.loss_fn(self.ddp, batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at step {step}: the run diverged "
                        f"(learning rate {self.scheduler.get_last_lr()[0]:.3g}); try a lower lr"
                        + (f"; the last good checkpoint is in {self.out}" if cfg.ckpt_every else "")
                    )
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
            for k, v in extra.items():
                extras[k] = extras.get(k, 0.0) + float(v) / cfg.grad_accum
        self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if cfg.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "loss": D.all_reduce_mean(total, self.dist, self.device), "lr": lr}
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        row.update(extras)
        return row

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with self.autocast():
            metrics = self.eval_fn(self.model)
        self.model.train()
        return {k: float(v) for k, v in metrics.items()}

    def claim_out_dir(self) -> None:
        """A run owns its out_dir: files of an earlier run there are refused (their metrics
        would mix with this run's, and their checkpoints would be taken for this run's),
        unless the config says to overwrite them."""
        if not (self.out and self.dist.is_main):
            return
        earlier = [n for n in RUN_FILES if (self.out / n).exists()]
        if not earlier:
            return
        if not self.config.overwrite:
            raise ValueError(
                f"{self.out} holds an earlier run ({', '.join(earlier)}); resume it "
                "(--resume, fit(resume=True)), replace it (--overwrite, "
                "TrainConfig(overwrite=True)) or choose another out_dir"
            )
        for name in earlier:
            target = self.out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        self.log.rows = []

    def checkpoint(self, step: int, result: TrainResult, bad_evals: int) -> None:
        if not self.out or not (self.dist.is_main or self.sharded):
            return
        extra = {
            "history": result.history,
            "best": result.best,
            "best_step": result.best_step,
            "bad_evals": bad_evals,
            "config": asdict(self.config),
        }
        save = save_sharded_checkpoint if self.sharded else save_checkpoint
        save(self.out / "checkpoints", step, self.model, self.optimizer, self.scheduler, extra)

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        result, start, bad_evals, best_state = TrainResult(), 0, 0, None
        if not resume:
            self.claim_out_dir()
        elif self.out and (path := latest_checkpoint(self.out / "checkpoints")):
            load = load_sharded_checkpoint if self.sharded else load_checkpoint
            state = load(path, self.model, self.optimizer, self.scheduler)
            start, bad_evals = state["step"], state["bad_evals"]
            result.history, result.best, result.best_step = (
                state["history"],
                state["best"],
                state["best_step"],
            )
        self.log.truncate_after(start)
        t0 = time.perf_counter()
        if cfg.eval_at_start and self.eval_fn is not None and start == 0:
            row = {"step": 0, **self.evaluate()}
            if cfg.monitor in row:
                result.best, result.best_step = row[cfg.monitor], 0
                if cfg.restore_best:
                    best_state = copy.deepcopy(self.model.state_dict())
            result.history.append(row)
            self.log.write(row)
        bar = tqdm(
            range(start, cfg.steps),
            desc=cfg.desc,
            initial=start,
            total=cfg.steps,
            # None: tqdm draws only on a terminal, so logs and captured output stay clean.
            disable=None if (cfg.progress and self.dist.is_main) else True,
            leave=False,
            dynamic_ncols=True,
        )
        for step in bar:
            row = self.train_step(step)
            done = step + 1
            if self.on_step is not None:
                self.on_step(done, self)
            is_eval = self.eval_fn is not None and (
                (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps
            )
            if is_eval:
                row.update(self.evaluate())
                value = row.get(cfg.monitor)
                if value is not None and self.better(value, result.best):
                    result.best, result.best_step, bad_evals = value, done, 0
                    if cfg.restore_best:
                        best_state = copy.deepcopy(self.model.state_dict())
                elif value is not None:
                    bad_evals += 1
            result.history.append(row)
            self.log.write(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
            if cfg.ckpt_every and (done % cfg.ckpt_every == 0 or done == cfg.steps):
                self.checkpoint(done, result, bad_evals)
            if self.stop_requested or (cfg.patience is not None and bad_evals >= cfg.patience):
                result.stopped_early = True
                break
        bar.close()
        result.steps_done = len([h for h in result.history if "loss" in h])
        result.seconds = time.perf_counter() - t0
        if best_state is not None:
            self.model.load_state_dict(best_state)
        if self.out and self.dist.is_main:
            self.log.plot(self.out / "loss.png", title=cfg.desc)
        return result


def fit(model, config: TrainConfig, batch_fn, **kwargs) -> TrainResult:
    """One-call form: Trainer(model, config, batch_fn, ...).fit()."""
    resume = kwargs.pop("resume", False)
    return Trainer(model, config, batch_fn, **kwargs).fit(resume=resume)
