# %% [markdown]
# # Lesson 19: multi-task learning
#
# One model, several tasks at once. The tasks here share their input, the summary line of
# a standard-library docstring, and ask different questions about it, each answered
# exactly by the source code (`minift/data/docstring_tasks.py`): which package it comes
# from (`stdlib-package`), what it documents (`doc-kind`), and how many parameters the
# function takes (`doc-argcount`, the small task: 100 training rows).
#
# - **Hard parameter sharing** (Caruana 1997): one backbone, one head per task
#   (`minift.multitask.model`). Every task's gradient moves the shared blocks: tasks can
#   help each other (transfer) or pull the weights apart (interference).
# - **Task mixing** (Raffel et al. 2020, T5): which task trains at each step. Examples-
#   proportional mixing lets the big tasks drown the small one; temperature scaling,
#   rate_i proportional to min(n_i, K)^(1/T), moves towards equal mixing as T grows
#   (`minift.multitask.sampling`).
# - **Instruction style** (T0, Sanh et al. 2022; FLAN, Wei et al. 2022): no heads at all;
#   every task is a prompt ending in its template, answered by a label word through the
#   language-model head (`minift.multitask.instruction`).
# - **Uncertainty weighting** (Kendall et al. 2018): each task's loss weighted by a learned
#   exp(-s_i) / 2, plus s_i / 2 (`minift.multitask.weighting`).
# - **AdapterFusion** (Pfeiffer et al. 2021): no shared training at all; one adapter per
#   source task, each trained alone, then for a target task a small attention layer that
#   reads, per token and per block, a mix of the frozen adapters (`minift.multitask.fusion`).
#
# What transfers here and what interferes is measured below, not assumed: the closing
# cell says which comparisons this run can tell apart from noise.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from minift.claims import claim
from minift.metrics import accuracy_se, compare
from minift.multitask import TaskSampler, mixing_rates
from minift.peft.methods import METHODS
from minift.recipes.finetune import FinetuneConfig, finetune
from minift.recipes.multitask import (
    MultitaskConfig,
    load_tasks,
    run_adapter_fusion,
    run_multitask,
    train_config,
)
from minift.recipes.pretrain import load_base
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "19")
base, enc = load_base()
tasks = load_tasks("stdlib-package,doc-kind,doc-argcount")
names = [t.name for t in tasks]
SMALL = "doc-argcount"
STEPS = 8 if FAST else 30  # per task; a joint run gets len(tasks) times as many
for t in tasks:
    print(t.summary(), "|", t.description)
    print("   e.g.", repr(t.train[0]["text"]), "->", t.labels[t.train[0]["label"]])

# %% [markdown]
# ## 1. Mixing rates
# The three tasks have different sizes. Proportional mixing gives each task its share of
# the examples; temperature T flattens the shares, and a cap K counts a task as at most K
# examples. The sampler draws the task of each step from (seed, step), so its long-run
# counts should sit within a few binomial standard deviations of the rates.

# %%
sizes = [len(t.train) for t in tasks]
temps = [1, 1.5, 2, 3, 5, 10, 100]
rates = np.array([mixing_rates(sizes, "temperature", t) for t in temps])
for t, r in zip(temps, rates):
    print(f"T={t:<5g} " + "  ".join(f"{n} {x:.3f}" for n, x in zip(names, r)))
print("cap K=150, T=1:", [round(x, 3) for x in mixing_rates(sizes, "temperature", 1.0, cap=150)])
N_DRAWS = 4000
sampler = TaskSampler(sizes, "temperature", temperature=2.0, seed=0)
counts = sampler.counts(N_DRAWS)
z = [(c - N_DRAWS * r) / np.sqrt(N_DRAWS * r * (1 - r)) for c, r in zip(counts, sampler.rates)]
print(f"T=2 over {N_DRAWS} steps: counts {counts}, expected {[round(N_DRAWS * r) for r in sampler.rates]}, z {[round(x, 2) for x in z]}")  # fmt: skip

# %% [markdown]
# ## 2. Alone or together, at equal total steps
# Each task alone gets STEPS steps; the joint model gets 3 x STEPS steps, so every task
# sees about STEPS batches on average (equal mixing) while sharing the backbone. Same
# base, learning rate (full fine-tuning's registered rate) and batch size.


# %%
def run(task_list, steps, **changes):
    config = MultitaskConfig(train=train_config(steps=steps, progress=False), **changes)
    return run_multitask(task_list, base, enc, config)


alone = {t.name: run([t], STEPS) for t in tasks}
together = run(tasks, STEPS * len(tasks), sampling="equal")
for n in names:
    a, j = alone[n].metrics[n], together.metrics[n]
    m = len(alone[n].val_scores[n])
    print(f"{n:15s} alone {a:.3f} ± {accuracy_se(a, m):.3f}   together {j:.3f} ± {accuracy_se(j, m):.3f}   ({m} val rows)")  # fmt: skip
