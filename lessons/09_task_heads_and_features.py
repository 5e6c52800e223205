# %% [markdown]
# # Lesson 09: task heads and feature extraction
#
# A language model ends in one score per vocabulary token. A task wants something else:
# one of K labels, or a number. The bridge is a *head*: pool the hidden states of a text
# into one vector h, then map it, `score = W h + b` (`minift/model/heads.py`). This lesson
# looks at the three choices a head involves:
#
# 1. **which hidden state** to read (pooling: the last token or the mean of all tokens);
# 2. **where W starts** (at random, or at the language model's own output embeddings of
#    one word per label: a *verbalizer*, Schick and Schuetze 2021);
# 3. **whether the backbone trains at all**: *feature extraction* computes the frozen
#    features once and trains only a linear model on them (a "linear probe").
#
# and ends with a regression head (num_labels = 1, mean squared error) on a target
# measured from real docstrings.

# %%
import copy
import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from minift.data.batching import classification_batch
from minift.data.corpus import load_corpus
from minift.data.tasks import DEFAULT_TASK, summary_line
from minift.model.heads import SequenceClassifier
from minift.recipes.finetune import FinetuneConfig, build_model, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.train import TrainConfig, Trainer
from minift.train.objectives import classification_inputs, verbalizer_ids
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "09")
print(f"fast mode: {FAST}")
base, enc = load_base()
task = get_task(DEFAULT_TASK, seed=0)
config = FinetuneConfig(
    train=train_config(steps=8 if FAST else 60, eval_every=4 if FAST else 15, progress=False)
)
PAD = pad_id(enc)
print(f"task {task.summary()}; inputs end with the template {task.template!r}")


def batch_of(rows, max_len=config.max_len):
    ids = classification_inputs(task, enc, rows, max_len)
    return classification_batch(ids, [r["label"] for r in rows], PAD, max_len)


# %% [markdown]
# ## 1. Pooling: the last token or the mean
# In a causal model, token t has seen tokens 0..t only, so the last real token is the
# one that has read the whole text; the mean of all tokens mixes in states that saw only
# the beginning. With right padding both are computed over real tokens only, so a text
# scores the same alone as in a padded batch.

# %%
rows = task.val[:5]
b = batch_of(rows)
clf = {p: build_model(base, task, enc, dataclasses.replace(config, pooling=p)).eval() for p in ("last", "mean")}  # fmt: skip
with torch.no_grad():
    hidden = base(b["idx"], attention_mask=b["attention_mask"]).last_hidden
    for pooling, model in clf.items():
        pooled = model.features(b["idx"], attention_mask=b["attention_mask"])
        n = b["attention_mask"].sum(1)
        if pooling == "last":
            by_hand = hidden[torch.arange(len(rows)), n - 1]
        else:
            by_hand = torch.stack([hidden[i, : n[i]].mean(0) for i in range(len(rows))])
        alone = torch.cat([model.features(b["idx"][i : i + 1, : n[i]]) for i in range(len(rows))])
        print(f"{pooling:4s} pooling: vs by hand max |diff| {(pooled - by_hand).abs().max():.1e}; alone vs in the padded batch {(pooled - alone).abs().max():.1e}")  # fmt: skip

results = {}
for pooling in ("last", "mean"):
    run = dataclasses.replace(config, method="full", pooling=pooling)
    results[f"full, {pooling} pooling"] = r = finetune(task, base, enc, run)
    print(
        f"full fine-tuning with {pooling} pooling: val accuracy {r.metric:.3f} ({r.seconds:.1f}s)"
    )

# %% [markdown]
# ## 2. Where the head starts: the label words
# The last input token is the template's ":", where the language model predicts the next
# word. `init_head(verbalizer_ids(task, enc))` copies the output embeddings of the 6 label
# words into the head's rows (and zeroes its bias), so the head's first scores are the
# language model's next-token logits for those words, restricted to them. Checked:

