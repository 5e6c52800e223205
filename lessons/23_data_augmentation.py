# %% [markdown]
# # Lesson 23: data augmentation for text, and when it pays
#
# With few labelled rows, a model sees each label phrased only a few ways. Augmentation
# makes more rows from the ones there are, with edits that should keep the label:
#
# - **EDA** (Wei and Zou 2019, `minift/augment/eda.py`): synonym replacement, random
#   insertion, random swap, random deletion, at a rate alpha of the words. Synonyms come
#   from the base model's own embedding space (its nearest word tokens), there being no
#   thesaurus offline;
# - **paraphrase by sampling** (`minift/augment/paraphrase.py`): keep the first half of a
#   text and let the base write the rest, a crude offline stand-in for back-translation;
# - **mixup** (Zhang et al. 2018; Guo et al. 2019 for text, `minift/augment/mixup.py`):
#   train on convex combinations of pairs of pooled features and of their labels.
#
# The claim to test is the usual one: augmentation helps where data is scarce, and the
# help shrinks as the data grows. So everything runs with 10%, 25% and 100% of the
# `stdlib-package` training rows. The backbone is frozen: every text (original or
# augmented) becomes its pooled feature, and a linear head is fitted on them to
# convergence (mixup, which needs mini-batches, against the same mini-batch loop without
# it).

# %%
import random
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.augment import SynonymTable, eda, mix_batch, paraphrase, random_swap, train_head
from minift.claims import claim
from minift.metrics import compare, mean_se
from minift.recipes.adapt import features_of
from minift.recipes.finetune import FinetuneConfig, build_model
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.train.features import fit_linear_head
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "23")
SEEDS = [0, 1] if FAST else [0, 1, 2]
FRACTIONS = [0.1, 0.25, 1.0]
COPIES, ALPHA, L2, L = 4, 0.1, 1e-2, 24
base, enc = load_base()
synonyms = SynonymTable(base.transformer.wte.weight.detach(), enc, k=5)
print(f"fast mode: {FAST}; seeds {SEEDS}; {len(synonyms.neighbours)} words with synonyms")
for w in ("socket", "message", "widget", "logger", "element"):
    print(f"  {w}: {synonyms(w)}")

# %% [markdown]
# ## 1. What the edits look like
# Each EDA copy applies one of the four edits, drawn at random, to alpha = 10% of the
# words (at least one). A paraphrase keeps half of the text's tokens and samples the rest
# at temperature 0.8. Both are seeded: a row's copies are a function of the seed and the
# text.

# %%
task = get_task("stdlib-package", seed=0)
example = task.train[0]["text"]
rng = random.Random(0)
for op in ("synonym", "insert", "swap", "delete"):
    print(f"{op:8s} {eda(example, ALPHA, rng, synonyms, op)}")
print(f"{'sampled':8s} {paraphrase(base, enc, [example], seed=0)[0]!r}")
print(f"{'original':8s} {example}")


# %% [markdown]
# ## 2. Augmented training sets, from 10% to 100% of the rows
# For each seed (another shuffle of the task's texts), the rows of each fraction are the
# first 10% / 25% / 100% of every class, so the smaller sets are inside the larger ones
# and each row has the same copies in all three.


# %%
def augmented(rows, seed):
    """COPIES EDA copies and one paraphrase of each row, seeded by (seed, text)."""
    copies = [
        {
            "text": eda(r["text"], ALPHA, random.Random(f"{seed}:{k}:{r['text']}"), synonyms),
            "label": r["label"],
        }  # fmt: skip
        for r in rows
        for k in range(COPIES)
    ]
    para = paraphrase(base, enc, [r["text"] for r in rows], seed=seed)
    return copies, [{"text": p, "label": r["label"]} for p, r in zip(para, rows)]


def subset(rows, fraction, num_labels):
    by = {c: [i for i, r in enumerate(rows) if r["label"] == c] for c in range(num_labels)}
    keep = sorted(i for c, ix in by.items() for i in ix[: max(3, round(fraction * len(ix)))])
    return keep


