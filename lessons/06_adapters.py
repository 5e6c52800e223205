# %% [markdown]
# # Lesson 06: bottleneck adapters
#
# Full fine-tuning (lesson 04) moves every weight. An *adapter* leaves the pretrained
# weights exactly as they are and inserts a small trainable module into each block
# (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"):
#
#     A(h) = W_up f(W_down h + b_down) + b_up,     W_down: m x C,   W_up: C x m,   m = C / rf
#
# a *bottleneck*: down to m dimensions, a non-linearity f, back up to C. The reduction
# factor rf sets the size: each adapter has about 2 C m = 2 C^2 / rf parameters. Three
# places to put it, three papers:
#
# | layout   | where                                                 | paper                 |
# |----------|-------------------------------------------------------|-----------------------|
# | houlsby  | after attention's and after the MLP's output: h + A(h) | Houlsby et al. 2019   |
# | pfeiffer | after the MLP only: half the adapters                  | Pfeiffer et al. 2020  |
# | parallel | beside the MLP, reading its input: MLP(x) + s A(x)     | He et al. 2022        |
#
# The code is `minift/peft/adapters.py`; this lesson checks what it claims, then fine-tunes
# each layout on the default task.

# %%
import copy
import dataclasses
import time

import torch

from minift.claims import claim
from minift.data.tasks import DEFAULT_TASK
from minift.metrics import accuracy_se, compare
from minift.model.heads import SequenceClassifier
from minift.peft import trainable_report
from minift.peft.adapters import AdapterConfig, Bottleneck, apply_adapters
from minift.peft.methods import METHODS
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "06")
print(f"fast mode: {FAST}")
base, enc = load_base()
C = base.config.n_embd
print(f"base model: {base.num_params():,} parameters, width C = {C}, {base.config.n_layer} blocks")

# %% [markdown]
# ## 1. The bottleneck, and why it starts as the identity
# W_up and b_up start at zero, so A(h) = 0 and the residual form h + A(h) returns h
# exactly: an adapted model *is* the base model until training moves W_up. A consequence
# worth seeing: at the first step only W_up gets a gradient. The gradient that reaches
# W_down passes through W_up, which is zero; W_down starts learning at the second step.

# %%
torch.manual_seed(0)
adapter = Bottleneck(C, reduction_factor=16, non_linearity="relu", like=base.lm_head.weight)
h = torch.randn(4, 10, C)
print(f"bottleneck {C} -> {C // 16} -> {C}: {sum(p.numel() for p in adapter.parameters()):,} parameters")  # fmt: skip
init_zero = torch.equal(adapter(h), torch.zeros_like(h))
print(f"A(h) at init is zero: {init_zero}")
(h + adapter(h)).pow(2).mean().backward()
for name, p in adapter.named_parameters():
    print(f"  grad of {name:12s} at step 1: norm {p.grad.norm():.2e}")

# %% [markdown]
# ## 2. Where each layout puts its adapters
# `apply_adapters` wraps the targeted modules in place and freezes everything else; only
# the adapters and the task head train. Each adapted classifier gives exactly the base
# classifier's scores before training.

# %%
task = get_task(DEFAULT_TASK, seed=0)
torch.manual_seed(0)
reference = SequenceClassifier(copy.deepcopy(base), task.num_labels).eval()
idx = torch.tensor([enc.encode_ordinary(task.val[0]["text"])[:32]])
LAYOUTS = ["houlsby", "pfeiffer", "parallel"]
LAYOUT_PLACES, equal_at_init = {}, {}
for layout in LAYOUTS:
    model = apply_adapters(copy.deepcopy(reference), AdapterConfig(layout=layout))
    block = model.backbone.transformer.h[0]
    places = [n for n, m in block.named_modules() if type(m).__name__ in ("SerialAdapter", "ParallelAdapter")]  # fmt: skip
    same = equal_at_init[layout] = torch.equal(model(idx).logits, reference(idx).logits)
    LAYOUT_PLACES[layout] = places
    r = trainable_report(model)
    print(f"{layout:9s} adapters in block 0 at {places}; trainable {r['trainable']:,} ({r['percent']:.2f}%); equal to the base at init: {same}")  # fmt: skip
print("\nblock 0 with the parallel adapter:\n", model.backbone.transformer.h[0].mlp)

# %% [markdown]
# ## 3. Fine-tune each layout
# `minift.recipes.finetune` knows methods by name (the registry in `minift.peft.methods`);
# method "adapter" takes AdapterConfig's fields as options, so `options={"layout":
# "pfeiffer"}` picks the layout. He et al. scale the parallel adapter by s = 4.
#
# The registry's learning rate for "adapter" (`METHODS["adapter"].lr`) was set for its
# default layout, Houlsby's; the other layouts may want another. So each layout runs at
# three rates, 1/3, 1 and 3 times the registry's, with the same steps and batches, and is
# judged at its best (picked on the validation rows it is scored on, which flatters every
# layout alike).
#
# The yardstick is the converged *linear probe* (`method="probe"`): the head alone, fitted
# to convergence on the frozen features. What the adapters add beyond it is what changing
# the features buys.

