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
#    features once and fits only a linear model on them (a "linear probe"). Fitted to
#    convergence, it is the baseline every parameter-efficient method must beat.
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

from minift.claims import claim
from minift.data.batching import classification_batch
from minift.data.corpus import load_corpus
from minift.data.tasks import DEFAULT_TASK, summary_line
from minift.metrics import accuracy_se, compare
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
pool_diff = 0.0  # the largest difference over both checks and both poolings
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
        pool_diff = max(pool_diff, (pooled - by_hand).abs().max().item(), (pooled - alone).abs().max().item())  # fmt: skip
        print(f"{pooling:4s} pooling: vs by hand max |diff| {(pooled - by_hand).abs().max():.1e}; alone vs in the padded batch {(pooled - alone).abs().max():.1e}")  # fmt: skip

results = {}
for pooling in ("last", "mean"):
    run = dataclasses.replace(config, method="full", pooling=pooling)
    results[f"full, {pooling} pooling"] = r = finetune(task, base, enc, run)
    print(
        f"full fine-tuning with {pooling} pooling: val accuracy {r.metric:.3f} ({r.seconds:.1f}s)"
    )
print(compare("last pooling", results["full, last pooling"].val_scores, "mean pooling", results["full, mean pooling"].val_scores))  # fmt: skip

# %% [markdown]
# ## 2. Where the head starts: the label words
# The last input token is the template's ":", where the language model predicts the next
# word. `init_head(verbalizer_ids(task, enc))` copies the output embeddings of the first
# token of each of the 6 label words into the head's rows (and zeroes its bias), so the
# head's first scores are the language model's next-token logits for those tokens,
# restricted to them. Checked:

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
head_vs_lm = (zero_shot - lm_restricted).abs().max().item()
print(f"head logits vs the LM's next-token logits for those words: max |diff| {head_vs_lm:.1e}")

# %% [markdown]
# So the untrained head is a *zero-shot* classifier: the language model's guess of the
# next word. How good a guess? A language model has a prior over words that holds
# whatever the text; if the predictions below pile onto one label, that prior dominates.
# *Calibrating* removes it: subtract each label's mean score over the validation texts
# and keep what varies with the text (in the spirit of Zhao et al. 2021, "Calibrate
# before use").

# %%
truth = b["labels"]
pred_zero = zero_shot.argmax(-1)
counts = torch.bincount(pred_zero, minlength=task.num_labels).tolist()
calibrated = (zero_shot - zero_shot.mean(0)).argmax(-1)
zero_shot_acc = (pred_zero == truth).float().mean().item()
calibrated_acc = (calibrated == truth).float().mean().item()
print(f"zero-shot accuracy {zero_shot_acc:.3f} (chance {1 / task.num_labels:.3f}); predictions per label {dict(zip(task.labels, counts))}")  # fmt: skip
print(f"calibrated zero-shot accuracy {calibrated_acc:.3f}; predictions per label {dict(zip(task.labels, torch.bincount(calibrated, minlength=task.num_labels).tolist()))}")  # fmt: skip

# %% [markdown]
# Does that starting point help training? Two baselines tell what "help" means: the
# validation loss of a uniform guess over K labels is ln K, and a random head (rows drawn
# with std 0.02, a task without a verbalizer) starts close to it. The same runs with
# each head: fine-tuning everything, and training the head alone with AdamW steps (method
# "layerwise" with k = 0: the head and the final norm train, the backbone is frozen),
# each pair at the same learning rate (the registered one of its method, not tuned for
# this comparison) and batches.

# %%
random_task = dataclasses.replace(task, verbalizer=[])
head_only = dataclasses.replace(config, method="layerwise", options={"k": 0})
results["full, random head"] = finetune(random_task, base, enc, dataclasses.replace(config, method="full"))  # fmt: skip
results["head only, label-word head"] = finetune(task, base, enc, head_only)
results["head only, random head"] = finetune(random_task, base, enc, head_only)
results["full, label-word head"] = results["full, last pooling"]
HEAD_RUNS = ("full, label-word head", "full, random head", "head only, label-word head", "head only, random head")  # fmt: skip
print(f"ln K = ln {task.num_labels} = {math.log(task.num_labels):.2f}: the val loss of a uniform guess")  # fmt: skip
for name in HEAD_RUNS:
    r = results[name]
    acc = [h["val_accuracy"] for h in r.history if "val_accuracy" in h]
    loss0 = r.history[0]["val_loss"]
    print(f"{name:26s}: step 0 val accuracy {acc[0]:.3f} (val loss {loss0:.2f}), after {config.train.steps} steps {acc[-1]:.3f} (val loss {r.val_loss:.2f})")  # fmt: skip
