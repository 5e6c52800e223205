# %% [markdown]
# # Lesson 10: comparing strategies, and hybrids
#
# Lessons 04-09 each looked at one way to fine-tune. This one puts them side by side on
# the same task, budget and batches, combines them (hybrids), and asks the question the
# comparison depends on: *how good is the base model?*
#
# What to compare, for each method: the validation metric, the trainable parameters
# (what you store per task and what the optimizer holds), and the wall time. A comparison
# is only as good as its fairness and its noise:
#
# - **each method at its own learning rate.** A prompt needs steps a hundred times larger
#   than full fine-tuning; ranked at one shared rate, methods are ranked by how well that
#   rate suits them. The registry's default rates come from a sweep
#   (`scripts/sweep_lr.py`: three or more values per method, chosen on a run with another
#   seed), recorded in docs/benchmarks.md.
# - **a converged probe as the reference line.** A linear head fitted to its optimum on
#   the frozen features ("probe": L-BFGS, lesson 09) is the best a frozen backbone can
#   give without training anything inside it. A method that trains inside the network
#   and does not clear it has not earned its cost.
# - **noise.** 240 validation rows give an accuracy near 0.85 a standard error of about
#   0.023; two methods scored on the same rows are compared through the per-row
#   differences (`minift.metrics.compare`: a paired bootstrap interval).
#
# `minift demo` runs the whole table; here a smaller one with the demo's budget (160 steps,
# where the curves have flattened), then:
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
import json
import pathlib
import time

import torch

from minift.claims import claim
from minift.data.batching import classification_batch
from minift.data.tasks import DEFAULT_TASK
from minift.data.tokens import corpus_tokens
from minift.metrics import accuracy_se, compare
from minift.model import GPT
from minift.model.heads import pool_hidden
from minift.peft import AdapterConfig, apply_adapters
from minift.peft.core import adapter_layers, adapter_parameters
from minift.peft.methods import METHODS, Method, Preparation, register_method
from minift.peft.unipelt import GatedAdapter, GatedLoRALinear, GatedPrefix
from minift.recipes.demo import PROBE_HEAD_LR
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import base_report, default_recipe, lm_eval_fn, load_base, pretrain
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
    train=train_config(steps=8 if FAST else 160, eval_every=4 if FAST else 40, progress=False)
)
report = base_report()
print(f"base: {base.num_params():,} parameters, {report['tokens_seen']:,} pretraining tokens, pydocs val loss {report['val_loss']:.2f}")  # fmt: skip
print(f"task {task.summary()}; {config.train.steps} steps, batch {config.batch_size}, each method at its swept default learning rate")  # fmt: skip

results = {}


def run(name: str, method: str, on=base, head: str = "words", lr: float | None = None, **options):
    train = dataclasses.replace(config.train, lr=lr)  # None: the method's swept default
    cfg = dataclasses.replace(config, method=method, options=options, head=head, train=train)
    results[name] = r = finetune(task, on, enc, cfg, keep_model=method == "unipelt")
    rate = "fitted" if r.fit else f"lr {r.train.lr:.0e}"
    print(f"{name:26s} trainable {r.trainable:9,} ({r.trainable_percent:6.2f}%)  val accuracy {r.metric:.3f} +- {accuracy_se(r.metric, len(r.val_scores)):.3f}  {rate}  {r.seconds:5.1f}s")  # fmt: skip
    return r


# %% [markdown]
# ## 1. A small comparison
# Full fine-tuning and training from scratch bracket the table; between them the
# converged linear probe (the head alone, fitted), the last block alone and LoRA (r = 8
# on the attention matrices). Lessons 06 and 07 compared the adapter and prefix families.

# %%
for name in ("full", "scratch", "probe", "layerwise", "lora"):
    run(name, name)