# %%
config = FinetuneConfig(
    train=train_config(steps=12 if FAST else 60, eval_every=6 if FAST else 15, progress=False)
)
OPTIONS = {"houlsby": {}, "pfeiffer": {}, "parallel": {"scaling": 4.0}}
LR_FACTORS = (1 / 3, 1, 3)
probe = finetune(task, base, enc, dataclasses.replace(config, method="probe"))
print(f"linear probe      {probe.seconds:5.1f}s  val accuracy {probe.metric:.3f} (l2 {probe.fit['l2']:g}, chosen by cross-validation)")  # fmt: skip


def adapter_run(layout: str, lr: float, **options):
    run = dataclasses.replace(
        config,
        method="adapter",
        options={"layout": layout, **OPTIONS[layout], **options},
        train=dataclasses.replace(config.train, lr=lr),
    )
    return finetune(task, base, enc, run)


runs, results, best_lr = {}, {}, {}
for layout in LAYOUTS:
    for factor in LR_FACTORS:
        lr = METHODS["adapter"].lr * factor
        runs[layout, lr] = r = adapter_run(layout, lr)
        print(f"{layout:9s} lr {lr:.1e}: {r.seconds:5.1f}s  val accuracy {r.metric:.3f}")
    lrs = sorted(lr for (lay, lr) in runs if lay == layout)
    best_lr[layout] = max(lrs, key=lambda lr: runs[layout, lr].metric)
    results[layout] = runs[layout, best_lr[layout]]
    edge = " (at the edge of the grid)" if best_lr[layout] in (lrs[0], lrs[-1]) else ""
    print(f"  -> {layout}: best lr {best_lr[layout]:.1e}{edge}")

# %% [markdown]
# ## 4. How small can the bottleneck be?
# The reduction factor trades parameters for capacity. Pfeiffer adapters with rf from 4
# (m = C/4) to 64 (m = 2 in the default model; 16 in fast mode), all at the rate that was best for
# rf = 16 above: not tuned per size, so a size that wants another rate is at a
# disadvantage.

# %%
FACTORS = [4, 16] if FAST else [4, 16, 64]
sweep = {16: results["pfeiffer"]}
for rf in FACTORS:
    if rf not in sweep:
        sweep[rf] = adapter_run("pfeiffer", best_lr["pfeiffer"], reduction_factor=rf)
    print(f"rf {rf:3d} (m = {C // rf:3d}): trainable {sweep[rf].trainable:7,}, val accuracy {sweep[rf].metric:.3f}")  # fmt: skip

# %%
n_val = len(task.val)
print(
    f"\n{'method':18s} {'lr':>8s} {'trainable':>10s} {'%':>7s} {'val acc':>8s} {'+-SE':>6s} {'val loss':>9s} {'time s':>7s}"
)  # fmt: skip
for name, r in {"probe": probe, **results}.items():
    lr = f"{best_lr[name]:.1e}" if name in best_lr else "L-BFGS"
    print(f"{name:18s} {lr:>8s} {r.trainable:10,} {r.trainable_percent:7.3f} {r.metric:8.3f} {accuracy_se(r.metric, n_val):6.3f} {r.val_loss:9.3f} {r.seconds:7.1f}")  # fmt: skip
print(f"chance: {1 / task.num_labels:.3f}; SE: one standard error of the accuracy on {n_val} rows")
comparisons = {
    "pfeiffer_vs_houlsby": compare(
        "pfeiffer", results["pfeiffer"].val_scores, "houlsby", results["houlsby"].val_scores
    ),  # fmt: skip
    "parallel_vs_pfeiffer": compare(
        "parallel", results["parallel"].val_scores, "pfeiffer", results["pfeiffer"].val_scores
    ),  # fmt: skip
    "rf": compare(
        f"rf {max(FACTORS)}", sweep[max(FACTORS)].val_scores, "rf 4", sweep[4].val_scores
    ),  # fmt: skip
}
best_layout = max(LAYOUTS, key=lambda lay: results[lay].metric)
comparisons["adapter_vs_probe"] = compare(f"best adapter ({best_layout})", results[best_layout].val_scores, "probe", probe.val_scores)  # fmt: skip
for c in comparisons.values():
    print(c)

# %% [markdown]
# ## 5. Plots: the curves, the layouts side by side, and the bottleneck size

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5.2), layout="constrained")
for layout, r in results.items():
    acc = [(h["step"], h["val_accuracy"]) for h in r.history if "val_accuracy" in h]
    ax1.plot(*zip(*acc), "o-", label=f"{layout}, lr {best_lr[layout]:.0e} ({r.trainable:,} params)")  # fmt: skip
