# %% [markdown]
# # Lesson 24: precision and memory
#
# Fine-tuning a large model is mostly a fight for memory: weights, gradients, optimizer
# state and activations must all fit. This lesson measures the four levers, each on the
# same job (the pydocs base fine-tuned on `pycode`, the standard library's source code):
#
# 1. **Precision.** Why fp16 needs loss scaling (the share of real gradients that fp16
#    flushes to zero, measured), and fp32 against bf16 autocast on the same run
#    (`minift/train/loss_scale.py`, `TrainConfig(precision=...)`).
# 2. **Activation checkpointing** (Chen et al. 2016): keep each block's input, recompute the
#    block in the backward pass (`GPT.activation_checkpointing`).
# 3. **QLoRA** (Dettmers et al. 2023): the frozen base in 4-bit NormalFloat, LoRA on top
#    (`minift/quant/`).
# 4. **Optimizers**: AdamW, SGD with momentum, Adafactor, Lion, each written out in
#    `minift/train/optimizers.py`; what their state costs per parameter.
#
# Every run below trains the same steps on the same batches (seed 0) and is scored on the
# same validation windows; differences are compared per window with a paired bootstrap.

# %%
import copy
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.data.batching import window_batches
from minift.data.tokens import corpus_tokens
from minift.metrics import compare, mean_se
from minift.peft import LoRAConfig, apply_lora
from minift.quant import apply_qlora, frozen_weight_bits, nf4_code, quantize_nf4
from minift.recipes.pretrain import load_base
from minift.train import TrainConfig, Trainer
from minift.train.loss_scale import LossScaler, underflow_fraction
from minift.train.optimizers import state_floats_per_param
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "24")
base, enc = load_base()
B, T = 8, min(64, base.config.block_size)
STEPS = 8 if FAST else 40
N_VAL = 32 if FAST else 96
train_tokens = corpus_tokens("pycode", "train", enc)
val_tokens = corpus_tokens("pycode", "val", enc)
batches = window_batches(train_tokens, B, T, seed=0)
# Fixed validation windows, evenly spaced through the held-out modules.
starts = np.linspace(0, len(val_tokens) - T - 2, N_VAL).astype(int)
val = torch.from_numpy(np.stack([val_tokens[s : s + T + 1].astype(np.int64) for s in starts]))
print(f"fast mode: {FAST}; base {base.num_params():,} parameters; {STEPS} steps of {B}x{T}")


@torch.no_grad()
def window_losses(model) -> np.ndarray:
    model.eval()
    out = [model(val[i : i + 32, :-1], val[i : i + 32, 1:]).logits for i in range(0, N_VAL, 32)]
    logits = torch.cat(out).float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), val[:, 1:].reshape(-1), reduction="none"
    )
    return nll.view(N_VAL, T).mean(1).numpy()


def train(model, **changes):
    config = TrainConfig(
        **{"steps": STEPS, "lr": 1e-3, "warmup_steps": 2, "weight_decay": 0.0, "progress": False, **changes}
    )  # fmt: skip
    t0 = time.perf_counter()
    result = Trainer(model, config, batches).fit()
    return model, (time.perf_counter() - t0) / STEPS, result


base_val = window_losses(base)
print(f"base model on pycode: val loss {mean_se(base_val)}")

# %% [markdown]
# ## 1. fp16 gradients underflow; loss scaling lifts them
# fp16's smallest subnormal is 2^-24 (6e-8): anything below about half of it becomes 0.
# We take the real fp32 gradients of one fine-tuning batch and ask which share of the
# non-zero ones would vanish if they were stored in fp16 after multiplying the loss by S,
# and which share would overflow (|S g| > 65504, fp16's largest number).

# %%
model = copy.deepcopy(base).train()
x, y = batches(0)
model(x, y).loss.backward()
grads = [p.grad for p in model.parameters() if p.grad is not None]
flat = torch.cat([g.flatten() for g in grads]).abs()
print(f"gradient magnitudes: median {flat[flat > 0].median():.2e}, max {flat.max():.2e}")
log2_scales = list(range(0, 33, 2))
under = [underflow_fraction(grads, 2.0**k) for k in log2_scales]
over = [float((flat * 2.0**k > 65504).float().mean()) for k in log2_scales]
for k, u, o in zip(log2_scales, under, over):
    print(f"  S = 2^{k:<2}  underflow {u:8.4%}  overflow {o:8.4%}")