transfer = {n: compare(f"{n} together", together.val_scores[n], f"{n} alone", alone[n].val_scores[n]) for n in names}  # fmt: skip
for c in transfer.values():
    print(c)

# %% [markdown]
# ## 3. The small task against the temperature
# Proportional mixing (T = 1) gives the 100-row task few steps; raising T gives it more,
# at the expense of the others. Same total steps for every T.

# %%
T_SWEEP = [1.0, 4.0]
by_t = {t: run(tasks, STEPS * len(tasks), sampling="temperature", temperature=t) for t in T_SWEEP}
for t, r in by_t.items():
    print(f"T={t:g}: steps per task {dict(zip(names, r.steps_per_task))}, accuracy " + ", ".join(f"{n} {r.metrics[n]:.3f}" for n in names))  # fmt: skip

# %% [markdown]
# ## 4. Heads or instruction style, and learned loss weights
# The instruction-style model has no task heads: the label words are read off the
# language-model head after each task's template. Uncertainty weighting learns one
# number per task; with a learning rate meant for the weights of a network and this few
# steps, expect the learned weights to move little from 0.5.

# %%
instruction = run(tasks, STEPS * len(tasks), sampling="equal", style="instruction")
uncertain = run(tasks, STEPS * len(tasks), sampling="equal", weighting="uncertainty")
style = {n: compare(f"{n} instruction", instruction.val_scores[n], f"{n} heads", together.val_scores[n]) for n in names}  # fmt: skip
for c in style.values():
    print(c)
print(
    "learned loss weights exp(-s)/2:", {n: round(w, 4) for n, w in uncertain.loss_weights.items()}
)

# %% [markdown]
# ## 5. AdapterFusion: composing adapters trained apart
# An adapter for `stdlib-package` and one for `doc-kind`, each trained alone; then, for the
# small task, a fusion layer over the two (both frozen) with a new head. Against it: one
# adapter trained on the small task directly, for the same number of steps and at the
# adapters' registered learning rate. The fusion's attention says which source adapter the
# small task reads in each block.

# %%
adapter_train = train_config(steps=STEPS, progress=False, lr=METHODS["adapter"].lr)
sources, target = tasks[:2], tasks[2]
fused = run_adapter_fusion(sources, target, base, enc, train=adapter_train, source_train=adapter_train)  # fmt: skip
one_adapter = finetune(target, base, enc, FinetuneConfig(method="adapter", options={"layout": "pfeiffer"}, train=adapter_train))  # fmt: skip
for name, m in fused.source_metrics.items():
    print(f"adapter {name:15s} accuracy {m:.3f} on its own task")
print(f"{SMALL}: fusion {fused.metric:.3f} ({fused.trainable} trainable), one adapter {one_adapter.metric:.3f} ({one_adapter.trainable} trainable)")  # fmt: skip
attention = np.array(list(fused.weights.values()))  # sites x sources
for site, w in fused.weights.items():
    print(f"  {site}: " + ", ".join(f"{n} {x:.2f}" for n, x in zip(fused.sources, w)))
c_fusion = compare(f"{SMALL} fusion", fused.val_scores, f"{SMALL} one adapter", one_adapter.val_scores)  # fmt: skip
print(c_fusion)

# %%
fig, axes = plt.subplots(1, 4, figsize=(21, 4.4))
ax = axes[0]
for i, n in enumerate(names):
    ax.plot(temps, rates[:, i], marker="o", label=f"{n} ({sizes[i]} rows)")
ax.axhline(1 / len(names), color="grey", ls=":", label="equal")
ax.set(
    xscale="log", xlabel="temperature T", ylabel="share of steps", ylim=(0, 1), title="mixing rates"
)
ax.legend(fontsize=8)
ax = axes[1]
x = np.arange(len(names))
for k, (label, res) in enumerate((("alone", alone), ("together", None), ("instruction", None))):
    vals = [res[n].metrics[n] for n in names] if res is not None else [(together if label == "together" else instruction).metrics[n] for n in names]  # fmt: skip
    errs = [accuracy_se(v, len(tasks[i].val)) for i, v in enumerate(vals)]
    ax.bar(x + (k - 1) * 0.27, vals, 0.27, yerr=errs, capsize=3, label=label)
