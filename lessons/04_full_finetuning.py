# %% [markdown]
# # Lesson 04: full fine-tuning, pretrained vs from scratch
#
# Pretraining (lesson 03) taught the base model the statistics of pydocs without a single
# label. Fine-tuning puts a small task head on top and trains on labelled examples. In
# *full* fine-tuning every weight of the base moves (the next lessons train far fewer).
#
# The question this lesson measures instead of assuming: does starting from the
# pretrained weights beat training the same architecture from random weights, with the
# same data, steps and batches, each at a learning rate that suits it? That gap is what
# *transfer* buys.
#
# The task, `stdlib-package`: given the summary line of a docstring of the Python standard
# library, name the package it comes from. Module docstrings (which often name their
# package) are left out; the model has to go by the words. The task is phrased the way
# the language model reads text: the summary line is followed by a short template,
# `" See also:"`, and each package has one label word (its *verbalizer*, e.g. " asyncio",
# " XML") that could come next.

# %%
import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from minift.claims import claim
from minift.data.batching import classification_batch
from minift.data.tasks import DEFAULT_TASK
from minift.metrics import accuracy_se, compare
from minift.model.params import count_parameters
from minift.peft.methods import METHODS
from minift.recipes.finetune import FinetuneConfig, build_model, finetune, train_config
from minift.recipes.pretrain import base_report, load_base
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.train.objectives import classification_inputs, verbalizer_ids
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "04")
print(f"fast mode: {FAST}")

base, enc = load_base()  # shipped with minift (fast mode: pretrained once, cached)
print(
    f"base model: {base.num_params():,} parameters, pydocs val loss {base_report()['val_loss']:.3f}"
)

# %% [markdown]
# ## 1. The task
# Six packages; the validation rows are docstrings the model never trains on. The counts
# below show how balanced the classes are: a uniform guess scores 1/6, and always
# answering the largest class scores its share of the validation rows.

# %%
task = get_task(DEFAULT_TASK, seed=0)
print(task.summary())
print(f"{'label':>3} {'package':10s} {'train':>6s} {'val':>5s}  example")
train_counts = np.bincount([r["label"] for r in task.train], minlength=task.num_labels)
val_counts = np.bincount([r["label"] for r in task.val], minlength=task.num_labels)
for i, name in enumerate(task.labels):
    example = next(r["text"] for r in task.train if r["label"] == i)
    print(f"{i:3d} {name:10s} {train_counts[i]:6d} {val_counts[i]:5d}  {example[:70]!r}")
ratio = train_counts.min() / train_counts.max()
balance = "balanced" if ratio == 1 else "nearly balanced" if ratio >= 0.75 else "imbalanced"
majority = val_counts.max() / val_counts.sum()
print(f"training classes: {balance} (smallest / largest = {train_counts.min()} / {train_counts.max()} = {ratio:.2f}); "
      f"uniform guess {1 / task.num_labels:.3f}, largest class's share of val {majority:.3f}")  # fmt: skip
lengths = np.array([len(ids) for ids in enc.encode_ordinary_batch([r["text"] for r in task.train])])
config = FinetuneConfig(
    train=train_config(steps=24 if FAST else 60, eval_every=6 if FAST else 15, progress=False)
)
template = enc.encode_ordinary(task.template)
room = config.max_len - len(template)
print(
    f"template {task.template!r} ({len(template)} tokens); label words {task.verbalizer}\n"
    f"summary length in tokens: median {int(np.median(lengths))}, 90th percentile "
    f"{int(np.percentile(lengths, 90))}; {100 * np.mean(lengths > room):.0f}% are cut to their "
    f"first {room} tokens so that text + template fit max_len={config.max_len}"
)
inputs = classification_inputs(task, enc, task.train[:1], config.max_len)
print(f"one model input: {enc.decode(inputs[0])!r}")

# %% [markdown]
# ## 2. The classification head
# The backbone gives one hidden vector per token. A classifier needs one per text: in a
# causal model only the *last* token has seen the whole text, so we read the final hidden
# state at the last real token (right padding: the index is the count of real tokens
# minus one) and map it with one linear layer to 6 scores (Radford et al. 2018 read GPT's
# classification feature the same way). Because attention is causal and the padding
# sits on the right, the padding can change nothing the last real token sees: a text
# gets the same scores alone or in a padded batch.
#
# The last token is the template's ":", where the language model predicts the next word.
# So the head's 6 rows start as the base's output embeddings of the 6 label words
# (`SequenceClassifier.init_head(verbalizer_ids(task, enc))`, what
# `minift.recipes.finetune.build_model` does): the head's first scores are the language model's
# own next-token scores for those words. Lesson 09 looks closer at that choice.
#
# What loss should that head start at? A uniform guess over 6 classes has loss ln 6. The
# label-word head is not a uniform guess: the language model's scores for the six words
# differ by several nats, for two reasons. They carry what the model knows about the text
# (which lowers the loss when it points the right way), and they carry its *prior*: a
# frequent word gets a high score whatever the text (which raises the loss on every row
# of another class). Subtracting each word's mean score over the training rows removes
# the prior (the idea behind contextual calibration, Zhao et al. 2021); what is left is
# what the scores know about the text.