# %%
ids = verbalizer_ids(task, enc)
head = clf["last"]
b = batch_of(task.val)
with torch.no_grad():
    lm_logits = base(b["idx"], attention_mask=b["attention_mask"]).logits
    last = b["attention_mask"].sum(1) - 1
    lm_restricted = lm_logits[torch.arange(len(last)), last][:, ids]
    zero_shot = head(b["idx"], attention_mask=b["attention_mask"]).logits
print(f"label words {[enc.decode([i]) for i in ids]}")
print(f"head logits vs the LM's next-token logits for those words: max |diff| {(zero_shot - lm_restricted).abs().max():.1e}")  # fmt: skip

# %% [markdown]
# So the untrained head is a *zero-shot* classifier: the language model's guess of the
# next word. How good a guess? A language model has a prior over words that holds
# whatever the text; if the predictions below pile onto one label, that prior dominates.
# *Calibrating* removes it: subtract each label's mean score over the validation texts
# and keep what varies with the text (in the spirit of Zhao et al. 2021, "Calibrate
# before use").

# %%
truth = b["labels"]
pred = zero_shot.argmax(-1)
counts = torch.bincount(pred, minlength=task.num_labels).tolist()
calibrated = (zero_shot - zero_shot.mean(0)).argmax(-1)
print(f"zero-shot accuracy {(pred == truth).float().mean():.3f} (chance {1 / task.num_labels:.3f}); predictions per label {dict(zip(task.labels, counts))}")  # fmt: skip
print(f"calibrated zero-shot accuracy {(calibrated == truth).float().mean():.3f}; predictions per label {dict(zip(task.labels, torch.bincount(calibrated, minlength=task.num_labels).tolist()))}")  # fmt: skip

# %% [markdown]
# Does that starting point help training? The same runs with a random head (a task
# without a verbalizer gets `nn.init.normal_(std=0.02)` rows), once fine-tuning
# everything and once as a linear probe (only the head trains, on frozen features).

# %%
random_task = dataclasses.replace(task, verbalizer=[])
results["full, random head"] = finetune(random_task, base, enc, dataclasses.replace(config, method="full"))  # fmt: skip
results["probe, label-word head"] = finetune(task, base, enc, dataclasses.replace(config, method="probe"))  # fmt: skip
results["probe, random head"] = finetune(random_task, base, enc, dataclasses.replace(config, method="probe"))  # fmt: skip
results["full, label-word head"] = results["full, last pooling"]
for name in ("full, label-word head", "full, random head", "probe, label-word head", "probe, random head"):  # fmt: skip
    r = results[name]
    acc = [h["val_accuracy"] for h in r.history if "val_accuracy" in h]
    loss0 = r.history[0]["val_loss"]
    print(f"{name:24s}: step 0 val accuracy {acc[0]:.3f} (val loss {loss0:.2f}), after {config.train.steps} steps {acc[-1]:.3f} (val loss {r.val_loss:.2f})")  # fmt: skip

# %% [markdown]
# ## 3. Feature extraction: features once, then a linear probe
# With a frozen backbone the features of a text never change, so there is no reason to
# recompute them at every step (what the "probe" method above does, 32 texts at a time).
# Extract them once for all texts, then fit multinomial logistic regression on the
# (n, C) matrix: full-batch L-BFGS with a little L2 (both steps are timed below).

# %%
t0 = time.perf_counter()
extractor = build_model(base, task, enc, config).eval()


@torch.no_grad()
def extract(rows) -> torch.Tensor:
    feats = []
    for i in range(0, len(rows), 128):
        bb = batch_of(rows[i : i + 128])
        feats.append(extractor.features(bb["idx"], attention_mask=bb["attention_mask"]))
    return torch.cat(feats)


X_train, X_val = extract(task.train), extract(task.val)
y_train = torch.tensor([r["label"] for r in task.train])
y_val = torch.tensor([r["label"] for r in task.val])
t_extract = time.perf_counter() - t0
mu, sd = X_train.mean(0), X_train.std(0) + 1e-6  # standardise: L-BFGS likes round problems