# The dynamic scaler on this gradient: start at 2^24, halve on overflow, so it settles at
# the largest power of two that does not overflow (a real run would then also grow).
scaler = LossScaler(init_scale=2.0**24, growth_interval=1000)
p = torch.nn.Parameter(torch.zeros(flat.numel()))
opt = torch.optim.SGD([p], lr=0.0)
trace = []
for _ in range(12):
    p.grad = (flat * scaler.get_scale()).half().float()  # fp16 storage of S * g
    took = scaler.step(opt)
    scaler.update()
    trace.append((scaler.get_scale(), took))
settled = trace[-1][0]
print(
    "scaler (log2 scale after each step, step taken):", [(int(np.log2(s)), t) for s, t in trace[:8]]
)
print(
    f"settled at S = 2^{int(np.log2(settled))}: underflow {underflow_fraction(grads, settled):.4%}"
)

# %% [markdown]
# ## 2. fp32 against bf16 autocast, on the same run
# bf16 keeps fp32's exponent range (no scaling needed) with 8 bits of mantissa. Under
# autocast the matmuls run in bf16 and the weights, their gradients and the optimizer
# stay in fp32. (fp16 training needs a GPU here: on the CPU `precision="fp16"` refuses.)

# %%
results = {}
for precision in ("fp32", "bf16"):
    m, sec, res = train(copy.deepcopy(base), precision=precision)
    results[precision] = window_losses(m)
    print(f"{precision}: val loss {mean_se(results[precision])}, {sec * 1000:.0f} ms/step")
    if precision == "bf16":
        bf16_dtypes = {p.dtype for p in m.parameters()}
print(compare("bf16", results["bf16"], "fp32", results["fp32"]))
gap = np.abs(results["bf16"] - results["fp32"]).max()
print(f"largest per-window difference between the two runs: {gap:.2e}")
try:
    Trainer(copy.deepcopy(base), TrainConfig(precision="fp16", progress=False), batches)
except ValueError as e:
    print(f"fp16 on the CPU: {e}")

# %% [markdown]
# ## 3. Activation checkpointing: memory for time
# The backward pass needs the activations the forward pass saved. A saved-tensors hook
# counts the bytes of activations autograd keeps (weights it saves are not new memory); with checkpointing it keeps only each block's input
# (counted by hand: the hook cannot see it) and recomputes the rest.

# %%


def saved_bytes_and_grads(model, checkpointing: bool):
    model.activation_checkpointing = checkpointing
    model.train().zero_grad()
    total = [0]
    weights = {p.data_ptr() for p in model.parameters()}  # saved weights are not new memory

    def pack(t):
        if t.data_ptr() not in weights:
            total[0] += t.numel() * t.element_size()
        return t

    bx, by = batches(0)
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(bx, by).loss.backward()
    seconds = time.perf_counter() - t0
    if checkpointing:  # the block inputs checkpointing holds on to
        total[0] += model.config.n_layer * B * T * model.config.n_embd * 4
    return total[0], seconds, [p.grad.clone() for p in model.parameters()]


ck_model = copy.deepcopy(base)
saved_bytes_and_grads(ck_model, False)  # warm-up
plain_bytes, plain_s, plain_g = saved_bytes_and_grads(ck_model, False)
ck_bytes, ck_s, ck_g = saved_bytes_and_grads(ck_model, True)
ck_diff = max(float((a - b).abs().max()) for a, b in zip(plain_g, ck_g))
print(
    f"activations kept: {plain_bytes / 2**20:.2f} MiB plain, {ck_bytes / 2**20:.2f} MiB checkpointed"
)
print(f"forward+backward: {plain_s * 1000:.0f} ms plain, {ck_s * 1000:.0f} ms checkpointed")
print(f"largest gradient difference: {ck_diff:.1e}")

# %% [markdown]
# ## 4. QLoRA: a 4-bit frozen base, LoRA on top
# NF4's 16 levels are quantiles of a normal distribution, so a normally distributed weight
# falls into each level equally often. Against a uniform 4-bit grid on the same blocks of 64:

