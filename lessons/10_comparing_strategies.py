# %% [markdown]
# # Lesson 10: comparing strategies, and hybrids
#
# Lessons 04-09 each looked at one way to fine-tune. This one puts them side by side on
# the same task, budget and batches, combines them (hybrids), and asks the question the
# comparison depends on: *how good is the base model?*
#
# What to compare, for each method: the validation metric, the trainable parameters
# (what you store per task and what the optimizer holds), and the wall time. `minift
# demo` runs the whole table; here a smaller one, then:
#
# - **hybrids**: LoRA + prefix tuning on one model; bottleneck adapters plus an unfrozen
#   last block (`trainable_extra`); UniPELT (Mao et al. 2022), which gates LoRA, an
#   adapter and a prefix and lets the model learn how much of each to use;
# - **the base's quality**: parameter-efficient methods keep the base frozen, so they can
#   only be as good as its features. Lester et al. (2021) found prompt tuning matching
#   full fine-tuning only at about 10B parameters; Hu et al. (2021) evaluated LoRA on
#   GPT-3. Our base is tiny, but we can vary how long it was pretrained and watch how the
#   ratio PEFT / full moves.

# %%
import dataclasses
import time

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import DEFAULT_TASK
from minift.data.tokens import corpus_tokens
from minift.model import GPT
from minift.model.heads import pool_hidden
from minift.peft import AdapterConfig, apply_adapters
from minift.peft.core import adapter_layers, adapter_parameters
from minift.peft.methods import METHODS, Method, Preparation, register_method
from minift.peft.unipelt import GatedAdapter, GatedLoRALinear, GatedPrefix
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import default_recipe, lm_eval_fn, load_base, pretrain
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.train.objectives import classification_inputs
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "10")
print(f"fast mode: {FAST}")
base, enc = load_base()
task = get_task(DEFAULT_TASK, seed=0)
L = base.config.n_layer
config = FinetuneConfig(
    train=train_config(steps=8 if FAST else 60, eval_every=4 if FAST else 20, progress=False)
)
print(f"base: {base.num_params():,} parameters; task {task.summary()}; {config.train.steps} steps, batch {config.batch_size}, each method at its default learning rate")  # fmt: skip

results = {}


def run(name: str, method: str, on=base, **options):
    cfg = dataclasses.replace(config, method=method, options=options)
    results[name] = r = finetune(task, on, enc, cfg, keep_model=method == "unipelt")
    print(f"{name:26s} trainable {r.trainable:9,} ({r.trainable_percent:6.2f}%)  val accuracy {r.metric:.3f}  {r.seconds:5.1f}s")  # fmt: skip
    return r


# %% [markdown]
# ## 1. A small comparison
# Full fine-tuning and training from scratch bracket the table; between them a linear
# probe (the head alone), the last block alone and LoRA (r = 8 on the attention
# matrices). Lessons 06 and 07 compared the adapter and prefix families.

# %%
# (fast mode: the tiny base shows nothing here, so it runs only what later sections need)
for name in ("full", "scratch", "lora") if FAST else ("full", "scratch", "probe", "layerwise", "lora"):  # fmt: skip
    run(name, name)

# %% [markdown]
# ## 2. Hybrids
# PEFT methods compose: each wraps or hooks a different place, so they stack on one
# model, and the trainable parameters are the union.
#
# **LoRA + prefix** (the library's "hybrid" method): LoRA on the attention matrices and
# 5 trained key/value prefixes per layer.

# %%
run("lora + prefix", "hybrid")

# %% [markdown]
# **Adapters + an unfrozen last block.** `trainable_extra` names modules that train
# alongside the adapters: here the whole last block. The two parts get different
# learning rates (two optimizer groups, a `Preparation`): the adapters the adapter
# method's rate, the pretrained block the rate of "layerwise".

# %%
LAST = f"transformer.h.{L - 1}"


def adapter_plus_block(model, options: AdapterConfig, ctx) -> Preparation:
    apply_adapters(model, options)
    new = {id(p) for _, layer in adapter_layers(model) for p in adapter_parameters(layer)}
    block = [p for p in model.get_submodule("backbone." + LAST).parameters() if id(p) not in new]
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in {id(q) for q in block}]  # fmt: skip
    return Preparation(
        param_groups=[
            {"params": others, "lr": ctx.lr},  # the adapters (of every block) and the head
            {"params": block, "lr": METHODS["layerwise"].lr},  # the pretrained last block
        ]
    )


extra = {"trainable_extra": ["head", LAST]}  # AdapterConfig's options, with this default
register_method(Method("adapter+block", AdapterConfig, METHODS["adapter"].lr, "adapters + last block", adapter_plus_block, extra))  # fmt: skip
run(f"adapter + {LAST}", "adapter+block")

