# %% [markdown]
# # Lesson 25: beyond one device: data parallelism and sharding
#
# A model trains on several devices in two basic ways:
#
# - **DDP** (data parallelism; Li et al. 2020): each of W processes holds the whole model,
#   takes 1/W of every batch, and the gradients are averaged (all-reduce) before each
#   step. It speeds training up; it saves no memory per device.
# - **FSDP** (fully sharded data parallelism; Zhao et al. 2023, after ZeRO-3, Rajbhandari
#   et al. 2020): each process keeps only 1/W of every weight, gradient and optimizer state,
#   gathers a block's full weights just before using it and frees them after. It is how a
#   model larger than one device's memory is fine-tuned (`minift/train/fsdp.py`).
#
# First the arithmetic of memory per device at GPT-2's sizes; then both engines run here,
# on 2 CPU processes (gloo), against one process on the same global batches.

# %%
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

WORKER = "--worker" in sys.argv


def fine_tune(out: str | None) -> dict:
    """The job every engine runs: a few steps of full fine-tuning on pycode, same batches."""
    from minift.data.batching import window_batches
    from minift.data.tokens import corpus_tokens
    from minift.recipes.pretrain import load_base
    from minift.train import TrainConfig, Trainer
    from minift.train import distributed as D
    from minift.train.fsdp import full_state, local_numel, shard_model
    from minift.utils import fast_mode

    info = D.setup_distributed("cpu")
    torch.set_num_threads(1)
    base, enc = load_base(progress=False, verbose=False)
    batches = window_batches(corpus_tokens("pycode", "train", enc), 8, 32, seed=0)
    steps = 3 if fast_mode() else 10
    results = {}
    for engine in ("ddp", "fsdp") if info.enabled else ("single",):
        model = base.__class__(base.config)
        model.load_state_dict(base.state_dict())
        if engine == "fsdp":
            shard_model(model)
        held = local_numel(model)
        config = TrainConfig(steps=steps, lr=1e-3, warmup_steps=0, weight_decay=0.0, progress=False)
        stamps = []  # step times after the first (which also sets up communication)
        result = Trainer(model, config, batches, on_step=lambda d, t, s=stamps: s.append(time.perf_counter())).fit()  # fmt: skip
        seconds = float(np.median(np.diff(stamps)))
        weights = torch.cat([t.flatten() for t in full_state(model).values()])
        results[engine] = dict(losses=result.losses(), held=held, seconds=seconds,
                               total=base.num_params(), weights=weights.tolist())  # fmt: skip
    if info.is_main and out:
        pathlib.Path(out).write_text(json.dumps(results))
    D.cleanup()
    return results


if WORKER:
    fine_tune(sys.argv[sys.argv.index("--worker") + 1])
    sys.exit(0)

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minift.claims import claim  # noqa: E402
from minift.model import GPTConfig  # noqa: E402
from minift.recipes.pretrain import load_base  # noqa: E402
from minift.train.fsdp import full_state, shard_model  # noqa: E402
from minift.train.memory import memory_per_device, parameter_counts  # noqa: E402
from minift.utils import fast_mode, output_dir  # noqa: E402

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "25")

# %% [markdown]
# ## Memory per device, by arithmetic
# Mixed-precision AdamW training keeps, per parameter: bf16 weights (2 bytes) and
# gradients (2), an fp32 master copy (4) and two fp32 Adam moments (8): 16 bytes. LoRA
# keeps the frozen base in bf16 (2 bytes) and the 16 bytes only for the adapters (here
# r = 16 on every linear layer of each block); QLoRA the blocks' linear weights in NF4
# (4.127 bits), the embeddings in bf16 (`minift/train/memory.py`, checked against a real
# step's tensors by tests/test_memory.py; `scripts/scaling_note.py` has more sizes).
# FSDP divides everything by W. Activations are left out: they depend on batch and
# length, and checkpointing (lesson 24) cuts them.