head_full = compare("label-word head", results["full, label-word head"].val_scores, "random head", results["full, random head"].val_scores)  # fmt: skip
head_only_cmp = compare("label-word head", results["head only, label-word head"].val_scores, "random head", results["head only, random head"].val_scores)  # fmt: skip
print(f"after full fine-tuning: {head_full}")
print(f"after training the head alone: {head_only_cmp}")
loss_words = results["full, label-word head"].history[0]["val_loss"]
loss_random = results["full, random head"].history[0]["val_loss"]
top_label = max(range(task.num_labels), key=lambda i: counts[i])

# %% [markdown]
# Why might the label words make a poor start on a small model? The head copies the
# output embeddings of the words' *first tokens*, so its scores are the language
# model's next-token logits after the template. Those logits carry the model's prior
# over words (how often each follows the template anywhere) far more than anything
# about this text; a model pretrained for minutes on a small corpus has learnt little
# else. A prior that favours one word makes a confident, mostly wrong classifier: its
# validation loss lies *above* ln K, where a random head's lies near it. Whether that is
# what happened here is in the numbers above and the claims at the end.

# %% [markdown]
# ## 3. Feature extraction: the converged linear probe
# With a frozen backbone the features of a text never change, so there is no reason to
# recompute them at every step. `finetune(method="probe")` extracts the pooled features
# of every training row once, then fits multinomial logistic regression on the (n, C)
# matrix to its optimum: full-batch L-BFGS in float64 on standardised features, with an
# L2 strength chosen by 3-fold cross-validation on the *training* rows, never on the
# validation rows the result is reported on (`minift/peft/probe.py`). No optimizer steps
# follow; `result.fit` holds what it chose. The problem is convex, so fitted to
# convergence the probe is the best any linear head on these features can do.

# %%
fp = results["probe"] = finetune(task, base, enc, dataclasses.replace(config, method="probe"))
cv = ", ".join(f"{k:g}: {v:.3f}" for k, v in fp.fit["cv_accuracy"].items())
print(f"library probe: L2 by 3-fold CV on {fp.fit['rows']} training rows {{{cv}}} -> {fp.fit['l2']:g}; train accuracy {fp.fit['train_accuracy']:.3f}, val accuracy {fp.metric:.3f} ({fp.seconds:.1f}s)")  # fmt: skip

# %% [markdown]
# The same from scratch, at the L2 the library chose: extract once, standardise, fit.

# %%
t0 = time.perf_counter()
extractor = build_model(base, task, enc, config).eval()


@torch.no_grad()
def extract(rows) -> torch.Tensor:
    feats = []
    for i in range(0, len(rows), 128):
        bb = batch_of(rows[i : i + 128])
        feats.append(extractor.features(bb["idx"], attention_mask=bb["attention_mask"]))
    return torch.cat(feats).double()


X_train, X_val = extract(task.train), extract(task.val)
y_train = torch.tensor([r["label"] for r in task.train])
y_val = torch.tensor([r["label"] for r in task.val])
t_extract = time.perf_counter() - t0
mu, sd = X_train.mean(0), X_train.std(0, unbiased=False) + 1e-8  # L-BFGS likes round problems


def fit_probe(X, y, l2: float) -> torch.nn.Linear:
    probe = torch.nn.Linear(X.shape[1], task.num_labels, dtype=torch.float64)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=300, tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(X), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


t1 = time.perf_counter()
scratch = fit_probe((X_train - mu) / sd, y_train, fp.fit["l2"])
with torch.no_grad():
    scratch_pred = scratch((X_val - mu) / sd).argmax(-1)
