# %% [markdown]
# # Lesson 08: layer-wise fine-tuning
#
# LoRA, adapters and prefixes (lessons 05-07) add new parameters. The oldest way to
# fine-tune cheaply adds nothing: it chooses *which of the existing parameters* train,
# *when* they start training, and *how fast* each layer moves.
#
# - **Freeze all but the last k blocks.** Lower layers of a network hold general
#   features, upper layers task-specific ones (Yosinski et al. 2014, "How transferable
#   are features in deep neural networks?"), so the top is where a new task needs change.
# - **BitFit** (Ben Zaken et al. 2022): train the bias terms only, about 0.1% of BERT.
# - **LayerNorm tuning**: train only the normalisation gains and biases.
# - **Gradual unfreezing** (Howard and Ruder 2018, ULMFiT): start with the head alone and
#   unfreeze one more block from the top every few steps, so the early, large gradients
#   of a fresh head do not scramble the pretrained lower layers.
# - **Discriminative learning rates / layer-wise LR decay** (Howard and Ruder 2018; Clark
#   et al. 2020): every parameter trains, block l of L at lr * decay^(L + 1 - l).
#
# The code is `minift/peft/layerwise.py`; each is a method of `minift.recipes.finetune`.

# %%
import dataclasses
import time

from minift.data.tasks import DEFAULT_TASK
from minift.model.params import count_parameters
from minift.peft.layerwise import layer_index, layerwise_lr_groups
from minift.peft.methods import METHODS, Preparation, register_method
from minift.recipes.finetune import FinetuneConfig, build_model, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "08")
print(f"fast mode: {FAST}")
base, enc = load_base()
task = get_task(DEFAULT_TASK, seed=0)
L = base.config.n_layer
config = FinetuneConfig(
    train=train_config(steps=8 if FAST else 60, eval_every=4 if FAST else 15, progress=False)
)
print(f"base: {L} blocks, width {base.config.n_embd}; task {task.summary()}; {config.train.steps} steps each")  # fmt: skip

# %% [markdown]
# ## 1. Where the parameters are
# The depth of a parameter decides its fate in every method below: 0 for the embeddings,
# l + 1 for block l, L + 1 for the final norm and the task head. The token embedding is
# the largest single tensor of this small model (and is tied to the LM head).

# %%
clf = build_model(base, task, enc, config)
by_depth: dict[int, int] = {}
for name, p in clf.named_parameters():
    d = layer_index(name.removeprefix("backbone."), L)
    by_depth[d] = by_depth.get(d, 0) + p.numel()
total = sum(by_depth.values())
for d, n in sorted(by_depth.items()):
    what = "embeddings" if d == 0 else f"block {d - 1}" if d <= L else "final norm + head"
    print(f"depth {d}: {what:18s} {n:9,} parameters ({100 * n / total:5.1f}%)")

# %% [markdown]
# ## 2. Freeze all but the last k blocks
# k = 0 trains only the final norm and the head (the features stay frozen); k = L trains
# every block but not the embeddings. Full fine-tuning is the yardstick. Freezing the
# bottom also saves time: the backward pass stops at the lowest trainable layer.

# %%
results = {}
results["full"] = finetune(task, base, enc, dataclasses.replace(config, method="full"))
ks = sorted({0, 1, 2, L})  # every k on a deeper model takes longer than a lesson should
for k in ks:
    run = dataclasses.replace(config, method="layerwise", options={"k": k})
    results[f"last {k}"] = finetune(task, base, enc, run)
for name, r in results.items():
    print(f"{name:8s}: trainable {r.trainable:9,} ({r.trainable_percent:5.1f}%), val accuracy {r.metric:.3f}, {r.seconds:4.1f}s")  # fmt: skip

# %% [markdown]
# ## 3. BitFit and LayerNorm-only
# Both leave every weight matrix alone. They need the whole backward pass (the biases
# and norms of block 0 sit at the bottom), so they are not cheaper per step than full
# fine-tuning; what they save is optimizer memory and the size of what is stored.

# %%
for method in ("bitfit", "layernorm"):
    results[method] = r = finetune(task, base, enc, dataclasses.replace(config, method=method))
    print(f"{method:9s}: trainable {r.trainable:7,} ({r.trainable_percent:.2f}%), val accuracy {r.metric:.3f}, lr {METHODS[method].lr:g}, {r.seconds:.1f}s")  # fmt: skip

# %% [markdown]
# ## 4. Gradual unfreezing
# The library's "gradual" method unfreezes one block from the top every
# steps // (L + 1) steps. To *see* the schedule, we wrap it in a method that counts the
# trainable parameters after every step (what `on_step` is for).

# %%
trainable_log: list[tuple[int, int]] = []


def gradual_logged(model, options, run) -> Preparation:
    prep = METHODS["gradual"].prepare(model, options, run)
    trainable_log.append((1, count_parameters(model)[0]))  # what trains during step 1

    def on_step(step: int, trainer) -> None:
        prep.on_step(step, trainer)
        trainable_log.append((step + 1, count_parameters(model)[0]))

    return Preparation(prep.param_groups, on_step)


# the "gradual" method (its options, learning rate) with another prepare function
register_method(dataclasses.replace(METHODS["gradual"], name="gradual-logged", prepare=gradual_logged))  # fmt: skip
results["gradual"] = r = finetune(task, base, enc, dataclasses.replace(config, method="gradual-logged"))  # fmt: skip
changes = [(s, n) for i, (s, n) in enumerate(trainable_log) if i == 0 or n != trainable_log[i - 1][1]]  # fmt: skip
print("trainable parameters from step: " + ", ".join(f"{s}: {n:,}" for s, n in changes if s <= config.train.steps))  # fmt: skip
print(f"gradual unfreezing: val accuracy {r.metric:.3f}, {r.seconds:.1f}s")

