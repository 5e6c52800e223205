# %% [markdown]
# # Lesson 05: LoRA, low-rank adaptation
#
# Full fine-tuning (lesson 04) moves every weight. Hu et al. (2021, "LoRA: Low-Rank
# Adaptation of Large Language Models") observed that the change a task needs is nearly
# low-rank, and trained only that change, as a product of two thin matrices:
#
#     y = x W^T + b + s * x A^T B^T,      W: out x in (frozen),  A: r x in,  B: out x r
#
# with the scaling s = alpha / r. Three consequences this lesson checks with numbers:
# - **B starts at zero**, so at initialisation the layer *is* the base layer;
# - a layer trains r (in + out) parameters instead of in * out;
# - after training B A can be added into W (**merging**): inference costs nothing extra,
#   and subtracting it again gives the base back.
#
# The code is `minift/peft/lora.py` (PEFT's names: `lora_A`, `lora_B`, `scaling`).

# %%
import copy
import dataclasses
import time

import torch

from minift.data.batching import classification_batch, window_batches
from minift.data.corpus import load_corpus
from minift.data.tasks import DEFAULT_TASK
from minift.data.tokens import encode_documents
from minift.peft import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    disable_adapters,
    load_adapter,
    merge_and_unload,
    merge_lora,
    print_trainable_parameters,
    save_adapter,
    set_adapter,
    unmerge_lora,
)
from minift.recipes.finetune import FinetuneConfig, build_model, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.train import TrainConfig, Trainer
from minift.train.objectives import classification_inputs
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "05")
print(f"fast mode: {FAST}")
base, enc = load_base()
C = base.config.n_embd
print(f"base model: {base.num_params():,} parameters, {base.config.n_layer} blocks of width {C}")

# %% [markdown]
# ## 1. One layer by hand
# Take the fused attention projection of block 0, `c_attn` (C -> 3C: queries, keys and
# values in one matrix), and wrap it in `LoRALinear`. A is drawn like nn.Linear's own
# weights (Kaiming-uniform), B is zero.

# %%
layer = copy.deepcopy(base.transformer.h[0].attn.c_attn)
r, alpha = 4, 8.0
torch.manual_seed(0)
lora = LoRALinear(layer, r=r, alpha=alpha)
W, b = layer.weight, layer.bias
print(f"W {tuple(W.shape)} frozen; lora_A {tuple(lora.lora_A.shape)}, lora_B {tuple(lora.lora_B.shape)}, scaling s = alpha/r = {lora.scaling}")  # fmt: skip
print(f"trainable: r (in + out) = {r} x ({W.shape[1]} + {W.shape[0]}) = {r * sum(W.shape):,} vs in x out = {W.numel():,} for the full matrix")  # fmt: skip
x = torch.randn(2, 7, C)
print(
    f"B = 0, so the wrapped layer equals the base layer exactly: {torch.equal(lora(x), layer(x))}"
)

# %% [markdown]
# Why B = 0 and A random, not the other way round or both zero? The gradient of B is
# s (dL/dy)^T (x A^T): non-zero as soon as A is. The gradient of A passes through B:
# s B^T (dL/dy)^T x, which is zero while B is. So the first step moves B only, and A
# follows from the second step on. With both at zero, both gradients are zero for ever.

# %%
for name, init_a in [("A random, B = 0", True), ("A = 0, B = 0", False)]:
    torch.manual_seed(0)
    test = LoRALinear(copy.deepcopy(layer), r=r, alpha=alpha)
    if not init_a:
        torch.nn.init.zeros_(test.lora_A)
    test(x).pow(2).mean().backward()
    print(f"{name:16s}: |grad A| = {test.lora_A.grad.norm():.2e}, |grad B| = {test.lora_B.grad.norm():.2e}")  # fmt: skip

# %% [markdown]
# Now give B some values, as training would, and compute the layer by hand:
# x W^T + b + s (x A^T) B^T. The update s B A has the shape of W and rank at most r,
# which is what merging adds into W.

# %%
with torch.no_grad():
    lora.lora_B.normal_(std=0.02)
    by_hand = x @ W.T + b + lora.scaling * (x @ lora.lora_A.T) @ lora.lora_B.T
    merged_by_hand = x @ (W + lora.scaling * lora.lora_B @ lora.lora_A).T + b
    out = lora(x)
delta = lora.delta_weight().detach()
print(f"LoRALinear vs by hand: max |diff| {(out - by_hand).abs().max():.2e}")
print(f"x (W + s B A)^T + b vs LoRALinear: max |diff| {(out - merged_by_hand).abs().max():.2e}")
print(f"s B A: shape {tuple(delta.shape)}, rank {torch.linalg.matrix_rank(delta).item()} (r = {r})")