# %%
clf = build_model(base, task, enc, config).eval()  # a copy of the base + the label-word head
label_ids = verbalizer_ids(task, enc)
print(f"label tokens {label_ids} = {[enc.decode([i]) for i in label_ids]}")
print(f"head rows == the base's output embeddings of those tokens: {torch.equal(clf.head.weight, base.lm_head.weight[label_ids])}")  # fmt: skip
# Two of the shortest validation texts and two of the longest, so the batch needs padding.
by_length = sorted(task.val, key=lambda r: len(classification_inputs(task, enc, [r], config.max_len)[0]))  # fmt: skip
rows = by_length[:2] + by_length[-2:]
batch = classification_batch(
    classification_inputs(task, enc, rows, config.max_len),
    [r["label"] for r in rows],
    pad_id(enc),
    config.max_len,
)
idx, mask = batch["idx"], batch["attention_mask"]
with torch.no_grad():
    out = clf(idx, attention_mask=mask, labels=batch["labels"])
    hidden = base(idx, attention_mask=mask).last_hidden
    last = mask.sum(1) - 1
    pooled = clf.features(idx, attention_mask=mask)
    alone = torch.cat([clf(idx[i : i + 1, : last[i] + 1]).logits for i in range(len(rows))])
print(f"batch: idx {tuple(idx.shape)}, real tokens per row {mask.sum(1).tolist()}")
print(
    f"pooled features {tuple(pooled.shape)} = hidden state at positions {last.tolist()}: "
    f"{torch.equal(pooled, hidden[torch.arange(len(rows)), last])}"
)
head_params = sum(p.numel() for p in clf.head.parameters())
print(f"head: Linear({base.config.n_embd} -> {task.num_labels}), {head_params:,} new parameters")
pad_diff = (alone - out.logits).abs().max().item()
print(f"logits {tuple(out.logits.shape)}; each text alone vs in the padded batch: max logit diff {pad_diff:.2e}")  # fmt: skip


@torch.no_grad()
def head_logits(model, rows) -> torch.Tensor:
    """The classifier's scores for every row, 64 at a time."""
    chunks = []
    for i in range(0, len(rows), 64):
        ids = classification_inputs(task, enc, rows[i : i + 64], config.max_len)
        b = classification_batch(ids, None, pad_id(enc), config.max_len)
        chunks.append(model(b["idx"], attention_mask=b["attention_mask"]).logits)
    return torch.cat(chunks)


val_labels = torch.tensor([r["label"] for r in task.val])
init_logits = head_logits(clf, task.val)
prior = head_logits(clf, task.train[:256]).mean(0)  # each word's mean score on training rows
init_loss = F.cross_entropy(init_logits, val_labels).item()
calibrated_loss = F.cross_entropy(init_logits - prior, val_labels).item()
init_acc = (init_logits.argmax(-1) == val_labels).float().mean().item()
spread = (init_logits.max(-1).values - init_logits.min(-1).values).mean().item()
picked = np.bincount(init_logits.argmax(-1).numpy(), minlength=task.num_labels)
print(f"at initialisation, over all {len(task.val)} val rows: loss {init_loss:.3f} (a uniform guess: ln 6 = {math.log(6):.3f}), accuracy {init_acc:.3f}")  # fmt: skip
print(f"  the six scores span {spread:.1f} nats on average; each word's mean score (its prior): "
      + ", ".join(f"{w!r} {p:+.1f}" for w, p in zip(task.verbalizer, prior.tolist())))  # fmt: skip
print(f"  predicted classes: {dict(zip(task.labels, picked.tolist()))}")
print(f"  with each word's prior subtracted: loss {calibrated_loss:.3f}")