ax1.axhline(probe.metric, color="C3", ls="-.", label=f"converged probe ({probe.trainable:,} params)")  # fmt: skip
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set(xlabel="step", ylabel="validation accuracy", title=f"{task.name}: each layout at its best lr", ylim=(0, 1))  # fmt: skip
names = ["probe", *LAYOUTS]
accs = [probe.metric] + [results[lay].metric for lay in LAYOUTS]
ax2.bar(range(len(names)), accs, yerr=[accuracy_se(a, n_val) for a in accs], capsize=4, color=["C3", "C0", "C1", "C2"])  # fmt: skip
ax2.set_xticks(range(len(names)), names)
ax2.set(ylabel=f"validation accuracy ({n_val} rows)", title="after training (error bars: 1 SE)", ylim=(0, 1))  # fmt: skip
rfs = sorted(sweep)
ax3.errorbar(rfs, [sweep[rf].metric for rf in rfs], yerr=[accuracy_se(sweep[rf].metric, n_val) for rf in rfs], fmt="o-", capsize=4, color="C1")  # fmt: skip
for rf in rfs:
    ax3.annotate(f"{sweep[rf].trainable:,} params", (rf, sweep[rf].metric), fontsize=8,
                 textcoords="offset points", xytext=(4, -14))  # fmt: skip
ax3.set_xscale("log", base=2)
ax3.set_xticks(rfs, [str(rf) for rf in rfs])
ax3.set(xlabel="reduction factor rf (m = C / rf)", ylabel="validation accuracy", title="Pfeiffer adapters: bottleneck size", ylim=(0, 1))  # fmt: skip
ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)
fig.savefig(OUT / "adapters.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'adapters.png'}")

# %% [markdown]
# ## What the numbers say
# Computed from this run. The claims are identities of the construction and hold on any
# base. The scale claims are what the papers report on large models (Houlsby et al. 2019
# and Pfeiffer et al. 2020 on BERT, He et al. 2022 on BERT- and BART-sized models), which
# a 1.3M-parameter base fine-tuned for a minute may or may not show.


# %%


grads = {name: p.grad.norm().item() for name, p in adapter.named_parameters()}
claim(
    "a bottleneck starts as the identity (A(h) = 0), and at the first step only W_up and b_up get a gradient",  # fmt: skip
    init_zero and grads["down.weight"] == grads["down.bias"] == 0 and grads["up.weight"] > 0,
    ", ".join(f"|grad {k}| {v:.1e}" for k, v in grads.items()),
)
claim(
    "every layout gives exactly the base classifier's scores before training",
    all(equal_at_init.values()),
)
per_adapter = 2 * C * (C // 16) + C // 16 + C  # W_down, W_up, b_down, b_up
head = C * task.num_labels + task.num_labels
counts_ok = all(
    results[lay].trainable == len(LAYOUT_PLACES[lay]) * base.config.n_layer * per_adapter + head
    for lay in LAYOUTS
)
claim(
    f"trainable parameters = adapters x (2 C m + m + C) + the head, with m = C / 16 = {C // 16}",
    counts_ok,
    ", ".join(f"{lay} {results[lay].trainable:,}" for lay in LAYOUTS),
)
c = comparisons["adapter_vs_probe"]
claim(
    "the best adapter layout beats the converged linear probe: changing the features adds to what the head alone reads",  # fmt: skip
    not c.within_noise and c.difference > 0,
    str(c),
    at_scale=True,
)
c = comparisons["pfeiffer_vs_houlsby"]
claim(
    "one adapter per block (Pfeiffer) does as well as two (Houlsby) with half the adapter parameters: within noise or better (Pfeiffer et al. 2020)",  # fmt: skip
    c.within_noise or c.difference > 0,
    str(c),
    at_scale=True,
)
c = comparisons["parallel_vs_pfeiffer"]
claim(
    "the parallel adapter (s = 4) beats the serial one at the same place and size (He et al. 2022)",
    not c.within_noise and c.difference > 0,
    str(c),
    at_scale=True,
)
c = comparisons["rf"]
claim(
    f"a tiny bottleneck suffices: rf {max(FACTORS)} ({sweep[max(FACTORS)].trainable:,} trainable) is within noise of rf 4 ({sweep[4].trainable:,}) or better",  # fmt: skip
    c.within_noise or c.difference > 0,
    str(c),
    at_scale=True,
)
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Train the Houlsby adapters with `non_linearity="gelu"`, and the parallel adapter with
#    s = 1 instead of 4. Which choice matters more on this task?
# 2. Stack a Pfeiffer adapter and LoRA (`minift.peft.apply_lora`) on one model. Do their
#    gains add up? (Both train at once; `minift.peft.disable_adapters` switches both off.)
# 3. Add `trainable_extra=["head", "transformer.h.3"]` to the AdapterConfig: adapters plus
#    an unfrozen last block. How many more parameters, and how much more accuracy?
# 4. Save only the adapters with `minift.peft.save_adapter` and look at the file size next
#    to `base.save(...)`.
