"""The training loop: exact resume, gradient accumulation, DDP, NaN handling, early stopping."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from minift.model import GPT, GPTConfig
from minift.train import NonFiniteLossError, TrainConfig, Trainer
from minift.train.optim import warmup_cosine

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = torch.randint(0, 61, (4000,), generator=torch.Generator().manual_seed(0))


def model_factory(dropout=0.1):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=dropout)
    return GPT(cfg)


def windows(rows):
    """batch_fn: `rows` random windows, a pure function of (step, micro)."""

    def batch_fn(step, micro):
        g = torch.Generator().manual_seed(step * 1000 + micro)
        start = torch.randint(0, len(DATA) - 17, (rows,), generator=g)
        chunk = torch.stack([DATA[s : s + 17] for s in start.tolist()])
        return chunk[:, :-1], chunk[:, 1:]

    return batch_fn


def eval_fn(model):
    x, y = windows(8)(10_000, 0)
    return {"val_loss": model(x, y).loss.item()}


def cfg(**kw):
    base = dict(steps=12, lr=3e-3, warmup_steps=3, progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    full = Trainer(
        model_factory(), cfg(out_dir=str(tmp_path / "a"), eval_every=4), windows(4), eval_fn=eval_fn
    ).fit()

    class Stop(Exception):
        pass

    def stop_at_7(step, trainer):
        if step == 7:
            raise Stop

    first = Trainer(
        model_factory(),
        cfg(out_dir=str(tmp_path / "b"), eval_every=4, ckpt_every=5),
        windows(4),
        eval_fn=eval_fn,
        on_step=stop_at_7,
    )
    with pytest.raises(Stop):
        first.fit()
    # A fresh process would build a fresh model: its weights are overwritten on resume.
    torch.manual_seed(123)
    resumed_model = model_factory()
    with torch.no_grad():
        for p in resumed_model.parameters():
            p.add_(1.0)
    resumed = Trainer(
        resumed_model,
        cfg(out_dir=str(tmp_path / "b"), eval_every=4, ckpt_every=5),
        windows(4),
        eval_fn=eval_fn,
    ).fit(resume=True)
    assert resumed.losses() == full.losses()  # exactly, on the CPU
    assert [h.get("val_loss") for h in resumed.history] == [h.get("val_loss") for h in full.history]
    logged = [
        json.loads(x)["loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged == full.losses()
    assert (tmp_path / "b" / "loss.png").exists()


def test_gradient_accumulation_equals_a_larger_batch():
    big = windows(8)

    def half(step, micro):
        x, y = big(step, 0)
        return x[micro * 4 : (micro + 1) * 4], y[micro * 4 : (micro + 1) * 4]

    # float64: the two runs sum the same gradients in a different order, so in float32 they
    # differ by rounding that depends on the machine's BLAS (1.2e-6 seen after 5 AdamW steps).
    # In float64 that rounding is ~1e-15, and a wrong accumulation (a missing 1/grad_accum, a
    # micro-batch dropped) still moves the weights by ~lr = 3e-3.
    a, b = model_factory(dropout=0.0).double(), model_factory(dropout=0.0).double()
    ra = Trainer(a, cfg(steps=5), big).fit()
    rb = Trainer(b, cfg(steps=5, grad_accum=2), half).fit()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert pa.dtype == torch.float64
        torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-10)
    # The model reduces its loss in float32 (logits.float()), a mean of 8 rows against the
    # mean of two means of 4: equal to a few float32 roundings.
    assert ra.losses() == pytest.approx(rb.losses(), rel=16 * torch.finfo(torch.float32).eps)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    def poisoned(step, micro):
        x, y = windows(4)(step, micro)
        return x, y

    def loss_fn(model, batch):
        loss = model(*batch).loss
        return (loss * float("nan") if model.poison else loss), {}

    model = model_factory()
    model.poison = False

    def arm(step, trainer):
        model.poison = step >= 6

    trainer = Trainer(
        model, cfg(out_dir=str(tmp_path), ckpt_every=3), poisoned, loss_fn=loss_fn, on_step=arm
    )
    with pytest.raises(NonFiniteLossError, match="at step 6"):
        trainer.fit()
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 6  # saved after step 6 finished; step index 6 (the 7th) failed
    from minift.train.checkpoint import load_checkpoint

    again = model_factory()
    fresh = Trainer(again, cfg(), poisoned)
    load_checkpoint(
        tmp_path / "checkpoints" / latest["path"], again, fresh.optimizer, fresh.scheduler
    )
    for p in again.parameters():
        assert torch.isfinite(p).all()


def test_early_stopping_and_restore_best():
    calls = iter([3.0, 2.0, 2.5, 2.6, 2.7, 1.0])
    trainer = Trainer(
        model_factory(),
        cfg(steps=30, eval_every=2, patience=2, restore_best=True),
        windows(4),
        eval_fn=lambda m: {"val_loss": next(calls)},
    )
    result = trainer.fit()
    assert result.stopped_early and result.best == 2.0 and result.best_step == 4
    assert result.steps_done == 8


def test_schedule_warms_up_then_decays_to_the_floor():
    values = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_matrices_decay_but_biases_and_norms_do_not():
    trainer = Trainer(model_factory(), cfg(weight_decay=0.3), windows(2))
    decayed, plain = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(
        p.dim() == 1 for p in plain["params"]
    )


def test_bf16_autocast_trains_on_cpu():
    result = Trainer(model_factory(), cfg(steps=6, precision="bf16"), windows(4)).fit()
    assert all(torch.isfinite(torch.tensor(result.losses())))
    with pytest.raises(ValueError, match="fp16 training needs a CUDA GPU"):
        Trainer(model_factory(), cfg(precision="fp16"), windows(4))


def test_two_process_ddp_matches_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    worker = ROOT / "tests" / "ddp_worker.py"
    single = subprocess.run(
        [sys.executable, str(worker), str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    # float64 workers: the ranks' other summation order is ~1e-16 relative, and Adam's worst
    # amplification (lr / eps where a gradient is near zero) keeps it below 1e-9.
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-12)
    a, b = torch.tensor(one["weights"], dtype=torch.float64), torch.tensor(two["weights"], dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_a_run_owns_its_out_dir(tmp_path):
    Trainer(model_factory(), cfg(steps=3, out_dir=str(tmp_path), ckpt_every=3), windows(2)).fit()
    with pytest.raises(ValueError, match=r"holds an earlier run \(metrics.jsonl, checkpoints"):
        Trainer(model_factory(), cfg(steps=2, out_dir=str(tmp_path)), windows(2)).fit()
    again = Trainer(
        model_factory(), cfg(steps=2, out_dir=str(tmp_path), overwrite=True), windows(2)
    ).fit()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and again.steps_done == 2  # nothing of the earlier run is left
    assert not (tmp_path / "checkpoints").exists()


def test_rotation_goes_by_step_number_not_by_name(tmp_path):
    from minift.train.checkpoint import latest_checkpoint, save_checkpoint

    model = model_factory()
    opt = torch.optim.AdamW(model.parameters())
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts, 999_999, model, opt, None, {})
    # step-1000000 sorts before step-999999 by name; by number it is the newest, and stays.
    save_checkpoint(ckpts, 1_000_000, model, opt, None, {})
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-1000000"]
    assert latest_checkpoint(ckpts).name == "step-1000000"


def test_resume_refuses_a_latest_pointer_to_a_missing_checkpoint(tmp_path):
    import shutil

    Trainer(model_factory(), cfg(steps=4, out_dir=str(tmp_path), ckpt_every=2), windows(2)).fit()
    shutil.rmtree(tmp_path / "checkpoints" / "step-000004")
    with pytest.raises(ValueError, match="names checkpoint step-000004, which is missing"):
        Trainer(model_factory(), cfg(steps=4, out_dir=str(tmp_path), ckpt_every=2), windows(2)).fit(
            resume=True
        )
