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

from minift.data.tasks import DEFAULT_TASK
from minift.model.heads import SequenceClassifier
from minift.peft import trainable_report
from minift.peft.adapters import AdapterConfig, Bottleneck, apply_adapters
from minift.peft.methods import Method, NoOptions, register_method
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
print(f"A(h) at init is zero: {torch.equal(adapter(h), torch.zeros_like(h))}")
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
for layout in LAYOUTS:
    model = apply_adapters(copy.deepcopy(reference), AdapterConfig(layout=layout))
    block = model.backbone.transformer.h[0]
    places = [n for n, m in block.named_modules() if type(m).__name__ in ("SerialAdapter", "ParallelAdapter")]  # fmt: skip
    same = torch.equal(model(idx).logits, reference(idx).logits)
    r = trainable_report(model)
    print(f"{layout:9s} adapters in block 0 at {places}; trainable {r['trainable']:,} ({r['percent']:.2f}%); equal to the base at init: {same}")  # fmt: skip
print("\nblock 0 with the parallel adapter:\n", model.backbone.transformer.h[0].mlp)

# %% [markdown]
# ## 3. Fine-tune each layout
# `minift.recipes.finetune` knows methods by name (the table in `minift.peft.methods`). We
# register one per layout here: its options are AdapterConfig's, with the layout's own
# defaults, and its prepare function applies the adapters to the fresh copy of the base
# that `finetune` builds.
# The learning rate is larger than full fine-tuning's: a few thousand parameters that
# start at zero need bigger steps. He et al. scale the parallel adapter by s = 4.
#
# The yardstick is a *linear probe*: the head alone trains on the frozen features. What
# the adapters add beyond it is what changing the features buys.

# %%
ADAPTER_LR = 1e-2
OPTIONS = {"houlsby": {}, "pfeiffer": {}, "parallel": {"scaling": 4.0}}


def apply_layout(model, options: AdapterConfig, run) -> None:
    apply_adapters(model, options)


def register_layout(layout: str) -> str:
    defaults = {"layout": layout, **OPTIONS[layout]}
    method = Method(f"adapter-{layout}", AdapterConfig, ADAPTER_LR, f"{layout} adapters", apply_layout, defaults, adapter=True)  # fmt: skip
    return register_method(method).name


def head_only(model, options: NoOptions, run) -> None:
    model.requires_grad_(False)
    model.head.requires_grad_(True)


register_method(Method("head-only", NoOptions, ADAPTER_LR, "a linear probe on frozen features", head_only))  # fmt: skip


config = FinetuneConfig(
    train=train_config(steps=24 if FAST else 60, eval_every=6 if FAST else 15, progress=False)
)
results = {}
for method in ["head-only"] + [register_layout(layout) for layout in LAYOUTS]:
    results[method] = finetune(task, base, enc, dataclasses.replace(config, method=method))
    r = results[method]
    print(f"{method:17s} {r.seconds:5.1f}s  val accuracy {r.metric:.3f}")

# %% [markdown]
# ## 4. How small can the bottleneck be?
# The reduction factor trades parameters for capacity. Pfeiffer adapters with rf from 4
# (m = C/4) to 64 (m = 2 in the default model):

# %%
FACTORS = [4, 16, 64] if C % 64 == 0 else [4, 16]
sweep = {16: results["adapter-pfeiffer"]}
for rf in FACTORS:
    if rf not in sweep:
        run = dataclasses.replace(
            config, method="adapter-pfeiffer", options={"reduction_factor": rf}
        )
        sweep[rf] = finetune(task, base, enc, run)
    print(f"rf {rf:3d} (m = {C // rf:3d}): trainable {sweep[rf].trainable:7,}, val accuracy {sweep[rf].metric:.3f}")  # fmt: skip

# %%
print(
    f"\n{'method':18s} {'trainable':>10s} {'%':>7s} {'val acc':>8s} {'val loss':>9s} {'time s':>7s}"
)
for method, r in results.items():
    print(f"{method:18s} {r.trainable:10,} {r.trainable_percent:7.3f} {r.metric:8.3f} {r.val_loss:9.3f} {r.seconds:7.1f}")  # fmt: skip
n_val = len(task.val)
p = sum(r.metric for r in results.values()) / len(results)
print(
    f"chance: {1 / task.num_labels:.3f}; one standard error of an accuracy near {p:.2f} on "
    f"{n_val} rows: {(p * (1 - p) / n_val) ** 0.5:.3f}, so smaller differences are noise"
)

# %% [markdown]
# ## 5. Plots: the curves, and reduction factor against accuracy

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
for method, r in results.items():
    acc = [(h["step"], h["val_accuracy"]) for h in r.history if "val_accuracy" in h]
    ax1.plot(*zip(*acc), "o-", label=f"{method} ({r.trainable:,} params)")
    steps, loss = zip(*[(h["step"], h["loss"]) for h in r.history if "loss" in h])
    smooth = [sum(loss[max(0, i - 4) : i + 1]) / len(loss[max(0, i - 4) : i + 1]) for i in range(len(loss))]  # fmt: skip
    ax2.plot(steps, smooth, lw=1.5, label=method)
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set(xlabel="step", ylabel="validation accuracy", title=f"{task.name}")
ax2.set(xlabel="step", ylabel="cross-entropy", title="training loss (mean of the last 5 steps)")
rfs = sorted(sweep)
ax3.plot(rfs, [sweep[rf].metric for rf in rfs], "o-", color="C2")
for rf in rfs:
    ax3.annotate(f"{sweep[rf].trainable:,} params", (rf, sweep[rf].metric), fontsize=8,
                 textcoords="offset points", xytext=(4, 4))  # fmt: skip
ax3.set_xscale("log", base=2)
ax3.set(xlabel="reduction factor rf (m = C / rf)", ylabel="validation accuracy", title="Pfeiffer adapters: bottleneck size")  # fmt: skip
ax1.legend(fontsize=8)
ax2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "adapters.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'adapters.png'}")
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