# %% [markdown]
# ## 5. Discriminative learning rates (layer-wise LR decay)
# `layerwise_lr_groups` gives each depth its own optimizer group; the top trains at the
# peak rate and each layer below at `decay` times the rate of the layer above. The
# schedule (warm-up, cosine) then scales every group alike. Printed: the groups as built,
# and the rates the optimizer actually used at the peak of the schedule.

# %%
DECAY = 0.7
groups = layerwise_lr_groups(clf, lr=METHODS["llrd"].lr, decay=DECAY)
print(f"{'depth':>5s} {'tensors':>9s} {'params':>9s} {'lr':>9s}")
for g in groups:
    kind = "matrices" if g["params"][0].dim() >= 2 else "vectors"  # weight decay: matrices only
    print(f"{g['depth']:5d} {kind:>9s} {sum(p.numel() for p in g['params']):9,} {g['lr']:9.2e}")  # fmt: skip

used: dict[int, float] = {}


def llrd_logged(model, options, run) -> Preparation:
    prep = METHODS["llrd"].prepare(model, options, run)

    def on_step(step: int, trainer) -> None:
        if step == config.train.warmup_steps:  # the scheduled multiplier is 1 here: the peak
            used.clear()
            used.update({g["depth"]: g["lr"] for g in trainer.optimizer.param_groups})

    return Preparation(prep.param_groups, on_step)


register_method(dataclasses.replace(METHODS["llrd"], name="llrd-logged", prepare=llrd_logged))
for decay in (DECAY,) if FAST else (DECAY, 0.5):
    run = dataclasses.replace(config, method="llrd-logged", options={"decay": decay})
    results[f"llrd {decay}"] = r = finetune(task, base, enc, run)
    rates = ", ".join(f"{d}: {lr:.1e}" for d, lr in sorted(used.items()))
    print(f"llrd decay {decay}: val accuracy {r.metric:.3f}, {r.seconds:.1f}s; lr by depth at step {config.train.warmup_steps}: {rates}")  # fmt: skip

# %% [markdown]
# ## 6. Side by side, same budget

# %%
print(f"\n{'method':10s} {'trainable':>10s} {'%':>6s} {'val acc':>8s} {'best':>6s} {'time s':>7s}")
for name, r in results.items():
    best = max(h["val_accuracy"] for h in r.history if "val_accuracy" in h)
    print(f"{name:10s} {r.trainable:10,} {r.trainable_percent:6.2f} {r.metric:8.3f} {best:6.3f} {r.seconds:7.1f}")  # fmt: skip
n_val = len(task.val)
p = results["full"].metric
print("(gradual: the parameters trainable at the start; the count grows, see section 4)")
print(f"chance {1 / task.num_labels:.3f}; one standard error near {p:.2f} on {n_val} rows: {(p * (1 - p) / n_val) ** 0.5:.3f}")  # fmt: skip
top = max(results.items(), key=lambda kv: kv[1].metric)
print(f"highest val accuracy here: {top[0]} ({top[1].metric:.3f}); full fine-tuning {results['full'].metric:.3f}")  # fmt: skip

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
ax = axes[0]
ax.plot(ks, [results[f"last {k}"].metric for k in ks], "o-", color="C0", label="val accuracy")
ax.axhline(results["full"].metric, color="k", ls="--", label="full fine-tuning")
ax.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax.set(xlabel="k (last blocks trained)", ylabel="validation accuracy", title="freeze all but the last k blocks")  # fmt: skip
ax.set_xticks(ks)
twin = ax.twinx()
twin.plot(ks, [results[f"last {k}"].trainable for k in ks], "s--", color="C3", alpha=0.6)
twin.set_ylabel("trainable parameters", color="C3")
ax.legend(fontsize=8, loc="upper left")

ax = axes[1]
steps, counts = zip(*[(s, n) for s, n in trainable_log if s <= config.train.steps])
ax.step(steps, counts, where="post", color="C3", label="trainable parameters")
ax.set(xlabel="step", ylabel="trainable parameters", title="gradual unfreezing")
twin = ax.twinx()
for name, color in (("gradual", "C0"), ("full", "k")):
    acc = [(h["step"], h["val_accuracy"]) for h in results[name].history if "val_accuracy" in h]
    twin.plot(*zip(*acc), "o-", color=color, label=f"{name}: val accuracy")
twin.set_ylabel("validation accuracy")
ax.legend(fontsize=8, loc="upper left")
twin.legend(fontsize=8, loc="lower right")

ax = axes[2]
for name, r in results.items():
    ax.scatter(r.trainable, r.metric, s=30)
    ax.annotate(name, (r.trainable, r.metric), fontsize=8, textcoords="offset points", xytext=(4, 3))  # fmt: skip
ax.set_xscale("log")
ax.axhline(1 / task.num_labels, color="gray", ls=":")
ax.set(xlabel="trainable parameters", ylabel="validation accuracy", title=f"{task.name}, {config.train.steps} steps each")  # fmt: skip
fig.tight_layout()
fig.savefig(OUT / "layerwise.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'layerwise.png'}")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Freeze all but the *first* k blocks instead (write a method with `register_method`).
#    Is the bottom or the top the better place to train on this task?
# 2. Gradual unfreezing with twice the steps: does it catch up with full fine-tuning?
#    What happens with `options={"every": 1}`?
# 3. Combine gradual unfreezing with discriminative rates (`options={"decay": 0.7}` on
#    "gradual"): ULMFiT used both.
# 4. BitFit trains about 0.5% of this model. Which bias vectors move most? (Keep the model
#    with `keep_model=True` and compare with the base.)