# %% [markdown]
# **UniPELT**: gated LoRA (on q and v), a gated Pfeiffer adapter after each MLP and a
# gated prefix, each scaled by G = sigmoid(W_G x). After training, how open is each gate
# on the validation texts? (A gate near 0 switches its method off; they start near 0.5.)

# %%
uni = run("unipelt", "unipelt").model
gates: dict[str, list[float]] = {"LoRA": [], "adapter": []}
hooks = []
for module in uni.modules():
    if isinstance(module, GatedLoRALinear | GatedAdapter):
        kind = "LoRA" if isinstance(module, GatedLoRALinear) else "adapter"
        gate = module.lora_gate if kind == "LoRA" else module.gate
        hooks.append(gate.register_forward_hook(lambda m, i, out, k=kind: gates[k].append(torch.sigmoid(out).mean().item())))  # fmt: skip
ids = classification_inputs(task, enc, task.val, config.max_len)
val_batch = classification_batch(ids, None, pad_id(enc), config.max_len)
with torch.no_grad():
    uni(val_batch["idx"], attention_mask=val_batch["attention_mask"])
for h in hooks:
    h.remove()
prefix = next(m for m in uni.modules() if isinstance(m, GatedPrefix))
gates["prefix"] = [g.float().mean().item() for g in prefix.gate_values if g is not None]
for kind, values in gates.items():
    print(f"UniPELT {kind:7s} gate, mean over validation texts, per layer: " + ", ".join(f"{v:.2f}" for v in values))  # fmt: skip

# %% [markdown]
# ## 3. The table

# %%
full = results["full"]
print(f"\n{'method':26s} {'trainable':>10s} {'%':>7s} {'time s':>7s} {'peak MB':>8s} {'val acc':>8s} {'/ full':>7s}")  # fmt: skip
for name, r in results.items():
    print(f"{name:26s} {r.trainable:10,} {r.trainable_percent:7.2f} {r.seconds:7.1f} {r.peak_mb:8.1f} {r.metric:8.3f} {r.metric / full.metric:7.0%}")  # fmt: skip
n_val = len(task.val)
p_full = full.metric
print(f"chance {1 / task.num_labels:.3f}; one standard error near {p_full:.2f} on {n_val} rows: {(p_full * (1 - p_full) / n_val) ** 0.5:.3f}")  # fmt: skip
print("(peak MB: growth of the process's resident memory during the run, on the CPU)")

# %% [markdown]
# ## 4. How the base's quality moves the comparison
# Three bases of the same architecture: random weights (0 steps of pretraining), a short
# pretraining run (`minift.recipes.pretrain.pretrain` with `PretrainRecipe(steps=...)`), and the
# default base. Each gets full fine-tuning and LoRA with the same budget as above. The
# random base's full fine-tuning *is* the scratch run of section 1 (the same seed gives
# the same weights), so it is reused.
#
# Two measurements of each base before any fine-tuning:
# - its language-model loss on the same validation windows of pydocs;
# - how much its features vary from text to text: the *effective rank* (Roy and Vetterli
#   2007) of the centred last-token features of the validation texts, exp of the entropy
#   of their normalised squared singular values. 1 means every text maps to the same
#   direction; C means the features spread over all C dimensions alike. A frozen
#   backbone can only give a head what varies here.
#
# The comparison is the share of full fine-tuning's gain over chance that LoRA reaches,
# (LoRA - chance) / (full - chance); it is left out where full fine-tuning itself is
# within two standard errors of chance.

