# %% [markdown]
# # Lesson 36: loss functions and regularization
#
# With little data, fine-tuning memorises: the training loss keeps falling while the
# validation loss turns back up. The training choices that fight this, each one small:
#
# - **label smoothing** (Szegedy et al. 2016): train against 1 - eps on the right token
#   and eps spread over all, `minift/train/regularization.py`;
# - **weight decay**, decoupled (AdamW, Loshchilov and Hutter 2019) against **L2 in the
#   loss**, which Adam rescales per weight;
# - **dropout** on and off, and **R-Drop** (Liang et al. 2021): two dropout passes made to agree;
# - **gradient clipping** by norm; **learning-rate schedules** (constant, linear, cosine;
#   warmup); **early stopping** on the validation loss (`TrainConfig(patience=...)`).
#
# One job for all of them: the pydocs base fine-tuned on a deliberately small slice of
# `pycode` (the standard library's source), so that it can overfit. Every run takes the
# same steps on the same batches; what changes is one setting at a time against the
# baseline (AdamW at 1e-3, no decay, no dropout, clipping at 1.0, cosine with 5 warmup
# steps). We report the train loss on the slice, the validation loss on held-out modules,
# and the gap between them.

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
from minift.model.attention import SelfAttention
from minift.recipes.pretrain import load_base
from minift.train import TrainConfig, Trainer
from minift.train.regularization import lm_loss_fn
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "36")
base, enc = load_base()
B, T = 8, min(32, base.config.block_size)
STEPS = 12 if FAST else 60
N_VAL = 32 if FAST else 96
train_slice = corpus_tokens("pycode", "train", enc)[:4000]  # small on purpose
val_tokens = corpus_tokens("pycode", "val", enc)
batches = window_batches(train_slice, B, T, seed=0)


def fixed_windows(tokens, n):
    starts = np.linspace(0, len(tokens) - T - 2, n).astype(int)
    return torch.from_numpy(np.stack([tokens[s : s + T + 1].astype(np.int64) for s in starts]))


val, train_eval = fixed_windows(val_tokens, N_VAL), fixed_windows(train_slice, 64)
print(f"fast mode: {FAST}; {len(train_slice)} training tokens, {STEPS} steps of {B}x{T}")


@torch.no_grad()
def window_losses(model, windows) -> np.ndarray:
    model.eval()
    logits = model(windows[:, :-1]).logits.float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1), reduction="none"
    )
    return nll.view(len(windows), T).mean(1).numpy()


def with_dropout(model, p):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if isinstance(m, SelfAttention):
            m.attn_dropout = p
    return model


BASELINE = dict(steps=STEPS, lr=1e-3, warmup_steps=5, weight_decay=0.0, grad_clip=1.0, schedule="cosine", progress=False)  # fmt: skip


def run(name, dropout=0.0, loss=None, **changes):
    model = with_dropout(copy.deepcopy(base), dropout)
    config = TrainConfig(**{**BASELINE, **changes})
    kw = {"loss_fn": loss} if loss is not None else {}
    if config.patience is not None:
        kw["eval_fn"] = lambda m: {"val_loss": float(window_losses(m, val).mean())}
    result = Trainer(model, config, batches, **kw).fit()
    tr, va = window_losses(model, train_eval), window_losses(model, val)
    runs[name] = dict(train=tr, val=va, gap=va.mean() - tr.mean(), result=result, model=model)
    print(
        f"{name:28s} train {tr.mean():.3f}  val {va.mean():.3f}  gap {va.mean() - tr.mean():+.3f}"
    )


runs = {}
print(f"{'base, not fine-tuned':28s} train {window_losses(base, train_eval).mean():.3f}  val {window_losses(base, val).mean():.3f}")  # fmt: skip
run("baseline")

# %% [markdown]
# ## Label smoothing, decay against L2, dropout and R-Drop
# L2 in the loss adds (lambda/2) ||W||^2 to the loss, so its gradient lambda W goes through
# Adam's per-weight normalisation; decoupled decay shrinks W by lr * lambda directly.
# Both use lambda = 0.1 on the weight matrices here.

# %%
run("label smoothing 0.1", loss=lm_loss_fn(label_smoothing=0.1))
run("decoupled decay 0.1 (AdamW)", weight_decay=0.1)
run("L2 in the loss 0.1 (Adam)", loss=lm_loss_fn(l2=0.1))
run("dropout 0.1", dropout=0.1)
run("dropout 0.1 + R-Drop 1.0", dropout=0.1, loss=lm_loss_fn(r_drop=1.0))


def matrix_norm(model):
    return float(sum((p.detach() ** 2).sum() for p in model.parameters() if p.dim() >= 2) ** 0.5)


norms = {n: matrix_norm(runs[n]["model"]) for n in ("baseline", "decoupled decay 0.1 (AdamW)", "L2 in the loss 0.1 (Adam)")}  # fmt: skip
print("norm of the weight matrices after training:", {k: round(v, 3) for k, v in norms.items()})