results: dict[tuple[float, str], list[float]] = {}
correct: dict[tuple[float, str], list[np.ndarray]] = {}
empty_copies, n_copies = 0, 0
for seed in SEEDS:
    task = get_task("stdlib-package", seed=seed)
    model = build_model(base, task, enc, FinetuneConfig(max_len=L))
    K = task.num_labels
    X, y = features_of(model, task, enc, task.train, L)
    Xv, yv = features_of(model, task, enc, task.val, L)
    eda_rows, para_rows = augmented(task.train, seed)
    empty_copies += sum(not r["text"].strip() for r in eda_rows + para_rows)
    n_copies += len(eda_rows) + len(para_rows)
    Xe, ye = features_of(model, task, enc, eda_rows, L)
    Xp, yp = features_of(model, task, enc, para_rows, L)
    for fraction in FRACTIONS:
        keep = torch.tensor(subset(task.train, fraction, K))
        keep_eda = (keep[:, None] * COPIES + torch.arange(COPIES)).flatten()
        heads = {
            "none": fit_linear_head(X[keep], y[keep], K, l2=L2),
            "EDA": fit_linear_head(
                torch.cat([X[keep], Xe[keep_eda]]), torch.cat([y[keep], ye[keep_eda]]), K, l2=L2
            ),  # fmt: skip
            "paraphrase": fit_linear_head(
                torch.cat([X[keep], Xp[keep]]), torch.cat([y[keep], yp[keep]]), K, l2=L2
            ),  # fmt: skip
            "SGD head": train_head(X[keep], y[keep], K, alpha=None, seed=seed),
            "SGD head + mixup": train_head(X[keep], y[keep], K, alpha=0.4, seed=seed),
        }
        for name, (W, b) in heads.items():
            right = ((Xv @ W.T + b).argmax(-1) == yv).double().numpy()
            results.setdefault((fraction, name), []).append(float(right.mean()))
            correct.setdefault((fraction, name), []).append(right)
        print(f"seed {seed}, {fraction:>4.0%} of the rows ({len(keep)}): " + ", ".join(f"{n} {results[(fraction, n)][-1]:.3f}" for n in heads))  # fmt: skip

# %% [markdown]
# ## 3. The gain, and how it shrinks
# Each method's gain is over its own baseline: EDA and paraphrase over the plain head on
# the same rows, mixup over the same mini-batch loop without mixing. Mean ± standard
# error over the seeds; the paired comparison pools the validation rows of all seeds.

# %%
PAIRS = [("EDA", "none"), ("paraphrase", "none"), ("SGD head + mixup", "SGD head")]
gain = {}
print(f"{'rows':>6s} " + "".join(f"{m + ' vs ' + b:>34s}" for m, b in PAIRS))
for fraction in FRACTIONS:
    cells = []
    for m, b in PAIRS:
        diffs = [a - c for a, c in zip(results[(fraction, m)], results[(fraction, b)])]
        gain[(fraction, m)] = (np.mean(diffs), mean_se(diffs).se if len(diffs) > 1 else float("nan"))  # fmt: skip
        cells.append(f"{gain[(fraction, m)][0]:>+24.3f} ± {gain[(fraction, m)][1]:.3f}")
    print(f"{fraction:>6.0%} " + "".join(f"{c:>34s}" for c in cells))
paired = {
    (fraction, m): compare(
        m, np.concatenate(correct[(fraction, m)]), b, np.concatenate(correct[(fraction, b)])
    )  # fmt: skip
    for fraction in FRACTIONS
    for m, b in PAIRS
}
for (fraction, _), c in paired.items():
    print(f"{fraction:>4.0%}: {c}")
best = max((m for m, _ in PAIRS), key=lambda m: gain[(0.1, m)][0])
shrink = gain[(0.1, best)][0] - gain[(1.0, best)][0]
print(f"the best at 10% is {best}: {gain[(0.1, best)][0]:+.3f} at 10%, {gain[(1.0, best)][0]:+.3f} at 100% (the gain shrinks by {shrink:.3f})")  # fmt: skip