# %% [markdown]
# **Starting the head at the probe (LP-FT).** Every run above starts its head from the
# label words' output embeddings: a sensible guess, but far from the head's optimum. The
# first gradients are then large, and they flow into the network as well, moving the
# features the head is about to rely on. Kumar et al. (2022, "Fine-Tuning can Distort
# Pretrained Features and Underperform Out-of-Distribution") fit the linear probe first
# and fine-tune from there (LP-FT): the steps start at the probe's optimum and go to what
# the frozen features lack. `FinetuneConfig(head="probe")` does this, fitting the probe on
# the prepared model's own features. With a better start the best learning rate moves
# too, so each run uses the rate swept for this start (`PROBE_HEAD_LR`, which the demo
# uses: `scripts/sweep_lr.py --head probe`).

# %%
for name in ("full", "lora"):
    run(f"{name} (LP-FT)", name, head="probe", lr=PROBE_HEAD_LR[name])

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
# ## 3. The table, with its noise
# Each method against full fine-tuning and against the probe, on the same 240 rows: the
# difference, its 95% paired-bootstrap interval, and whether that interval holds 0
# ("noise") or not ("real").

# %%
full, probe = results["full"], results["probe"]
print(f"\n{'method':26s} {'trainable':>10s} {'%':>7s} {'time s':>7s} {'val acc':>8s} {'+-se':>6s} {'/ full':>7s}  {'vs full':18s} vs probe")  # fmt: skip
versus = {}
for name, r in results.items():
    versus[name] = {
        ref: compare(name, r.val_scores, ref, results[ref].val_scores) for ref in ("full", "probe") if ref != name
    }  # fmt: skip
    cells = [f"{c.difference:+.3f} ({'noise' if c.within_noise else 'real'})" for c in versus[name].values()]  # fmt: skip
    if name == "full":
        cells = [""] + cells
    print(f"{name:26s} {r.trainable:10,} {r.trainable_percent:7.2f} {r.seconds:7.1f} {r.metric:8.3f} {accuracy_se(r.metric, len(r.val_scores)):6.3f} {r.metric / full.metric:7.0%}  {cells[0]:18s} {cells[1] if len(cells) > 1 else ''}")  # fmt: skip
print(f"chance {1 / task.num_labels:.3f}; (peak memory of each run: the demo's table)")
print(versus["lora"]["full"])
print(versus["lora"]["probe"])

# %% [markdown]
# ## 4. How the base's quality moves the comparison
# Parameter-efficient methods keep the base frozen, so they can only be as good as its
# features. `scripts/bench_base_compute.py` pretrains the same architecture for 0 (random
# weights), 225, 450 ("small"), 900 and 1800 ("base", the one shipped with minift and
# used here) steps of 16 x 128 tokens and fine-tunes each with full fine-tuning, LoRA and
# the probe at the demo's 160 steps, each head started at the probe as in the demo (from
# the label words, `--head words`, the shares were flat and then jumped: 51, 49, 73, 96
# and 97%; docs/benchmarks.md). That takes a few minutes, so the lesson reads its
# stored results (docs/results/base_compute.json; rerun the script to reproduce them).
#
# Two things about each base can be measured in seconds, here, for a random base, a
# base pretrained for 30 steps and the shipped base:
# - its language-model loss on the same validation windows of pydocs;
# - how much its features vary from text to text: the *effective rank* (Roy and Vetterli
#   2007) of the centred last-token features of the validation texts, exp of the entropy
#   of their normalised squared singular values. 1 means every text maps to the same
#   direction; C means the features spread over all C dimensions alike. A frozen
#   backbone can only give a head what varies here.