# %% [markdown]
# ## 2. The scaling: alpha / r or alpha / sqrt(r) (rsLoRA)
# With s = alpha / r, a larger rank is scaled down harder. Kalajdzievski (2023, "A Rank
# Stabilization Scaling Factor for Fine-Tuning with LoRA") showed that this shrinks the
# update as r grows: B A x sums r independent terms, so its size grows like sqrt(r), and
# alpha / r times that shrinks like 1 / sqrt(r). rsLoRA's s = alpha / sqrt(r) keeps it
# constant, so that extra rank can actually be used. Measured, with B's entries of a fixed
# size (as training would give them), averaged over 20 draws:

# %%
print(f"{'r':>4s} {'alpha/r':>8s} {'|s B A x| alpha/r':>18s} {'alpha/sqrt(r)':>14s} {'|s B A x| rsLoRA':>17s}")  # fmt: skip
x1 = torch.randn(64, C)
for rank in (1, 4, 16, 64):
    sizes = {False: [], True: []}
    for draw in range(20):
        torch.manual_seed(draw)
        for rs in (False, True):
            probe = LoRALinear(copy.deepcopy(layer), r=rank, alpha=16, use_rslora=rs)
            with torch.no_grad():
                probe.lora_B.normal_(std=0.02)
                sizes[rs].append((x1 @ probe.delta_weight().T).norm(dim=1).mean().item())
    s_std, s_rs = 16 / rank, 16 / rank**0.5
    print(f"{rank:4d} {s_std:8.3f} {sum(sizes[False]) / 20:18.3f} {s_rs:14.3f} {sum(sizes[True]) / 20:17.3f}")  # fmt: skip

# %% [markdown]
# ## 3. A rank sweep on the default task
# `minift.recipes.finetune` with method "lora" puts LoRA on the attention matrices (`c_attn` and
# `attn.c_proj`) of every block and trains them and the task head; everything else is
# frozen. We sweep r with both scalings (alpha = 16; at r = 1 the two are the same
# number, so that run is shared), and run full fine-tuning with the same budget as the
# yardstick.

# %%
task = get_task(DEFAULT_TASK, seed=0)
config = FinetuneConfig(
    train=train_config(steps=8 if FAST else 60, eval_every=4 if FAST else 20, progress=False)
)
RANKS = [1, 8] if FAST else [1, 8, 64]
full = finetune(task, base, enc, dataclasses.replace(config, method="full"))
print(f"full fine-tuning: val accuracy {full.metric:.3f}, {full.trainable:,} trainable, {full.seconds:.1f}s")  # fmt: skip
sweep = {}
for rs in (False, True):
    for rank in RANKS:
        if rs and rank == 1:  # alpha / 1 == alpha / sqrt(1)
            sweep[(rank, rs)] = sweep[(rank, False)]
            continue
        run = dataclasses.replace(
            config, method="lora", options={"r": rank, "alpha": 16, "use_rslora": rs}
        )
        keep = rank == 8 and not rs  # the library's default, used in the next sections
        sweep[(rank, rs)] = res = finetune(task, base, enc, run, keep_model=keep)
        print(f"r {rank:3d} {'rsLoRA ' if rs else 'alpha/r'}: trainable {res.trainable:7,} ({res.trainable_percent:5.2f}%), val accuracy {res.metric:.3f}, {res.seconds:4.1f}s")  # fmt: skip

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
for rs, color in ((False, "C0"), (True, "C1")):
    acc = [sweep[(rank, rs)].metric for rank in RANKS]
    ax1.plot(
        RANKS, acc, "o-", color=color, label="rsLoRA: alpha/sqrt(r)" if rs else "LoRA: alpha/r"
    )
ax1.axhline(full.metric, color="k", ls="--", label=f"full fine-tuning ({full.trainable:,} params)")
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set_xscale("log", base=2)
ax1.set(xlabel="rank r", ylabel="validation accuracy", title=f"{task.name}: LoRA rank sweep")
ax1.legend(fontsize=8, loc="lower right")
ax2.plot(RANKS, [sweep[(rank, False)].trainable for rank in RANKS], "o-", color="C2")
ax2.axhline(full.trainable, color="k", ls="--", label="full fine-tuning")
ax2.set_xscale("log", base=2)
ax2.set_yscale("log")
ax2.set(xlabel="rank r", ylabel="trainable parameters", title="trainable parameters = r (in + out) per layer + head")  # fmt: skip
ax2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "rank_sweep.png", dpi=110)
plt.close(fig)
best = max(sweep.items(), key=lambda kv: kv[1].metric)
(best_r, best_rs), best_res = best
print(f"best LoRA run: r {best_r} {'rsLoRA' if best_rs else 'alpha/r'}, {best_res.metric:.3f} = {best_res.metric / full.metric:.0%} of full fine-tuning's {full.metric:.3f} with {best_res.trainable / full.trainable:.1%} of its trainable parameters")  # fmt: skip
top = max(RANKS)
print(f"at r = {top} rsLoRA's s = {16 / top**0.5:g} is sqrt({top}) = {top**0.5:g} times alpha/r's {16 / top:g}: at the same learning rate its update is that much larger")  # fmt: skip
print(f"plot saved to {OUT / 'rank_sweep.png'}")