# %% [markdown]
# The invariants the edits promise, checked on every copy made here: no copy is empty,
# and a swap-only copy of each training text keeps its multiset of words. Mixup's rows are
# convex combinations of two rows with the same weight on their labels.

# %%
swaps_ok = all(
    sorted(random_swap(r["text"].split(), ALPHA, random.Random(i))) == sorted(r["text"].split())
    for i, r in enumerate(task.train)
)
g = torch.Generator().manual_seed(0)
Y = torch.nn.functional.one_hot(y[:16], K).double()
Xm, Ym, lam = mix_batch(X[:16], Y, 0.4, g)
mix_ok = bool(torch.allclose(Ym.sum(-1), torch.ones(16, dtype=torch.float64)) and 0 <= lam <= 1)
print(f"{empty_copies} empty copies of {n_copies}; swaps keep the words: {swaps_ok}; mixup lambda {lam:.2f}")  # fmt: skip

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
ax = axes[0]
for name in ("none", "EDA", "paraphrase", "SGD head", "SGD head + mixup"):
    means = [np.mean(results[(f, name)]) for f in FRACTIONS]
    ses = [mean_se(results[(f, name)]).se if len(SEEDS) > 1 else 0.0 for f in FRACTIONS]
    ax.errorbar([100 * f for f in FRACTIONS], means, yerr=ses, marker="o", capsize=3, label=name)
ax.set(xscale="log", xlabel="% of the training rows", ylabel=f"val accuracy, mean of {len(SEEDS)} seeds", title="accuracy against data")  # fmt: skip
ax.legend(fontsize=8)
ax = axes[1]
for m, b in PAIRS:
    ax.errorbar([100 * f for f in FRACTIONS], [gain[(f, m)][0] for f in FRACTIONS], yerr=[0 if np.isnan(gain[(f, m)][1]) else gain[(f, m)][1] for f in FRACTIONS], marker="o", capsize=3, label=f"{m} - {b}")  # fmt: skip
ax.axhline(0, color="black", lw=0.6)
ax.set(xscale="log", xlabel="% of the training rows", ylabel="accuracy gain (± 1 SE over seeds)", title="what augmentation adds")  # fmt: skip
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "augmentation.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'augmentation.png'}")

# %% [markdown]
# ## What the numbers say

# %%
claim("no augmented copy is empty (deletion keeps a word; a paraphrase keeps half the text)", empty_copies == 0, f"{empty_copies} of {n_copies}")  # fmt: skip
claim("a random swap keeps every training text's multiset of words, and mixup's soft labels sum to 1", swaps_ok and mix_ok, f"{len(task.train)} texts swapped")  # fmt: skip
claim(f"{best}, the best augmentation at 10% of the rows, gains more there than at 100%", shrink > 0, f"{gain[(0.1, best)][0]:+.3f} vs {gain[(1.0, best)][0]:+.3f}", at_scale=True)  # fmt: skip
claim(f"{best} helps at 10% of the rows beyond noise", paired[(0.1, best)].difference > 0 and not paired[(0.1, best)].within_noise, str(paired[(0.1, best)]), at_scale=True)  # fmt: skip
claim("no augmentation helps beyond noise with all the rows", all(paired[(1.0, m)].within_noise or paired[(1.0, m)].difference < 0 for m, _ in PAIRS), "; ".join(str(paired[(1.0, m)]) for m, _ in PAIRS), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Raise alpha to 0.3 and the copies to 16 (the paper's setting for small sets). Does
#    EDA help more at 10%, or do the copies drift from their labels?
# 2. Look at the synonym table: find neighbours that are antonyms or unrelated. Restrict
#    the table to a similarity of at least 0.5: what fraction of words keeps a synonym?
# 3. Paraphrase with `keep=0.75` and then `keep=0.25`. Which keeps the label better, and
#    which adds more variety?
# 4. Mixup with alpha 0.1 (mostly near-originals) and 2.0 (mostly half-and-half mixes).
# 5. Augment inside fine-tuning rather than on frozen features: add the EDA copies to a
#    JSONL of the task's rows and run `minift finetune --task rows.jsonl --method lora`.