def fit_probe(X, y, l2: float) -> torch.nn.Linear:
    torch.manual_seed(0)
    probe = torch.nn.Linear(X.shape[1], task.num_labels)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=30 if FAST else 100, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(X), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


t1 = time.perf_counter()
probe_acc = {}
for l2 in (1e-4, 1e-3, 1e-2):
    p = fit_probe((X_train - mu) / sd, y_train, l2)
    with torch.no_grad():
        train_acc = (p((X_train - mu) / sd).argmax(-1) == y_train).float().mean().item()
        probe_acc[l2] = (p((X_val - mu) / sd).argmax(-1) == y_val).float().mean().item()
    print(f"linear probe, L2 {l2:g}: train accuracy {train_acc:.3f}, val accuracy {probe_acc[l2]:.3f}")  # fmt: skip
t_fit = time.perf_counter() - t1
fp = results["probe, label-word head"]
print(f"features of {len(X_train) + len(X_val)} texts extracted once in {t_extract:.2f}s; three probes fitted in {t_fit:.2f}s")  # fmt: skip
print(f"finetune(method='probe'): val accuracy {fp.metric:.3f} in {fp.seconds:.1f}s ({config.train.steps} steps of 32 texts, the backbone run every step)")  # fmt: skip
print("(the L2 strength is chosen on the validation set here, so the best of the three is optimistic)")  # fmt: skip

# %% [markdown]
# ## 4. A regression head: how long is the docstring?
# A target measured from real data: from a docstring's *summary line* alone, predict the
# (log) number of words in the whole docstring. Whether a function's one-line summary
# says how much more there is to say is a real question with a graded answer. The head
# has one output (`num_labels=1`) and trains with mean squared error; the targets are
# standardised (zero mean, unit variance on the training set), so predicting the mean
# scores an MSE of about 1 and R^2 = 1 - MSE / variance measures what is learned.
#
# A baseline that could explain everything away: the summary's own length. A
# least-squares line on the summary's token count gives its R^2.


# %%
def regression_rows(split: str, limit: int) -> list[dict]:
    rows = []
    for doc in load_corpus("pydocs", split):
        summary = summary_line(doc.text)
        if doc.name and len(summary) >= 24:
            rows.append({"text": summary, "target": math.log(len(doc.text.split()))})
    rng = np.random.default_rng(0)
    return [rows[i] for i in rng.permutation(len(rows))[:limit]]


reg_train = regression_rows("train", 500 if FAST else 4000)
reg_val = regression_rows("val", 200 if FAST else 600)  # unseen modules
t_mean = np.mean([r["target"] for r in reg_train])
t_std = np.std([r["target"] for r in reg_train])
MAX_LEN = 24


def encode(rows):
    ids = [t[:MAX_LEN] for t in enc.encode_ordinary_batch([r["text"] for r in rows])]
    y = torch.tensor([(r["target"] - t_mean) / t_std for r in rows], dtype=torch.float32)
    return ids, y


train_ids, train_y = encode(reg_train)
val_ids, val_y = encode(reg_val)
print(f"{len(reg_train)} training and {len(reg_val)} validation summaries; docstring length: median {math.exp(np.median([r['target'] for r in reg_train])):.0f} words, target std {t_std:.2f} (log words)")  # fmt: skip

lens_train = np.array([len(t) for t in train_ids], dtype=float)
lens_val = np.array([len(t) for t in val_ids], dtype=float)
slope, intercept = np.polyfit(lens_train, train_y.numpy(), 1)
base_pred = slope * lens_val + intercept
r2_len = 1 - np.mean((base_pred - val_y.numpy()) ** 2) / np.var(val_y.numpy())
print(f"baseline, a line on the summary's token count: val R^2 {r2_len:.3f}")


def reg_batch(ids, y):
    out = classification_batch(ids, None, PAD, MAX_LEN)
    out["labels"] = y
    return out


def batch_fn(step: int, micro: int):
    g = torch.Generator().manual_seed(step * 1_009 + micro)
    pick = torch.randint(0, len(train_ids), (32,), generator=g).tolist()
    return reg_batch([train_ids[i] for i in pick], train_y[pick])