# %% [markdown]
# ## 3. Fine-tune: pretrained vs from scratch
# Both runs use `minift.recipes.finetune.finetune` with the same `FinetuneConfig`: the same
# steps, batch size, schedule and batches (they are drawn from the seed). Apart from the
# learning rate (below), the only difference is the starting point: `full` copies the pretrained base, `scratch`
# re-initialises the same architecture at random first (and its label-word head from the
# fresh, random embeddings, so nothing pretrained leaks in). Every weight trains in both.
#
# A comparison at one learning rate can mislead: the best rate for a random start need
# not be the best for a pretrained one. Each start has its own rate in the method registry
# (`METHODS["full"].lr`, `METHODS["scratch"].lr`, each chosen by a sweep); both also run
# at three times it, as a check that neither is held back by its rate: four runs with the
# same budget each, and each start is then judged at the better of its two.

# %%
trainable, total = count_parameters(clf)
default_lr = {m: METHODS[m].lr for m in ("full", "scratch")}  # each method's own default
print(
    f"config: {config.train.steps} steps, batch {config.batch_size}, max_len {config.max_len}, "
    f"default peak lr {default_lr}; trainable {trainable:,} of {total:,} parameters"
)
label = {"full": "pretrained", "scratch": "scratch"}
results = {}
for factor in (1, 3):
    for method in ("full", "scratch"):
        lr = default_lr[method] * factor
        t = time.perf_counter()
        run = dataclasses.replace(config, method=method, train=dataclasses.replace(config.train, lr=lr))  # fmt: skip
        r = finetune(task, base, enc, run, keep_model=True)
        results[(method, lr)] = r
        curve = " ".join(f"{h['val_accuracy']:.2f}" for h in r.history if "val_accuracy" in h)
        print(f"{label[method]:10s} lr {lr:.0e}: {time.perf_counter() - t:5.1f}s; val accuracy along the run: {curve}")  # fmt: skip

# %%
n_val = len(task.val)
print(f"\n{'start':10s} {'lr':>6s} {'trainable':>10s} {'val acc':>8s} {'+-SE':>6s} {'val loss':>9s} {'time s':>7s}")  # fmt: skip
for (method, lr), r in results.items():
    print(
        f"{label[method]:10s} {lr:6.0e} {r.trainable:10,} {r.metric:8.3f} {accuracy_se(r.metric, n_val):6.3f} "
        f"{r.val_loss:9.3f} {r.seconds:7.1f}"
    )  # fmt: skip
print(f"uniform guess: {1 / task.num_labels:.3f}; largest class: {majority:.3f}; SE: one standard error of the accuracy on {n_val} rows")  # fmt: skip

# %% [markdown]
# ## 4. The curves

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
colors = {"full": "C0", "scratch": "C1"}
for (method, lr), r in results.items():
    style = "-" if lr == default_lr[method] else "--"
    name = f"{label[method]}, lr {lr:.0e}"
    acc = [(h["step"], h["val_accuracy"]) for h in r.history if "val_accuracy" in h]
    steps, accs = zip(*acc)
    err = [accuracy_se(a, len(task.val)) for a in accs]
    ax1.errorbar(steps, accs, yerr=err, fmt="o" + style, capsize=3, color=colors[method], label=name)  # fmt: skip
    loss = [(h["step"], h["loss"]) for h in r.history if "loss" in h]
    ax2.plot(*zip(*loss), style, color=colors[method], lw=1, label=f"{name}: train")
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set(xlabel="step", ylabel="validation accuracy")
ax2.set(xlabel="step", ylabel="cross-entropy", title="training loss")
ax1.set_ylim(0, 1)
ax1.set_title(f"{task.name}: validation accuracy (error bars: 1 SE)")
for ax in (ax1, ax2):  # below the axes, where they cover no curve
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
fig.savefig(OUT / "accuracy_curves.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'accuracy_curves.png'}")

# %% [markdown]
# ## 5. Confusion matrices
# Each start at its better learning rate (picked on the validation rows it is scored on,
# which flatters both alike). Row i, column j counts validation docstrings of
# package i predicted as package j; the diagonal holds the correct answers. Which
# packages get mixed up tells you what the model has (not) learned.