# %%
# (layers, width, heads, positions): GPT-2's four sizes and GPT-3 175B (Brown et al. 2020)
SIZES = {"124M": (12, 768, 12, 1024), "355M": (24, 1024, 16, 1024), "774M": (36, 1280, 20, 1024),
         "1.5B": (48, 1600, 25, 1024), "175B": (96, 12288, 96, 2048)}  # fmt: skip
COLS = [("full", {}), ("FSDP W=8", {"fsdp": 8}), ("LoRA", {"method": "lora"}), ("QLoRA", {"method": "qlora"})]  # fmt: skip
rows = []
print(
    f"{'model':6s} {'params':>8s} " + " ".join(f"{c:>9s}" for c, _ in COLS) + "   (GiB per device)"
)
for name, (L, d, h, T) in SIZES.items():
    config = GPTConfig(n_layer=L, n_embd=d, n_head=h, block_size=T)
    n = parameter_counts(config).total
    gib = [memory_per_device(config, **{"method": "full", **kw})["total"] / 2**30 for _, kw in COLS]
    rows.append((name, n, *gib))
    print(f"{name:6s} {n / 1e6:7.0f}M " + " ".join(f"{g:9.2f}" for g in gib))

# %% [markdown]
# ## DDP and FSDP on 2 processes, against 1
# The lesson starts itself under `torchrun --nproc_per_node=2` (the `--worker` branch at
# the top), where each process takes half of every batch; the same job also runs here in
# one process. Same base, same batches, same steps.

# %%
single = fine_tune(None)["single"]
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "two.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.abspath(__file__), "--worker", out]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    two = json.loads(pathlib.Path(out).read_text())

# The processes sum the gradients in another order than one process does, so float32
# results differ in the last bits, and Adam, which divides by sqrt(v), turns a rounding
# difference in a near-zero gradient into a visible one. What must hold is that the
# difference is tiny next to how far training moved the weights: ||w_2 - w_1|| / ||w_1 - w_0||.
w1 = np.array(single["weights"])
w0 = torch.cat([t.flatten() for t in full_state(load_base(progress=False, verbose=False)[0]).values()]).numpy()  # fmt: skip
moved = float(np.linalg.norm(w1 - w0))
diffs, rel = {}, {}
for engine in ("ddp", "fsdp"):
    r = two[engine]
    diffs[engine] = float(np.abs(np.array(r["weights"]) - w1).max())
    rel[engine] = float(np.linalg.norm(np.array(r["weights"]) - w1)) / moved
    print(f"{engine:5s}: losses {[round(x, 4) for x in r['losses']]}")
    print(f"       max |weight - single process| {diffs[engine]:.1e} (relative to the update {rel[engine]:.1e}); this rank holds "
          f"{r['held']:,} of {r['total']:,} parameters; {r['seconds'] * 1000:.0f} ms/step")  # fmt: skip
print(f"single: losses {[round(x, 4) for x in single['losses']]}; {single['seconds'] * 1000:.0f} ms/step")  # fmt: skip
share = two["fsdp"]["held"] / two["fsdp"]["total"]

try:
    shard_model(torch.nn.Linear(2, 2))
except ValueError as e:
    print(f"FSDP in one process: {e}")

# %% [markdown]
# ## The fine-tuning recipe on several processes
# The same engine drives `minift finetune`: under `torchrun`, `--fsdp` shards the model per
# block over the processes (gloo on CPUs; `--device cuda` takes nccl and one GPU per
# process), each takes half of every global batch, and only rank 0 prints and writes. With
# `--method lora` the frozen base is sharded too and only the adapters enter the
# optimizer. `--save` gathers the whole weights to rank 0 once, at the end, in the folder
# `minift eval --model` reads; `--ckpt-every` writes sharded checkpoints (one file of
# shards per process, `minift/train/sharded_checkpoint.py`) that `--resume` continues
# exactly. tests/test_fsdp.py checks each of these against one process, in float64.
# LoRA's rank is spelled `--rank` here: torchrun reads `--r` as an abbreviation of its
# own options and stops. Run them from a shell (each starts two Python processes, which
# takes longer than this lesson may):