# %%
SHORT = 10 if FAST else 30
recipe = default_recipe()
short_recipe = dataclasses.replace(recipe, steps=SHORT, warmup_steps=max(1, SHORT // 6), eval_batches=2)  # fmt: skip
t0 = time.perf_counter()
short_base, _ = pretrain(short_recipe, enc, progress=False)
print(f"pretrained a base for {SHORT} steps (the default base had {recipe.steps}) in {time.perf_counter() - t0:.1f}s")  # fmt: skip
torch.manual_seed(0)  # what "scratch" does before building its fresh model
random_base = GPT(base.config).eval()
lm_loss_of = lm_eval_fn(corpus_tokens("pydocs", "val", enc), dataclasses.replace(recipe, eval_batches=2))  # fmt: skip


@torch.no_grad()
def effective_rank(gpt) -> float:
    idx, mask = val_batch["idx"], val_batch["attention_mask"]
    feats = pool_hidden(
        gpt(idx, attention_mask=mask, compute_logits=False).last_hidden, mask, "last"
    )
    s2 = torch.linalg.svdvals(feats - feats.mean(0)) ** 2
    p = s2 / s2.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


bases = {0: random_base, SHORT: short_base, recipe.steps: base}
quality = {}
for steps, model in bases.items():
    with torch.no_grad():
        quality[steps] = (lm_loss_of(model)["val_loss"], effective_rank(model))
by_base = {0: {"full": results["scratch"]}, recipe.steps: {"full": full, "lora": results["lora"]}}
by_base[0]["lora"] = run("lora, random base", "lora", on=random_base)
by_base[SHORT] = {
    "full": run(f"full, {SHORT}-step base", "full", on=short_base),
    "lora": run(f"lora, {SHORT}-step base", "lora", on=short_base),
}
chance, two_se = 1 / task.num_labels, 2 * (p_full * (1 - p_full) / n_val) ** 0.5
share = {}
print(f"\n{'pretraining steps':>17s} {'LM val loss':>12s} {'eff. rank':>10s} {'full':>6s} {'LoRA':>6s} {'LoRA share of the gain':>23s}")  # fmt: skip
for steps in sorted(by_base):
    f, lo = by_base[steps]["full"].metric, by_base[steps]["lora"].metric
    share[steps] = (lo - chance) / (f - chance) if f - chance > two_se else None
    shown = "n/a (full ~ chance)" if share[steps] is None else f"{share[steps]:.0%}"
    print(f"{steps:17d} {quality[steps][0]:12.3f} {quality[steps][1]:10.1f} {f:6.3f} {lo:6.3f} {shown:>23s}")  # fmt: skip
print(f"differences under two standard errors ({two_se:.3f} in accuracy) are noise")

# %% [markdown]
# Read the table from the top. Early in pretraining a language model learns which tokens
# are frequent, and for that the text hardly matters: if the short base's effective rank
# is far below the random base's, its features have collapsed toward one direction and
# give a head less to read than random weights do. Whether LoRA's share of full
# fine-tuning's gain grows from the random to the default base is the question of this
# section; at 1.3M parameters the range of bases is small, and the papers above saw the
# gap close at sizes thousands of times larger.

# %% [markdown]
# ## 5. Plots

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
main = {k: v for k, v in results.items() if "base" not in k}
for name, r in main.items():
    ax1.scatter(r.trainable, r.metric, s=35)
    ax1.annotate(name, (r.trainable, r.metric), fontsize=8, textcoords="offset points", xytext=(4, 3))  # fmt: skip
ax1.set_xscale("log")
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set(xlabel="trainable parameters", ylabel="validation accuracy", title=f"{task.name}, {config.train.steps} steps each")  # fmt: skip
ax1.legend(fontsize=8)
names = list(main)
ax2.barh(names, [main[n].seconds for n in names], color="C1")
ax2.set(xlabel="wall time (s)", title="time per run (this machine, shared)")
steps_sorted = sorted(by_base)
losses = [quality[s][0] for s in steps_sorted]
for key, color in (("full", "C0"), ("lora", "C2")):
    ax3.plot(losses, [by_base[s][key].metric for s in steps_sorted], "o-", color=color, label=f"{key} fine-tuning")  # fmt: skip
for s, x in zip(steps_sorted, losses):
    ax3.annotate(f"{s} steps, eff. rank {quality[s][1]:.1f}", (x, by_base[s]["full"].metric), fontsize=8, textcoords="offset points", xytext=(3, 5))  # fmt: skip
ax3.axhline(chance, color="gray", ls=":", label="chance")
ax3.invert_xaxis()
ax3.set(xlabel="base's pydocs validation loss (better ->)", ylabel="validation accuracy", title="the base's quality")  # fmt: skip
ax3.legend(fontsize=8, loc="upper left")
shown = [(x, share[s]) for s, x in zip(steps_sorted, losses) if share[s] is not None]
if shown:
    twin = ax3.twinx()
    twin.plot(*zip(*shown), "s--", color="C3", label="LoRA share of full's gain")
    twin.set_ylim(0, 1.05)  # a share: on its own 0..1 scale, small changes look small
    twin.set_ylabel("LoRA share of full's gain over chance", color="C3")
    twin.legend(fontsize=8, loc="center right")
fig.tight_layout()
fig.savefig(OUT / "strategies.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'strategies.png'}")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Add IA3, prefix and prompt tuning to section 1 (`run("ia3", "ia3")`, ...). Which
#    family does best per trainable parameter on this base?
# 2. Give every method its best learning rate (sweep three around its default). Does the
#    order of the table change? A comparison at one learning rate can mislead.
# 3. Pretrain a base for more steps than the default (say 900; it takes a few minutes)
#    and extend section 4. Does the LoRA / full ratio keep moving?
# 4. In the adapter + block hybrid, train the block at the adapters' rate too (one group).
#    Does the separate rate matter?