# %% [markdown]
# Read the ratio printed above. A frozen backbone limits LoRA to changes near what the
# base already computes, and this base is tiny (1.3M parameters, minutes of
# pretraining), so a gap to full fine-tuning is expected here; Hu et al. (2021) found
# LoRA matching full fine-tuning on bases of 125M to 175B parameters. Lesson 10 measures
# how the gap moves with the base's quality.
#
# ## 4. Switching off, merging
# The r = 8 model from the sweep. `disable_adapters` switches every adapter off: the
# backbone then computes exactly what the base computes (bit for bit: an inactive
# LoRALinear just calls its base layer).

# %%
model = sweep[(8, False)].model
lora_layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
val_ids = classification_inputs(task, enc, task.val[:64], config.max_len)
batch = classification_batch(val_ids, None, pad_id(enc), config.max_len)
idx, mask = batch["idx"], batch["attention_mask"]
reference = build_model(base, task, enc, config).eval()
with torch.no_grad(), disable_adapters(model):
    off = model.features(idx, attention_mask=mask)
with torch.no_grad():
    base_features = reference.features(idx, attention_mask=mask)
    on = model.features(idx, attention_mask=mask)
print(f"features with adapters disabled == the base's features: {torch.equal(off, base_features)}")
print(f"with the adapters on they differ by up to {(on - base_features).abs().max():.2e}")

# %% [markdown]
# Merging adds s B A into each W; the outputs stay the same up to float rounding, and no
# LoRA matmuls run any more. Unmerging subtracts it again, which gives W back up to
# rounding too (not bit for bit: (W + D) - D is not always W in floating point).

# %%
w0 = lora_layers[0].base_weight.detach().clone()
with torch.no_grad():
    unmerged = model(idx, attention_mask=mask).logits
    merge_lora(model)
    merged = model(idx, attention_mask=mask).logits
    w_merged = lora_layers[0].base_weight.detach().clone()
    try:
        merge_lora(model)
    except RuntimeError as err:
        print(f"merging twice is refused: {err}")
    unmerge_lora(model)
    again = model(idx, attention_mask=mask).logits
print(f"{len(lora_layers)} LoRA layers; merged vs unmerged logits: max |diff| {(merged - unmerged).abs().max():.2e}")  # fmt: skip
print(f"block 0 c_attn weight moved by up to {(w_merged - w0).abs().max():.2e} when merged; after unmerging it is back within {(lora_layers[0].base_weight - w0).abs().max():.2e}")  # fmt: skip
print(f"unmerged again vs before: max |diff| {(again - unmerged).abs().max():.2e}")
plain = merge_and_unload(copy.deepcopy(model))
with torch.no_grad():
    plain_logits = plain(idx, attention_mask=mask).logits
print(f"merge_and_unload: {sum(isinstance(m, LoRALinear) for m in plain.modules())} LoRA layers left, logits max |diff| {(plain_logits - unmerged).abs().max():.2e}")  # fmt: skip

# %% [markdown]
# ## 5. Saving only what was trained
# `save_adapter` writes the LoRA tensors and the task head (safetensors) and the config
# that made them (JSON). `load_adapter` re-applies the config to a fresh copy of the base
# and loads the tensors: the outputs come back exactly.

# %%
path = save_adapter(model, OUT / "lora_r8")
base.save(OUT / "base")
adapter_bytes = sum(f.stat().st_size for f in path.iterdir())
base_bytes = sum(f.stat().st_size for f in (OUT / "base").iterdir())
for f in sorted(path.iterdir()):
    print(f"  {f.name:28s} {f.stat().st_size:>10,} bytes")
print(f"adapter {adapter_bytes:,} bytes vs the base model {base_bytes:,} bytes ({adapter_bytes / base_bytes:.1%})")  # fmt: skip
fresh = load_adapter(build_model(base, task, enc, config), path).eval()
with torch.no_grad():
    print(f"loaded onto a fresh base: logits equal exactly: {torch.equal(fresh(idx, attention_mask=mask).logits, unmerged)}")  # fmt: skip