# %%
launch = "torchrun --standalone --nproc_per_node=2 -m minift finetune --fsdp"
for line in (
    f"{launch} --method full --steps 60 --save runs/fsdp-full",
    f"{launch} --method lora --rank 8 --steps 60 --out runs/fsdp-lora --ckpt-every 20",
    f"{launch} --method lora --rank 8 --steps 60 --out runs/fsdp-lora --ckpt-every 20 --resume",
    "minift eval --model runs/fsdp-full",
):
    print(line)

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
ax = axes[0]
x = np.arange(len(rows))
for i, (label, col) in enumerate(
    [("full FT", 2), ("FSDP, 8 devices", 3), ("LoRA", 4), ("QLoRA", 5)]
):
    ax.bar(x + i * 0.2 - 0.3, [r[col] for r in rows], 0.2, label=label)
ax.axhline(80, color="red", ls=":", label="one 80 GB GPU")
ax.set(xticks=x, xticklabels=[r[0] for r in rows], yscale="log", ylabel="GiB per device (no activations)",
       title="memory for weights, gradients, optimizer")  # fmt: skip
ax.legend(fontsize=8)
ax = axes[1]
ax.plot(single["losses"], "k-", label="1 process")
ax.plot(two["ddp"]["losses"], "o", label="DDP, 2 processes")
ax.plot(two["fsdp"]["losses"], "x", label="FSDP, 2 processes")
ax.set(xlabel="step", ylabel="train loss", title="the same updates")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "beyond_one_device.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'beyond_one_device.png'}")

# %% [markdown]
# ## What the numbers say

# %%
claim("DDP on 2 processes gives the single process's weights, to float32 summation order (the difference is under 1% of the update)", rel["ddp"] < 1e-2, f"||diff|| / ||update|| {rel['ddp']:.1e}, max |diff| {diffs['ddp']:.1e}")  # fmt: skip
claim("FSDP on 2 processes gives the single process's weights (under 1% of the update)", rel["fsdp"] < 1e-2, f"||diff|| / ||update|| {rel['fsdp']:.1e}, max |diff| {diffs['fsdp']:.1e}")  # fmt: skip
claim("each FSDP rank holds about half of the parameters; DDP holds all of them", abs(share - 0.5) < 0.02 and two["ddp"]["held"] == two["ddp"]["total"], f"FSDP {share:.3f}, DDP {two['ddp']['held'] / two['ddp']['total']:.3f}")  # fmt: skip
claim("QLoRA of GPT-2 1.5B needs less memory per device than full fine-tuning of GPT-2 124M", rows[3][5] < rows[0][2], f"{rows[3][5]:.2f} vs {rows[0][2]:.2f} GiB")  # fmt: skip
claim("full fine-tuning of GPT-3 175B overflows an 80 GB GPU even sharded over 8 of them", rows[4][3] > 80, f"{rows[4][3]:.0f} GiB per device with FSDP over 8")  # fmt: skip
claim("2 CPU processes on this tiny model are faster per step than one (communication is cheap relative to compute)", two["ddp"]["seconds"] < single["seconds"], f"DDP {two['ddp']['seconds'] * 1000:.0f} vs single {single['seconds'] * 1000:.0f} ms/step", at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Run the worker with 4 processes (`--nproc_per_node=4`; the batch of 8 splits in 4).
#    What share does each FSDP rank hold now?
# 2. Add activations to the memory table: per token and layer, GPT-2 keeps about 34 d bytes
#    in bf16 (Korthikanti et al. 2022) plus 5 h T bytes of attention scores. At T = 1024
#    and batch 8, which size stops fitting with FSDP on 8 GPUs?
# 3. FSDP with LoRA (`minift finetune --fsdp --method lora` under torchrun): only the
#    adapters train; what share of the memory does sharding still save, and where?
# 4. Time the steps with `grad_accum=4` under DDP: why is `no_sync` on all but the last
#    micro-batch worth it?