ax.axhline(0, color="black", lw=0.5)
ax.set(xticks=x, xticklabels=names, ylim=(0, 1), ylabel="val accuracy (± 1 SE)", title=f"alone vs together ({STEPS} steps a task)")  # fmt: skip
ax.legend(fontsize=8)
ax = axes[2]
small_acc = [by_t[t].metrics[SMALL] for t in T_SWEEP]
ax.errorbar(T_SWEEP, small_acc, yerr=[accuracy_se(a, len(tasks[2].val)) for a in small_acc], marker="o", capsize=3)  # fmt: skip
ax.axhline(1 / len(tasks[2].labels), color="grey", ls=":", label="chance")
ax.set(xlabel="temperature T", ylabel=f"{SMALL} val accuracy (± 1 SE)", ylim=(0, 1), title="the small task against T")  # fmt: skip
ax.legend(fontsize=8)
ax = axes[3]
bottom = np.zeros(len(attention))
for i, n in enumerate(fused.sources):
    ax.bar(np.arange(len(attention)), attention[:, i], bottom=bottom, label=f"adapter {n}")
    bottom += attention[:, i]
ax.set(xticks=np.arange(len(attention)), xlabel="block", ylabel="mean fusion attention", ylim=(0, 1), title=f"AdapterFusion for {SMALL}")  # fmt: skip
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "multitask.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'multitask.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims are how the sampler is built and hold on any base. The rest are what
# the literature reports for large models (T5's temperature mixing helps small tasks;
# related tasks transfer); on this small base and few steps they may not show, and
# "within noise" means this run cannot tell the two apart.

# %%
claim("T = 1 temperature mixing is examples-proportional, and T = 100 is within 0.01 of equal mixing", np.allclose(rates[0], np.array(sizes) / sum(sizes)) and np.allclose(rates[-1], 1 / len(names), atol=0.01), f"T=100 rates {np.round(rates[-1], 3).tolist()}")  # fmt: skip
claim("raising T gives the small task a larger share of the steps", all(np.diff(rates[:, names.index(SMALL)]) > 0), f"{rates[0, 2]:.3f} at T=1 -> {rates[-1, 2]:.3f} at T=100")  # fmt: skip
claim(f"the sampler's counts over {N_DRAWS} steps are within 4 binomial SDs of its rates", max(abs(v) for v in z) < 4, f"largest |z| {max(abs(v) for v in z):.2f}")  # fmt: skip
claim("the joint run drew every task at equal mixing exactly equally often", len(set(together.steps_per_task)) == 1, str(together.steps_per_task))  # fmt: skip
c_small = compare(f"T={T_SWEEP[-1]:g}", by_t[T_SWEEP[-1]].val_scores[SMALL], "T=1", by_t[1.0].val_scores[SMALL])  # fmt: skip
claim(f"a higher temperature helps the small task {SMALL} (T5, Raffel et al. 2020)", c_small.difference > 0 and not c_small.within_noise, str(c_small), at_scale=True)  # fmt: skip
for n in names:
    c = transfer[n]
    claim(f"{n} gains from sharing the backbone with the other tasks (positive transfer)", c.difference > 0 and not c.within_noise, str(c), at_scale=True)  # fmt: skip
n_fusion = base.config.n_layer * (3 * base.config.n_embd**2 + base.config.n_embd) + (base.config.n_embd + 1) * target.num_labels  # fmt: skip
claim("the fusion stage trains only W_Q, b_Q, W_K, W_V per block and the new head (the adapters stay frozen)", fused.trainable == n_fusion, f"{fused.trainable} trainable, formula {n_fusion}")  # fmt: skip
claim(f"AdapterFusion over other tasks' adapters beats one adapter trained on {SMALL} alone (Pfeiffer et al. 2021)", c_fusion.difference > 0 and not c_fusion.within_noise, str(c_fusion), at_scale=True)  # fmt: skip
claim("phrasing every task as a prompt for one LM head matches a head per task (within noise) or beats it", all(s.within_noise or s.difference > 0 for s in style.values()), "; ".join(str(s) for s in style.values()), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Add `doc-returns` to the suite. Does a fourth task that also reads the function's
#    code (it returns a value or not) help `doc-argcount`, or interfere?
# 2. Find a task pair that interferes: train every pair together and compare each task
#    with its alone run (`scripts/bench_multitask.py` does this for several seeds).
# 3. Set a cap K = 100 with T = 1 (`cap=100`): how do the shares change, and why does the
#    cap matter most when one task is huge?
# 4. Give the uncertainty weights their own, larger learning rate (a param group): do they
#    then separate the tasks, and is the noisy one the one weighted down?
# 5. Add the generation task `doc-name` to the instruction-style run: all four tasks then
#    share every parameter. What happens to its exact match?
# 6. Train the fusion with `fusion_reg=1.0` (the ||I - W_V||^2 penalty; `minift fusion
#    --fusion-reg 1`): does holding W_V near the identity change the attention, or the
#    accuracy? Then fuse an adapter of the target task itself with the others: does the
#    fusion learn to read mostly that one?