# %%
best_run = {
    m: max(((lr, r) for (mm, lr), r in results.items() if mm == m), key=lambda t: t[1].metric)
    for m in ("full", "scratch")
}
truth = val_labels.numpy()
K = task.num_labels
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
same_as_finetune = True
for ax, (method, (lr, r)) in zip(axes, best_run.items()):
    pred = head_logits(r.model, task.val).argmax(-1).numpy()
    cm = np.zeros((K, K), dtype=int)
    np.add.at(cm, (truth, pred), 1)
    # Row by row, the same right and wrong answers as finetune's own evaluation.
    same_as_finetune &= np.array_equal(pred == truth, np.array(r.val_scores) == 1.0)
    per_class = cm.diagonal() / cm.sum(1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    i, j = np.unravel_index(off.argmax(), off.shape)
    print(
        f"{label[method]} (lr {lr:.0e}) per-class accuracy: "
        + ", ".join(f"{n} {a:.2f}" for n, a in zip(task.labels, per_class))
        + f"; most common mistake: {task.labels[i]} -> {task.labels[j]} ({off[i, j]} times)"
    )
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, label="validation rows")
    for a in range(K):
        for b in range(K):
            ax.text(b, a, cm[a, b], ha="center", va="center", fontsize=8,
                    color="white" if cm[a, b] > cm.max() / 2 else "black")  # fmt: skip
    ax.set_xticks(range(K), task.labels, rotation=45)
    ax.set_yticks(range(K), task.labels)
    ax.set(xlabel="predicted", ylabel="true", title=f"{label[method]}, lr {lr:.0e}: accuracy {r.metric:.3f}")  # fmt: skip
fig.tight_layout()
fig.savefig(OUT / "confusion.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'confusion.png'}")

# %% [markdown]
# ## 6. What the numbers say
# Computed from this run. The claims hold on any base, the fast-mode toy included. The
# scale claims are what the literature reports: a pretrained start beats a random one
# (Howard and Ruder 2018; Radford et al. 2018), which a base pretrained for minutes may or
# may not show (in fast mode, a base of 150 steps on 24 fine-tuning steps, it need not).


# %%


def settled(r) -> str:
    """Whether a run's validation accuracy was still moving at its last evaluation."""
    acc = [h["val_accuracy"] for h in r.history if "val_accuracy" in h]
    moving = abs(acc[-1] - acc[-2]) > 2 * accuracy_se(acc[-1], n_val)
    return f"{acc[-2]:.3f} -> {acc[-1]:.3f} at the last evaluation: " + ("still moving" if moving else "flat within 2 SE")  # fmt: skip


(lr_p, r_p), (lr_s, r_s) = best_run["full"], best_run["scratch"]
transfer = compare(f"pretrained (lr {lr_p:.0e})", r_p.val_scores, f"scratch (lr {lr_s:.0e})", r_s.val_scores)  # fmt: skip
print(transfer)
for factor in (1, 3):
    pre = results[("full", default_lr["full"] * factor)]
    scr = results[("scratch", default_lr["scratch"] * factor)]
    print(f"  at {factor}x each default lr: {compare('pretrained', pre.val_scores, 'scratch', scr.val_scores)}")  # fmt: skip
for method, (lr, r) in best_run.items():
    edge = " (the larger rate won: a larger one still might do better)" if lr != default_lr[method] else ""  # fmt: skip
    print(f"{label[method]}: {settled(r)}{edge}")

claim(
    "the label-word head starts as the language model: its rows are the base's output embeddings of the label words",  # fmt: skip
    torch.equal(clf.head.weight, base.lm_head.weight[label_ids]),
)
claim(
    "right padding changes nothing: a text gets the same scores alone and in a padded batch",
    pad_diff < 1e-4,
    f"max difference {pad_diff:.1e}",
)
claim(
    "the initial loss is not ln 6: the label words' scores carry the language model's prior, and removing it lowers the loss",  # fmt: skip
    abs(init_loss - math.log(6)) > 0.1 and calibrated_loss < init_loss,
    f"{init_loss:.3f} at initialisation, {calibrated_loss:.3f} with each word's mean score subtracted; ln 6 = {math.log(6):.3f}",  # fmt: skip
)
claim(
    "the confusion matrices count the same right and wrong answers as finetune's evaluation",
    same_as_finetune,
)
claim(
    "before any training, the pretrained label-word head already beats a uniform guess (loss below ln 6)",  # fmt: skip
    init_loss < math.log(6),
    f"{init_loss:.3f} vs {math.log(6):.3f}; accuracy {init_acc:.3f}",
    at_scale=True,
)
claim(
    "pretraining transfers: the pretrained start beats the random one, each at its better learning rate",  # fmt: skip
    not transfer.within_noise and transfer.difference > 0,
    str(transfer),
    at_scale=True,
)
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Give both runs three times the steps. Does the gap between pretrained and scratch
#    grow, shrink or flip? What does that say about what pretraining buys?
# 2. Add 1/3 of the default learning rate to the sweep. Is the best learning rate the same
#    for a pretrained and a random start? Change `seed` too: how much do the numbers move?
# 3. Switch to `pooling="mean"`. Why is the last token the natural choice for a causal
#    model, and does the measurement agree?
# 4. Freeze the backbone and train only the head (a linear probe on the pretrained
#    features). How much of full fine-tuning's accuracy does it reach?