# %%
SHORT = 10 if FAST else 30
recipe = default_recipe()
short_recipe = dataclasses.replace(recipe, steps=SHORT, warmup_steps=max(1, SHORT // 6), eval_batches=2)  # fmt: skip
t0 = time.perf_counter()
short_base, _ = pretrain(short_recipe, enc, progress=False)
print(f"pretrained a base for {SHORT} steps (the shipped base had {report['recipe']['steps']}) in {time.perf_counter() - t0:.1f}s")  # fmt: skip
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


quality = {}
for label, model in (("random", random_base), (f"{SHORT} steps", short_base), ("shipped", base)):
    with torch.no_grad():
        quality[label] = (lm_loss_of(model)["val_loss"], effective_rank(model))
    print(f"{label:>10s} base: pydocs val loss {quality[label][0]:.3f}, effective rank of its features {quality[label][1]:.1f} (of {base.config.n_embd})")  # fmt: skip

STORED = pathlib.Path(__file__).resolve().parent.parent / "docs" / "results" / "base_compute.json"
stored = json.loads(STORED.read_text())
rows = sorted(stored["rows"], key=lambda r: r["pretrain_steps"])  # from random weights up
print(f"\nstored results ({STORED.name}, {stored['finetune_steps']} fine-tuning steps, LoRA {stored['lora']}):")  # fmt: skip
print(f"{'pretraining steps':>17s} {'6ND FLOPs':>10s} {'LM val loss':>11s} {'full':>13s} {'LoRA':>13s} {'probe':>13s} {'LoRA/full':>9s}")  # fmt: skip
for row in rows:
    cells = " ".join(f"{row[m]:6.3f}+-{row[m + '_se']:.3f}" for m in ("full", "lora", "probe"))
    print(f"{row['pretrain_steps']:17d} {row['pretrain_flops']:10.1e} {row['base_val_loss']:11.3f} {cells} {row['lora_share']:9.0%}")  # fmt: skip

# %% [markdown]
# ## 5. Plots

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
main = dict(results)
chance = 1 / task.num_labels
for i, (name, r) in enumerate(main.items()):
    ax1.errorbar(r.trainable, r.metric, yerr=accuracy_se(r.metric, len(r.val_scores)), fmt="o", capsize=3)  # fmt: skip
    ax1.annotate(name, (r.trainable, r.metric), fontsize=8, textcoords="offset points", xytext=(4, 4 if i % 2 else -10))  # fmt: skip
ax1.set_xscale("log")
ax1.set_ylim(0, 1)
ax1.axhline(probe.metric, color="C3", ls="--", lw=1, label="converged probe")
ax1.axhline(chance, color="gray", ls=":", label="chance")
ax1.set(xlabel="trainable parameters", ylabel="validation accuracy", title=f"{task.name}, {config.train.steps} steps each")  # fmt: skip
ax1.legend(fontsize=8, loc="lower right")
names = list(main)
ax2.barh(names, [main[n].seconds for n in names], color="C1")
ax2.set(xlabel="wall time (s)", title="time per run (this machine, shared)")
x = [max(r["pretrain_flops"], 1e12) for r in rows]  # random weights drawn at the left edge
for key, style in (("full", "o-"), ("lora", "s-"), ("probe", "^:")):
    ax3.errorbar(x, [r[key] for r in rows], yerr=[r[key + "_se"] for r in rows], fmt=style, capsize=3, label=key)  # fmt: skip
ax3.axhline(chance, color="gray", ls=":", label="chance")
ax3.set_xscale("log")
ax3.set_ylim(0, 1)
ax3.set(xlabel="base's pretraining compute, 6ND FLOPs (log)", ylabel="validation accuracy (+- 1 s.e.)", title=f"the base's pretraining ({stored['finetune_steps']} fine-tuning steps)")  # fmt: skip
ax3.legend(fontsize=8, loc="lower right")
fig.tight_layout()
fig.savefig(OUT / "strategies.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'strategies.png'}")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## 6. What the numbers say
# Computed from this run and the stored sweep over bases. Claims marked "holds here" /
# "does not hold here" are what the literature reports at scale (Hu et al. 2021: LoRA
# matching full fine-tuning on GPT-3 175B and RoBERTa; Lester et al. 2021: prompt tuning
# reaching full fine-tuning only near 10B parameters): whether a 1.3M-parameter base
# shows them is the measurement, not an assumption.

# %%
lora, scratch, hybrid = results["lora"], results["scratch"], results["lora + prefix"]
step0 = {name: r.history[0]["val_accuracy"] for name, r in results.items()}
prefix_params = L * 2 * METHODS["hybrid"].option_defaults()["prefix_tokens"] * base.config.n_embd
claim("LoRA starts exactly where full fine-tuning starts (B = 0 at initialisation)", step0["lora"] == step0["full"], f"step-0 accuracy {step0['lora']:.3f} and {step0['full']:.3f}")  # fmt: skip
claim("the LoRA + prefix hybrid trains the union of the two methods' parameters", hybrid.trainable == lora.trainable + prefix_params, f"{hybrid.trainable:,} = {lora.trainable:,} + {prefix_params:,}")  # fmt: skip
claim("the probe is fitted, not trained: one closed-form fit that lowers the validation loss", [h["step"] for h in probe.history] == [0, 1] and probe.history[1]["val_loss"] < probe.history[0]["val_loss"], f"val loss {probe.history[0]['val_loss']:.3f} -> {probe.history[1]['val_loss']:.3f}, l2 {probe.fit['l2']:g} by cross-validation")  # fmt: skip
full_vs_scratch = compare("full", full.val_scores, "scratch", scratch.val_scores)
claim("fine-tuning the pretrained base beats training the same model from scratch", full_vs_scratch.difference > 0 and not full_vs_scratch.within_noise, str(full_vs_scratch), at_scale=True)  # fmt: skip
claim(f"LoRA r=8 reaches 95% of full fine-tuning's accuracy in {config.train.steps} steps with <= 2% of the parameters", lora.metric >= 0.95 * full.metric and lora.trainable_percent <= 2, f"{lora.metric / full.metric:.0%} with {lora.trainable_percent:.2f}%", at_scale=True)  # fmt: skip
claim("LoRA clears the converged probe", versus["lora"]["probe"].difference > 0 and not versus["lora"]["probe"].within_noise, str(versus["lora"]["probe"]), at_scale=True)  # fmt: skip
claim("LP-FT starts where the converged probe ends (LoRA's B = 0 leaves the features as they were)", results["lora (LP-FT)"].history[0]["val_accuracy"] == probe.metric, f"step-0 accuracy {results['lora (LP-FT)'].history[0]['val_accuracy']:.3f}, probe {probe.metric:.3f}")  # fmt: skip
for name in ("full", "lora"):
    lpft = compare(f"{name} (LP-FT)", results[f"{name} (LP-FT)"].val_scores, name, results[name].val_scores)  # fmt: skip
    claim(f"starting the head at the probe (LP-FT) makes {name} more accurate than the label-word start", lpft.difference > 0 and not lpft.within_noise, str(lpft), at_scale=True)  # fmt: skip
shares = [r["lora_share"] for r in rows]
claim("LoRA's share of full fine-tuning grows with the base's pretraining (stored sweep)", shares[-1] > shares[0], " -> ".join(f"{x:.0%}" for x in shares) + f" over {rows[0]['pretrain_steps']}..{rows[-1]['pretrain_steps']} steps", at_scale=True)  # fmt: skip
claim(f"on the shipped base, LoRA reaches 95% of full at {stored['finetune_steps']} steps (stored sweep)", rows[-1]["lora_share"] >= 0.95, f"{rows[-1]['lora']:.3f} / {rows[-1]['full']:.3f} = {rows[-1]['lora_share']:.0%}; {rows[-1]['lora_vs_full']}", at_scale=True)  # fmt: skip

# %% [markdown]
# Why the answers above can differ between a laptop and the papers: a frozen base gives
# a parameter-efficient method only the directions its features already vary in (the
# effective ranks printed in section 4), and a rank-8 update can only steer those. The
# stored sweep shows how much of full fine-tuning LoRA recovers as the same 1.3M-parameter
# model is pretrained longer. This lesson and the demo train the same 160 steps with the
# same seeds: the LP-FT rows here are the demo's runs (`minift demo` starts every head at
# the probe), the others are those of `minift demo --head words`.

# %% [markdown]
# ## Exercises
# 1. Add IA3, prefix and prompt tuning to section 1 (`run("ia3", "ia3")`, ...). Which
#    family does best per trainable parameter on this base?
# 2. Run every method at *full fine-tuning's* learning rate instead of its own
#    (`train_config(lr=1e-3)`). How does the order of the table change? This is the
#    unfair comparison the swept defaults avoid.
# 3. `python scripts/bench_base_compute.py --steps 0,1800,3600` adds a base pretrained
#    for twice the shipped one's steps (about 15 minutes). Does the LoRA / full ratio keep
#    moving, or has it saturated?
# 4. In the adapter + block hybrid, train the block at the adapters' rate too (one group).
#    Does the separate rate matter?