t_fit = time.perf_counter() - t1
scratch_scores = (scratch_pred == y_val).double().tolist()
library_vs_scratch = compare("library probe", fp.val_scores, "from scratch", scratch_scores)
print(f"from scratch: features of {len(X_train) + len(X_val)} texts extracted in {t_extract:.2f}s, fitted in {t_fit:.2f}s: val accuracy {np.mean(scratch_scores):.3f}")  # fmt: skip
print(library_vs_scratch)

# %% [markdown]
# ## 4. The probe as the baseline
# A method that trains parameters inside the network should beat the converged probe
# to be worth it (Kumar et al. 2022 compare probing and fine-tuning). Against it: full
# fine-tuning, the head alone trained by AdamW for the same steps as everything else, and
# three parameter-efficient methods of lessons 05-08 at their registered rates.

# %%
for method in ("lora", "bitfit", "prompt"):
    results[method] = finetune(task, base, enc, dataclasses.replace(config, method=method))
BASELINE_RIVALS = ("full, label-word head", "head only, label-word head", "lora", "bitfit", "prompt")  # fmt: skip
vs_probe = {name: compare(name, results[name].val_scores, "probe", fp.val_scores) for name in BASELINE_RIVALS}  # fmt: skip
for name, c in vs_probe.items():
    lr = results[name].train.lr
    print(f"{c} (lr {lr:g})")
above = [n for n, c in vs_probe.items() if c.difference > 0 and not c.within_noise]
below = [n for n, c in vs_probe.items() if c.difference < 0 and not c.within_noise]
level = [n for n, c in vs_probe.items() if c.within_noise]
print(f"above the probe beyond noise: {above or 'none'}; below it: {below or 'none'}; within noise: {level or 'none'}")  # fmt: skip

# %% [markdown]
# ## 5. A regression head: how long is the docstring?
# A target measured from real data: from a docstring's *summary line* alone, predict the
# (log) number of words in the whole docstring. Whether a function's one-line summary
# says how much more there is to say is a real question with a graded answer. The head
# has one output (`num_labels=1`) and trains with mean squared error; the targets are
# standardised (zero mean, unit variance on the training set), so predicting the mean
# scores an MSE of about 1 and R^2 = 1 - MSE / variance measures what is learned.
#
# A baseline that could explain everything away: the summary's own length. A
# least-squares line on the summary's token count gives its R^2. Does the fine-tuned
# head beat it? (Its learning rate, 1e-3, is full fine-tuning's registered one, not
# tuned for regression.)


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
r2_head = fit.history[-1]["val_r2"]
# Per summary, minus the squared error (higher is better): paired, on the same rows.
head_vs_line = compare("regression head", (-((pred - val_y.numpy()) ** 2)).tolist(), "length line", (-((base_pred - val_y.numpy()) ** 2)).tolist())  # fmt: skip
print(f"regression head: val R^2 {r2_head:.3f}, correlation {corr:.3f}; the summary-length line: R^2 {r2_len:.3f}")  # fmt: skip
print(f"minus the squared error per summary: {head_vs_line}")

# %% [markdown]
# ## 6. Plots

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

n_val = len(task.val)
fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
ax = axes[0]
for name in ("full, mean pooling", *HEAD_RUNS):
    acc = [(h["step"], h["val_accuracy"]) for h in results[name].history if "val_accuracy" in h]
    ax.plot(*zip(*acc), "o-", label=name)