# %% [markdown]
# ## Clipping and schedules

# %%
run("no gradient clipping", grad_clip=None)
run("constant schedule", schedule="constant")
run("linear schedule", schedule="linear")
run("cosine, no warmup", warmup_steps=0)

# %% [markdown]
# ## Early stopping
# Evaluate every few steps; stop after `patience` evaluations without a new best, and put
# the best weights back (`restore_best`). Trained for twice the baseline's steps, so the
# validation loss has room to turn up.

# %%
EVERY, PATIENCE = (2, 2) if FAST else (5, 3)
run("early stopping", steps=2 * STEPS, eval_every=EVERY, patience=PATIENCE, restore_best=True)
es = runs["early stopping"]["result"]
es_curve = [(h["step"], h["val_loss"]) for h in es.history if "val_loss" in h]
print(f"stopped early: {es.stopped_early} after {es.steps_done} steps; best val loss {es.best:.4f} at step {es.best_step}")  # fmt: skip
rule_step = min(es.best_step + EVERY * PATIENCE, 2 * STEPS)  # where the rule says it stops
restored = float(runs["early stopping"]["val"].mean())

# %% [markdown]
# ## The table, with the noise
# Each setting against the baseline on the same validation windows (paired bootstrap).

# %%
print(f"{'setting':28s} {'val loss':>22s}  {'gap':>7s}  vs baseline")
for name, r in runs.items():
    verdict = (
        ""
        if name == "baseline"
        else compare(name, r["val"], "baseline", runs["baseline"]["val"]).verdict
    )
    print(f"{name:28s} {str(mean_se(r['val'])).split(' (')[0]:>22s}  {r['gap']:+.3f}  {verdict}")

fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
names = list(runs)
ax = axes[0]
ax.barh(names, [runs[n]["gap"] for n in names], color="tab:orange")
ax.set(xlabel="validation loss - train loss", title="the train/validation gap")
ax.invert_yaxis()
ax = axes[1]
ax.plot(*zip(*es_curve), "o-", label="validation loss")
ax.axvline(es.best_step, color="green", ls=":", label=f"best (step {es.best_step}), restored")
ax.axvline(es.steps_done, color="red", ls=":", label=f"stopped (step {es.steps_done})")
ax.set(xlabel="step", ylabel="val loss", title=f"early stopping, patience {PATIENCE}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "regularization.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'regularization.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims follow from the rules themselves; the last are what the literature
# reports, checked on this small base and this small slice.

# %%
claim("early stopping stops exactly where its rule says (patience evaluations after the best, or at the last step)", es.steps_done == rule_step, f"best {es.best_step}, stopped {es.steps_done}, rule {rule_step}")  # fmt: skip
claim("restore_best gives back the weights of the best evaluation", abs(restored - es.best) < 1e-5, f"{restored:.5f} vs {es.best:.5f}")  # fmt: skip
claim("decoupled decay leaves smaller weight matrices than no decay", norms["decoupled decay 0.1 (AdamW)"] < norms["baseline"], f"{norms['decoupled decay 0.1 (AdamW)']:.3f} vs {norms['baseline']:.3f}")  # fmt: skip
claim("fine-tuning on the small slice opens a train/validation gap wider than the base's", runs["baseline"]["gap"] > window_losses(base, val).mean() - window_losses(base, train_eval).mean(), f"{runs['baseline']['gap']:+.3f}")  # fmt: skip
narrower = [n for n in ("label smoothing 0.1", "dropout 0.1", "dropout 0.1 + R-Drop 1.0") if runs[n]["gap"] < runs["baseline"]["gap"]]  # fmt: skip
claim("label smoothing, dropout and R-Drop each narrow the train/validation gap", len(narrower) == 3, f"narrower: {narrower}", at_scale=True)  # fmt: skip
best = min(runs, key=lambda n: runs[n]["val"].mean())
cmp = compare(best, runs[best]["val"], "baseline", runs["baseline"]["val"])
claim("some regularizer beats the unregularized baseline's validation loss beyond noise", best != "baseline" and not cmp.within_noise and cmp.difference < 0, str(cmp), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Raise label smoothing to 0.3. The train loss cannot reach 0 any more: what is its
#    floor for a vocabulary of V tokens (hint: the smoothed target's entropy)?
# 2. Make the slice 10x larger. Which regularizers still help?
# 3. Swap the optimizer to SGD (`TrainConfig(optimizer="sgd")`) and compare decoupled decay
#    with L2 again. Why do they now give the same update?
# 4. Sweep R-Drop's alpha (0.3, 1, 3). Where does the KL term start to hurt the fit?
# 5. Early stopping uses the validation set to choose a step: report its loss on a third,
#    untouched set of windows. How optimistic was the number it stopped on?