# %%
print("NF4 levels:", [round(v, 4) for v in nf4_code().tolist()])


def uniform4(w):
    blocks = torch.nn.functional.pad(w.flatten(), (0, (-w.numel()) % 64)).view(-1, 64)
    c = blocks.abs().amax(1, keepdim=True)
    q = torch.round((blocks / c + 1) * 7.5) / 7.5 - 1  # 16 evenly spaced levels on [-1, 1]
    return (q * c).flatten()[: w.numel()].view(w.shape)


mats = [m.weight.detach() for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and "transformer.h" in n]  # fmt: skip
err_nf4 = np.mean([float(((quantize_nf4(w, False).dequantize() - w) ** 2).mean()) for w in mats])
err_uni = np.mean([float(((uniform4(w) - w) ** 2).mean()) for w in mats])
print(f"mean squared quantization error: NF4 {err_nf4:.3e}, uniform 4-bit {err_uni:.3e}")

lora_lr = 3e-3
lora_model = apply_lora(copy.deepcopy(base), LoRAConfig(r=8, alpha=16, target_modules=["c_attn", "c_proj", "c_fc"]))  # fmt: skip
qlora_model = apply_qlora(copy.deepcopy(base), r=8, alpha=16, target_modules=("c_attn", "c_proj", "c_fc"))  # fmt: skip
bits = frozen_weight_bits(qlora_model)
quantized_val = window_losses(qlora_model)  # B = 0: exactly the quantized base
print(f"frozen base weights: {bits:.3f} bits per parameter (fp32: 32, bf16: 16)")
print(
    f"val loss of the NF4 base before training: {mean_se(quantized_val)} (fp32 base {base_val.mean():.4f})"
)
_, lora_s, _ = train(lora_model, lr=lora_lr)
_, qlora_s, _ = train(qlora_model, lr=lora_lr)
results["lora"], results["qlora"] = window_losses(lora_model), window_losses(qlora_model)
print(f"LoRA  r=8: val loss {mean_se(results['lora'])}, {lora_s * 1000:.0f} ms/step")
print(
    f"QLoRA r=8: val loss {mean_se(results['qlora'])}, {qlora_s * 1000:.0f} ms/step (dequantizes every forward)"
)
print(compare("QLoRA", results["qlora"], "LoRA", results["lora"]))

# %% [markdown]
# ## 5. Optimizers and the memory of their state
# Full fine-tuning, each optimizer at the learning rate a 3-point sweep picked for it on
# this job (40 steps, seed 0; AdamW 1e-3, SGD 0.1, Adafactor 1e-2, Lion 3e-4; the sweep is
# in scripts/bench_efficiency.py). AdamW's row is the fp32 run above.

# %%
LRS = {"adamw": 1e-3, "sgd": 0.1, "adafactor": 1e-2, "lion": 3e-4}
state = {}
for name, lr in LRS.items():
    if name == "adamw":
        m, _, res = train(copy.deepcopy(base), lr=lr)
    else:
        m, _, res = train(copy.deepcopy(base), lr=lr, optimizer=name)
        results[name] = window_losses(m)
    # the state after one step (it is allocated lazily)
    trainer = Trainer(copy.deepcopy(base), TrainConfig(steps=1, lr=lr, optimizer=name, progress=False), batches)  # fmt: skip
    trainer.fit()
    state[name] = state_floats_per_param(trainer.optimizer)
results["adamw"] = results["fp32"]
for name in LRS:
    print(
        f"{name:9s} lr {LRS[name]:<7g} val loss {mean_se(results[name])}  state {state[name]:.3f} floats/param"
    )