ax.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax.set(xlabel="step", ylabel="validation accuracy", title="pooling and head initialisation", ylim=(0, 1))  # fmt: skip
ax.legend(fontsize=7, loc="upper left")
ax = axes[1]  # bars from 0 with one standard error
bars = {"probe (library)": fp.metric, "probe (from scratch)": float(np.mean(scratch_scores))}
bars.update({name: results[name].metric for name in BASELINE_RIVALS})
ax.barh(list(bars), list(bars.values()), xerr=[accuracy_se(a, n_val) for a in bars.values()], capsize=3, color=["C1", "C1"] + ["C0"] * len(BASELINE_RIVALS))  # fmt: skip
ax.axvline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax.invert_yaxis()
ax.set(xlabel="validation accuracy (+- 1 SE)", xlim=(0, 1), title="the converged probe and what must beat it")  # fmt: skip
ax.legend(fontsize=8, loc="lower right")
ax = axes[2]
words_true = np.exp(val_y.numpy() * t_std + t_mean)
words_pred = np.exp(pred * t_std + t_mean)
ax.scatter(words_true, words_pred, s=6, alpha=0.4)
lims = [min(words_true.min(), words_pred.min()), max(words_true.max(), words_pred.max())]
ax.plot(lims, lims, "k--", lw=1, label="perfect")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set(xlabel="true docstring length (words)", ylabel="predicted (words)", title=f"regression, unseen modules: R^2 {r2_head:.2f} (line {r2_len:.2f})")  # fmt: skip
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
fig.savefig(OUT / "heads.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'heads.png'}")

# %% [markdown]
# ## What the numbers say
# The first four statements are exact or structural and hold on any base. The others
# are what the literature reports for large pretrained models: a verbalizer start helps
# (Schick and Schuetze 2021; Lester et al. 2021 for prompts), calibration helps zero-shot
# (Zhao et al. 2021), fine-tuning beats probing in distribution (Kumar et al. 2022), PEFT
# methods clear the probe. On a 1.3M-parameter base pretrained for minutes they may not
# show: "does not hold here" is this run's answer, not a verdict on the papers.

# %%
claim("pooling over real tokens only: the same as by hand, and a text scores the same alone as in a padded batch", pool_diff < 1e-5, f"max |diff| {pool_diff:.1e}")  # fmt: skip
claim("the untrained label-word head scores are the LM's next-token logits for the label words", head_vs_lm < 1e-4, f"max |diff| {head_vs_lm:.1e}")  # fmt: skip
claim("a random head (std 0.02) starts near ln K, the loss of a uniform guess", abs(loss_random - math.log(task.num_labels)) < 0.2, f"{loss_random:.2f} vs ln {task.num_labels} = {math.log(task.num_labels):.2f}")  # fmt: skip
claim("the from-scratch probe (extract once, L-BFGS) matches the library's probe within noise", library_vs_scratch.within_noise, str(library_vs_scratch))  # fmt: skip
claim("the label-word head starts better than a random head (lower val loss at step 0)", loss_words < loss_random, f"{loss_words:.2f} vs {loss_random:.2f}; zero-shot puts {counts[top_label]} of {len(pred_zero)} rows on {task.labels[top_label]!r}", at_scale=True)  # fmt: skip
claim("calibrating the zero-shot head raises its accuracy", calibrated_acc > zero_shot_acc, f"{zero_shot_acc:.3f} -> {calibrated_acc:.3f}", at_scale=True)  # fmt: skip
claim("after full fine-tuning, the label-word head beats the random head", head_full.difference > 0 and not head_full.within_noise, str(head_full), at_scale=True)  # fmt: skip
sgd = vs_probe["head only, label-word head"]
claim(f"the converged probe beats the same head trained by AdamW for {config.train.steps} steps", sgd.difference < 0 and not sgd.within_noise, str(sgd), at_scale=True)  # fmt: skip
claim("full fine-tuning beats the converged probe", vs_probe["full, label-word head"].difference > 0 and not vs_probe["full, label-word head"].within_noise, str(vs_probe["full, label-word head"]), at_scale=True)  # fmt: skip
peft = ("lora", "bitfit", "prompt")
claim(f"every PEFT method here ({', '.join(peft)}) beats the converged probe", all(n in above for n in peft), f"above: {[n for n in peft if n in above]}; within noise: {[n for n in peft if n in level]}; below: {[n for n in peft if n in below]}", at_scale=True)  # fmt: skip
claim("the regression head predicts docstring length better than a line on the summary's length", head_vs_line.difference > 0 and not head_vs_line.within_noise, f"R^2 {r2_head:.3f} vs {r2_len:.3f}; {head_vs_line}", at_scale=True)  # fmt: skip
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
#    its R^2 comes from changing the features? (Or fit it in closed form: least squares
#    on the frozen features is the regression twin of the converged probe.)