# %% [markdown]
# ## 6. Two named adapters on one model
# One base, one adapter per domain, switched at run time: the base's weights are shared,
# each domain costs only its adapter. Here the language model itself is adapted (no task
# head) to two corners of pydocs, the docstrings of `tkinter` (GUI widgets) and of
# `email` (MIME messages). Each adapter trains with the other switched off
# (`set_adapter`), then each model is scored on held-out docstrings of both domains.

# %%
DOMAINS = ("tkinter", "email")
corpus = load_corpus("pydocs", "all")
tokens = {}
for d in DOMAINS:
    texts = [x.text for x in corpus if x.module.split(".")[0] == d]
    held_out = texts[::5]  # every fifth docstring is validation
    train_texts = [t for i, t in enumerate(texts) if i % 5]
    tokens[d] = (encode_documents(train_texts, enc), encode_documents(held_out, enc))
BLOCK, LM_STEPS = (32, 10) if FAST else (64, 40)
gpt = copy.deepcopy(base)
for d in DOMAINS:
    apply_lora(gpt, LoRAConfig(r=8, alpha=16, target_modules=["c_attn", "attn.c_proj"], adapter_name=d))  # fmt: skip
print_trainable_parameters(gpt)
val_batches = {d: [window_batches(tokens[d][1], 16, BLOCK, seed=100 + i)(0, 0) for i in range(4)] for d in DOMAINS}  # fmt: skip


@torch.no_grad()
def domain_loss(m, d: str) -> float:
    return sum(m(xb, yb).loss.item() for xb, yb in val_batches[d]) / len(val_batches[d])


for d in DOMAINS:
    set_adapter(gpt, d)  # only this adapter is active and trainable
    train_cfg = TrainConfig(steps=LM_STEPS, lr=5e-3, warmup_steps=5, weight_decay=0.0, progress=False)  # fmt: skip
    Trainer(gpt, train_cfg, window_batches(tokens[d][0], 16, BLOCK, seed=0)).fit()
    print(f"trained adapter {d!r} on {len(tokens[d][0]):,} tokens of {d} docstrings")
gpt.eval()
losses = {}
with disable_adapters(gpt):
    losses["none (base)"] = [domain_loss(gpt, d) for d in DOMAINS]
for d in DOMAINS:
    set_adapter(gpt, d)
    losses[f"adapter {d}"] = [domain_loss(gpt, d2) for d2 in DOMAINS]
print(f"\n{'active':18s}" + "".join(f"{'val loss ' + d:>18s}" for d in DOMAINS))
for name, row in losses.items():
    print(f"{name:18s}" + "".join(f"{v:18.3f}" for v in row))

# %% [markdown]
# An adapter saved on its own and loaded onto a fresh base gives the same outputs as the
# two-adapter model with that adapter active.

# %%
save_adapter(gpt, OUT / "lm_email", adapter_name="email")
alone = load_adapter(copy.deepcopy(base), OUT / "lm_email").eval()
xb = val_batches["email"][0][0]
set_adapter(gpt, "email")
with torch.no_grad():
    diff = (alone(xb).logits - gpt(xb).logits).abs().max()
print(f"'email' alone on a fresh base vs switched to on the shared model: max |diff| {diff:.2e}")

fig, ax = plt.subplots(figsize=(5.5, 3.6))
names = list(losses)
ax.imshow([losses[n] for n in names], cmap="viridis_r")
for i, n in enumerate(names):
    for j in range(len(DOMAINS)):
        ax.text(j, i, f"{losses[n][j]:.3f}", ha="center", va="center", color="w")
ax.set_xticks(range(len(DOMAINS)), [f"{d} docstrings" for d in DOMAINS])
ax.set_yticks(range(len(names)), names)
ax.set_title("validation loss: which adapter is active (rows), on which domain (columns)", fontsize=9)  # fmt: skip
fig.tight_layout()
fig.savefig(OUT / "named_adapters.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'named_adapters.png'}")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Put LoRA on every linear layer (`options={"target_modules": "all-linear"}`). How
#    many more parameters, and how much more accuracy?
# 2. Adapt only the queries and values of `c_attn` (`qkv_parts=["q", "v"]`, as Hu et al.
#    did on GPT-3). What does that cost in accuracy?
# 3. Train the rsLoRA and alpha/r runs at r = 64 with three times the learning rate. Is
#    the difference between the scalings just a different effective learning rate?
# 4. Use DoRA (`method="dora"`): what does the learned magnitude per output row add?