def loss_fn(model, batch):
    out = model(batch["idx"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss, {}


@torch.no_grad()
def predict(model) -> torch.Tensor:
    preds = []
    for i in range(0, len(val_ids), 128):
        bb = reg_batch(val_ids[i : i + 128], val_y[i : i + 128])
        preds.append(model(bb["idx"], attention_mask=bb["attention_mask"]).logits.squeeze(-1))
    return torch.cat(preds)


def eval_fn(model) -> dict[str, float]:
    mse = F.mse_loss(predict(model), val_y).item()
    return {"val_mse": mse, "val_r2": 1 - mse / val_y.var(unbiased=False).item()}


torch.manual_seed(0)
regressor = SequenceClassifier(copy.deepcopy(base), num_labels=1)
reg_steps = 12 if FAST else 80
train_cfg = TrainConfig(
    steps=reg_steps, lr=1e-3, warmup_steps=5, weight_decay=0.0, eval_every=reg_steps // 4,
    eval_at_start=True, monitor="val_mse", progress=False,
)  # fmt: skip
fit = Trainer(regressor, train_cfg, batch_fn, loss_fn, eval_fn).fit()
for h in fit.history:
    if "val_mse" in h:
        print(f"step {h['step']:3d}: val MSE {h['val_mse']:.3f}, R^2 {h['val_r2']:.3f}")
regressor.eval()
pred = predict(regressor).numpy()
corr = np.corrcoef(pred, val_y.numpy())[0, 1]
print(f"regression head: val R^2 {fit.history[-1]['val_r2']:.3f}, correlation {corr:.3f}; the summary-length line: R^2 {r2_len:.3f}")  # fmt: skip

# %% [markdown]
# ## 5. Plots

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
ax = axes[0]
for name, r in results.items():
    if name == "full, last pooling":
        continue
    acc = [(h["step"], h["val_accuracy"]) for h in r.history if "val_accuracy" in h]
    ax.plot(*zip(*acc), "o-", label=name)
ax.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax.set(xlabel="step", ylabel="validation accuracy", title="pooling and head initialisation")
ax.legend(fontsize=8)
ax = axes[1]
names = ["probe (finetune)", *[f"features + LR, L2 {l2:g}" for l2 in probe_acc]]
ax.barh(names, [fp.metric, *probe_acc.values()], color=["C1", "C0", "C0", "C0"])
ax.axvline(results["full, label-word head"].metric, color="k", ls="--", label="full fine-tuning")
ax.axvline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax.set(xlabel="validation accuracy", title="frozen features, a linear model on top")
ax.legend(fontsize=8)
ax = axes[2]
words_true = np.exp(val_y.numpy() * t_std + t_mean)
words_pred = np.exp(pred * t_std + t_mean)
ax.scatter(words_true, words_pred, s=6, alpha=0.4)
lims = [min(words_true.min(), words_pred.min()), max(words_true.max(), words_pred.max())]
ax.plot(lims, lims, "k--", lw=1, label="perfect")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set(xlabel="true docstring length (words)", ylabel="predicted (words)", title=f"regression head on unseen modules: R^2 {fit.history[-1]['val_r2']:.2f}")  # fmt: skip
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "heads.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'heads.png'}")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Fit the linear probe on mean-pooled features (`pooling="mean"` in build_model's
#    config). Which pooling gives the better frozen features, and is that the same answer
#    as with full fine-tuning?
# 2. Change the verbalizer (`dataclasses.replace(task, verbalizer=[...])`) to words that
#    have nothing to do with the packages, e.g. " red", " green", ... Does the head's
#    starting point still help once training has run?
# 3. Predict a different target in section 4: whether a docstring has a doctest (">>>"),
#    as a 2-class head. Which of the head choices above matter for it?
# 4. Train the regressor with the backbone frozen (only `regressor.head`): how much of
#    its R^2 comes from changing the features?