# %% [markdown]
# ## The picture

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
ax = axes[0]
ax.plot(log2_scales, [max(u, 1e-9) for u in under], "o-", label="underflow to 0")
ax.plot(log2_scales, [max(o, 1e-9) for o in over], "s-", label="overflow to inf")
ax.axvline(np.log2(settled), color="grey", ls=":", label="dynamic scaler settles")
ax.set(
    yscale="log",
    xlabel="log2 loss scale S",
    ylabel="share of gradients",
    title="fp16 storage of S * g",
)
ax.legend(fontsize=8)
ax = axes[1]
names = ["fp32", "bf16", "lora", "qlora", "sgd", "adafactor", "lion"]
est = [mean_se(results[n]) for n in names]
ax.bar(names, [e.value for e in est], yerr=[1.96 * e.se for e in est], color="tab:blue")
ax.axhline(base_val.mean(), color="grey", ls=":", label="base, no fine-tuning")
ax.set(
    ylim=(min(e.value for e in est) - 0.3, base_val.mean() + 0.1),
    ylabel="pycode val loss",
    title=f"{STEPS} steps, same batches",
)
ax.legend(fontsize=8)
ax = axes[2]
ax.bar(
    ["plain", "checkpointed"],
    [plain_bytes / 2**20, ck_bytes / 2**20],
    color=["tab:gray", "tab:green"],
)
ax.set(
    ylabel="MiB of activations kept for backward",
    title=f"step time {plain_s * 1000:.0f} -> {ck_s * 1000:.0f} ms",
)
fig.tight_layout()
fig.savefig(OUT / "precision_memory.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'precision_memory.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims follow from how the methods work and hold on any base; the last are
# what the literature reports, measured on this base.

# %%
claim("scaling the loss by 2^16 loses fewer fp16 gradients to underflow than no scaling", under[8] < under[0], f"{under[0]:.4%} -> {under[8]:.4%}")  # fmt: skip
claim("the dynamic scaler settles at a scale where no gradient overflows", float((flat * settled > 65504).float().mean()) == 0.0, f"S = 2^{int(np.log2(settled))}")  # fmt: skip
claim("under bf16 autocast the weights stay in fp32", bf16_dtypes == {torch.float32}, str(bf16_dtypes))  # fmt: skip
claim("activation checkpointing keeps fewer activation bytes and gives the same gradients", ck_bytes < plain_bytes and ck_diff <= 1e-6, f"{plain_bytes / 2**20:.2f} -> {ck_bytes / 2**20:.2f} MiB, max diff {ck_diff:.1e}")  # fmt: skip
claim("the NF4 base takes between 4.1 and 4.25 bits per frozen weight", 4.1 < bits < 4.25, f"{bits:.3f}")  # fmt: skip
claim("NF4 quantizes this base's weights with less squared error than a uniform 4-bit grid", err_nf4 < err_uni, f"{err_nf4:.3e} vs {err_uni:.3e}")  # fmt: skip
claim("Lion, SGD and AdamW keep 1, 1 and 2 floats of state per parameter; factored Adafactor far less than 1", state["lion"] == 1 and state["sgd"] == 1 and state["adamw"] == 2 and state["adafactor"] < 0.1, ", ".join(f"{k} {v:.3f}" for k, v in state.items()))  # fmt: skip
cmp = compare("bf16", results["bf16"], "fp32", results["fp32"])
claim("bf16 autocast fine-tunes as well as fp32 (within noise)", cmp.within_noise or cmp.difference < 0, str(cmp), at_scale=True)  # fmt: skip
cmp = compare("QLoRA", results["qlora"], "LoRA", results["lora"])
claim("QLoRA matches LoRA on the same steps (within noise; Dettmers et al. 2023)", cmp.within_noise or cmp.difference < 0, str(cmp), at_scale=True)  # fmt: skip
claim("every run lowers the validation loss below the base's", all(results[n].mean() < base_val.mean() for n in names), ", ".join(f"{n} {results[n].mean():.3f}" for n in names), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. On a GPU, run the fp32 job with `precision="fp16"`: print `trainer.scaler.get_scale()`
#    every step. How many steps are skipped at the start, and why?
# 2. Replace `LossScaler` by a fixed scale of 1 in fp16 on a GPU. Which layers stop
#    learning first (look at the underflow share per parameter)?
# 3. Turn off double quantization (`apply_qlora(..., double_quant=False)`): how many bits
#    per parameter now, and does the validation loss change?
# 4. Give Lion AdamW's learning rate. What happens, and why does the sign update need a
#    smaller step?
# 5. Where does checkpointing stop paying off? Count the activation bytes at T = 32 and at
#    the base's full block size.
