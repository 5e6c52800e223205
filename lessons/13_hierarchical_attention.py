# %% [markdown]
# # Lesson 13: hierarchical attention over long documents
#
# Lesson 12 made attention sparse so one model could read a long sequence. The other road
# is a hierarchy: cut the document into S segments of at most L tokens (L = the base's
# block_size), let the pretrained GPT encode every segment on its own (all segments of a
# batch in one pass), and put a small model on top that reads across segments. Attention
# costs S L^2 = T L scores instead of T^2, and there is no length limit.
#
# Three readers of the segment states (`minift/longctx/hierarchical.py`):
#
# - **HAN** (Yang et al. 2016, "Hierarchical Attention Networks"): attention pooling twice,
#   words -> segment and segments -> document:
#
#       u_t = tanh(W_w h_t + b_w),  a_t = softmax_t(u_t . c_w),  s = sum_t a_t h_t
#       u_s = tanh(W_s s_s + b_s),  b_s = softmax_s(u_s . c_s),  d = sum_s b_s s_s,  logits = W d
#
# - **hierarchical transformer** (Pappagari et al. 2019, ToBERT): one summary vector per
#   segment plus a learned segment position, a small bidirectional transformer over the
#   summaries, mean-pooled;
# - **gated ensemble**: every segment predicts the label alone, and a learned gate weighs
#   the predictions, p(y | doc) = sum_s g_s p(y | segment s), g = softmax_s(w . summary_s)
#   (a mixture of experts over segments, Jacobs et al. 1991).
#
# The task is `long-passkey` (`minift/longctx/task.py`): real `pydocs` prose with a
# phrase "passkey: Z." hidden at a uniformly random place; the label is the key. A dense
# model truncated to block_size sees the phrase only when it falls in the first L tokens.

# %%
import copy
import time
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.longctx.hierarchical import (
    GatedSegmentEnsemble,
    HANClassifier,
    HierarchicalTransformer,
    segment_batch,
)
from minift.longctx.task import MARKER
from minift.metrics import accuracy_se, compare
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.train import TrainConfig, Trainer
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "13")
print(f"fast mode: {FAST}")
base, enc = load_base(progress=False)
L = base.config.block_size
PAD = pad_id(enc)
print(f"base: {base.num_params():,} parameters, block_size L = {L}")

# %% [markdown]
# ## 1. The task and its segments
# Documents of a few segments here (the task's defaults run to 20,000 tokens; the budget
# of a lesson on a laptop CPU does not). No distractors: the key occurs once, after the
# marker. 256 validation documents (64 in fast mode): with 64, one standard error of an
# accuracy near 0.5 is 0.06, too coarse to rank four readers.

# %%
LENGTHS = (150, 350) if FAST else (2 * L, 4 * L)
task = get_task(
    "long-passkey", seed=0, distractors=0, min_tokens=LENGTHS[0], max_tokens=LENGTHS[1],
    n_train=256 if FAST else 384, n_val=64 if FAST else 256,
)  # fmt: skip
print(task.summary() if hasattr(task, "summary") else task.description)
train_ids = enc.encode_ordinary_batch([r["text"] for r in task.train])
val_ids = enc.encode_ordinary_batch([r["text"] for r in task.val])
train_y = [r["label"] for r in task.train]
val_y = [r["label"] for r in task.val]


def marker_token(row: dict) -> int:
    """Where the marker starts in the encoded document (marker_at counts tokens of the
    corpus window before the phrase went in; this counts the text's own tokens)."""
    return len(enc.encode_ordinary(row["text"][: row["text"].index(MARKER)]))


def key_token(row: dict) -> int:
    """Where the key itself (the token after "passkey:") lies in the encoded document."""
    end = row["text"].index(MARKER) + len(MARKER) + 2  # the marker, a space, the key letter
    return len(enc.encode_ordinary(row["text"][:end])) - 1


at = marker_token(task.val[0])
n_segments = [-(-len(d) // L) for d in val_ids]
print(f"val documents: {min(map(len, val_ids))} to {max(map(len, val_ids))} tokens = {min(n_segments)} to {max(n_segments)} segments of {L}")  # fmt: skip
print(f"a document of {len(val_ids[0])} tokens = {n_segments[0]} segments of {L}")
print(f"marker at token {at} (segment {at // L}): ...{enc.decode(val_ids[0][at - 6 : at + 7])!r}...")  # fmt: skip
marker_seg = [key_token(r) // L for r in task.val]  # the segment that holds the key
split = sum(marker_token(r) // L != m for r, m in zip(task.val, marker_seg)) / len(task.val)
print(f"the phrase straddles a segment boundary (marker in one segment, key in the next) in {split:.0%} of the val documents")  # fmt: skip
seen = sum(m == 0 for m in marker_seg) / len(task.val)
CEILING = seen + (1 - seen) / task.num_labels  # right when the key is seen, chance otherwise
print(f"the key lies in the first {L} tokens in {seen:.0%} of the val documents")
print(f"so a truncated model can reach about {CEILING:.2f} at best")

# %% [markdown]
# ## 2. The readers, before training
# `segment_batch` right-pads segments to L and documents to S segments; only real segments
# go through the GPT, and every pooling skips padding. HAN's weights sum to one at both
# levels; the gated ensemble's output is exactly the mixture of its members.

# %%
torch.manual_seed(0)
batch = segment_batch(val_ids[:4], L, PAD)
print(f"batch: idx {tuple(batch['idx'].shape)} (B, S, L), real segments per doc {batch['segment_mask'].sum(1).tolist()}")  # fmt: skip
han = HANClassifier(base, task.num_labels).eval()
gated = GatedSegmentEnsemble(base, task.num_labels).eval()
with torch.no_grad():
    out = han(**batch)
    real = batch["segment_mask"].bool()
    print(f"HAN word weights sum per real segment: {out.token_weights.sum(-1)[real].min():.4f} .. {out.token_weights.sum(-1)[real].max():.4f}")  # fmt: skip
    print(f"HAN segment weights sum per document: {out.segment_weights.sum(-1).tolist()}")
    g = gated(**batch)
    mix = (g.segment_weights[..., None] * g.segment_logits.softmax(-1)).sum(1)
    mix_error = (g.logits.exp() - mix).abs().max().item()
    print(f"gated: max |exp(logits) - sum_s g_s p(y|s)| = {mix_error:.2e}")
    sums = torch.cat([out.token_weights.sum(-1)[real], out.segment_weights.sum(-1)])
    han_error = (sums - 1).abs().max().item()
T = max(len(d) for d in val_ids)
SCORES_DENSE, SCORES_SEGMENTS = T * T, -(-T // L) * L * L
print(f"attention scores for the longest doc ({T} tokens): dense {SCORES_DENSE:,}, segments {SCORES_SEGMENTS:,}")  # fmt: skip

# %% [markdown]
# ## 3. Train each reader, against a truncated dense model
# The pretrained GPT stays frozen and only the small readers train. A frozen backbone
# gives a segment the same hidden states every time it reads it, so they are computed
# once and kept (`FrozenFeatures` below): a training step then costs only the reader's
# own work, which buys a learning-rate sweep for every reader. Every reader reads the
# GPT's last layer (the library's default also mixes the earlier layers with learned
# weights; that costs five times the memory traffic a step). The baseline is the same GPT truncated to its first L tokens, read by the
# same HAN pooling: the comparison is about what each model can see. Same rows, seed and
# steps for all; each reader at the best of three learning rates (two in fast mode), chosen
# on dev documents held out of the training set; accuracy on the val documents.


# %%
class FrozenFeatures(torch.nn.Module):
    """The frozen backbone with a memory: each distinct segment (its tokens and mask) goes
    through the GPT once; its last hidden states are kept (in float16) and handed back in
    the form the readers expect."""

    def __init__(self, gpt) -> None:
        super().__init__()
        self.gpt, self.config, self.memory = gpt.eval().requires_grad_(False), gpt.config, {}

    @torch.no_grad()
    def forward(self, idx, attention_mask=None, compute_logits=False, output_hidden_states=False):
        assert not output_hidden_states, "the memory keeps the last layer only"
        mask = attention_mask if attention_mask is not None else torch.ones_like(idx)
        keys = [(row.numpy().tobytes(), m.numpy().tobytes()) for row, m in zip(idx, mask)]
        new = [i for i, k in enumerate(keys) if k not in self.memory]
        if new:
            out = self.gpt(idx[new], attention_mask=mask[new], compute_logits=False)
            self.memory.update({keys[i]: out.last_hidden[j].half() for j, i in enumerate(new)})
        states = torch.stack([self.memory[k] for k in keys]).float()  # (B, L, C)
        return SimpleNamespace(last_hidden=states, aux_loss=None)


def last_layer_only(reader):
    reader.layer_weights = None  # GatedSegmentEnsemble has no `layers` option; same effect
    return reader


features = FrozenFeatures(copy.deepcopy(base))
STEPS = 30 if FAST else 150
BATCH = 8
LRS = (1e-2, 1e-1) if FAST else (1e-2, 3e-2, 1e-1)
N_DEV = 64 if FAST else 128  # training documents held out to choose each reader's rate
fit_ids, fit_y = train_ids[N_DEV:], train_y[N_DEV:]
dev_ids, dev_y = train_ids[:N_DEV], train_y[:N_DEV]
READERS = {
    "truncated": lambda gpt: HANClassifier(gpt, task.num_labels, layers="last"),
    "han": lambda gpt: HANClassifier(gpt, task.num_labels, layers="last"),
    "transformer": lambda gpt: HierarchicalTransformer(
        gpt, task.num_labels, max_segments=8, layers="last"
    ),  # fmt: skip
    "gated": lambda gpt: last_layer_only(GatedSegmentEnsemble(gpt, task.num_labels)),
}


def make_batch(kind: str, docs, labels) -> dict:
    b = segment_batch(docs, L, PAD, max_segments=1 if kind == "truncated" else 8)
    b["labels"] = torch.tensor(labels)
    return b


def accuracy(model, kind: str, docs=val_ids, labels=val_y) -> tuple[np.ndarray, list]:
    """Per document, 1.0 if the reader names the key (the scores compare() pairs)."""
    outs, correct = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(docs), 16):
            b = make_batch(kind, docs[i : i + 16], labels[i : i + 16])
            out = model(**b)
            correct += (out.logits.argmax(-1) == b["labels"]).float().tolist()
            outs.append(out)
    return np.array(correct), outs


def train_reader(kind: str, lr: float):
    torch.manual_seed(0)
    model = READERS[kind](features)

    def batch_fn(step: int, micro: int) -> dict:
        g = torch.Generator().manual_seed(step * 1_009 + micro)
        rows = torch.randint(0, len(fit_ids), (BATCH,), generator=g).tolist()
        return make_batch(kind, [fit_ids[i] for i in rows], [fit_y[i] for i in rows])

    config = TrainConfig(
        steps=STEPS, lr=lr, warmup_steps=5, weight_decay=0.0, eval_every=0, progress=False
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = Trainer(
        model, config, batch_fn, lambda m, b: (m(**b).loss, {}), param_groups=[{"params": trainable}]
    ).fit()  # fmt: skip
    return model, result, sum(p.numel() for p in trainable)


t0 = time.perf_counter()
accuracy(READERS["gated"](features), "gated", train_ids + val_ids, train_y + val_y)
print(f"hidden states of {len(features.memory)} segments computed once ({time.perf_counter() - t0:.1f}s)")  # fmt: skip
results, models, scores, losses, chosen_lr = {}, {}, {}, {}, {}
for kind in READERS:
    dev = {}
    for lr in LRS:
        model, result, n_trained = train_reader(kind, lr)
        dev[lr] = accuracy(model, kind, dev_ids, dev_y)[0].mean()
        if lr == max(dev, key=dev.get):  # the best so far (the first of equals)
            models[kind], best = model, result
    chosen_lr[kind] = lr = max(dev, key=dev.get)
    scores[kind], _ = accuracy(models[kind], kind)
    acc = scores[kind].mean()
    results[kind] = (acc, best.seconds, n_trained)
    curve = [h["loss"] for h in best.history if "loss" in h]
    losses[kind] = curve
    q = max(1, len(curve) // 4)  # training loss, mean of the first and last quarters
    print(f"{kind:11s} dev accuracy {' '.join(f'{dev[x]:.2f}@{x:g}' for x in LRS)} -> lr {lr:g}: "
          f"val accuracy {acc:.3f} +- {accuracy_se(acc, len(val_ids)):.3f}, "
          f"train loss {np.mean(curve[:q]):.2f} -> {np.mean(curve[-q:]):.2f} "
          f"({n_trained:,} trained parameters, {best.seconds:.1f}s a run)")  # fmt: skip
print(f"chance {1 / task.num_labels:.2f}; truncated ceiling {CEILING:.2f}")
vs_truncated = {k: compare(k, scores[k], "truncated", scores["truncated"]) for k in ("han", "transformer", "gated")}  # fmt: skip
for c in vs_truncated.values():
    print(c)

# %% [markdown]
# ## 4. Where the attention over segments lands
# The gated ensemble's gate g_s and HAN's segment attention b_s are weights over the
# segments of one document. If a reader learnt the task, they should sit on the segment
# that holds the marker, wherever it is in the document.

# %%
hits, top_share, uniform_share = {}, {}, {}
for kind in ("han", "gated"):
    _, outs = accuracy(models[kind], kind)
    weights = [w for o in outs for w in o.segment_weights]
    on_marker = [float(w[m]) for w, m in zip(weights, marker_seg)]
    top = [int(w.argmax()) == m for w, m in zip(weights, marker_seg)]
    uniform = sum(1 / n for n in n_segments) / len(n_segments)
    hits[kind], top_share[kind], uniform_share[kind] = weights, np.array(top, float), uniform
    print(
        f"{kind:6s}: mean weight on the marker's segment {sum(on_marker) / len(on_marker):.2f} "
        f"(uniform would give {uniform:.2f}); top segment holds the marker in "
        f"{sum(top) / len(top):.0%} of the val documents"
    )

fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), sharey=True)
for ax, i in zip(axes, range(4)):
    S = -(-len(val_ids[i]) // L)
    marker = marker_seg[i]
    for j, kind in enumerate(("han", "gated")):
        ax.bar([s + 0.4 * j for s in range(S)], hits[kind][i][:S].tolist(), width=0.4, label=kind)
    ax.axvspan(marker - 0.3, marker + 0.7, color="gold", alpha=0.3, label="key's segment")
    ax.set(xlabel="segment", title=f"val doc {i}: {len(val_ids[i])} tokens")
    ax.set_xticks(range(S))
axes[0].set_ylabel("weight over segments")
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8)  # above the panels
fig.tight_layout(rect=(0, 0, 1, 0.9))
fig.savefig(OUT / "segment_attention.png", dpi=100)
plt.close(fig)
print(f"plot saved to {OUT / 'segment_attention.png'}")

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
accs = [r[0] for r in results.values()]
ax.bar(list(results), accs, yerr=[accuracy_se(a, len(val_ids)) for a in accs], capsize=4,
       color=["gray", "C0", "C2", "C1"])  # fmt: skip
ax.axhline(1 / task.num_labels, color="k", ls=":", label="chance")
ax.axhline(CEILING, color="r", ls="--", label="truncated ceiling")
ax.set_ylim(0, 1)
ax.set(ylabel=f"val accuracy ({len(val_ids)} docs, +- 1 SE)", title=f"long-passkey, {LENGTHS[0]}-{LENGTHS[1]} tokens, L = {L}")  # fmt: skip
ax.legend(fontsize=8, loc="upper left")
window = 10  # one batch of 8 documents is noisy: the mean of the last 10 steps
for kind, curve in losses.items():
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    ax2.plot(range(window - 1, len(curve)), smooth, label=kind, alpha=0.8)
ax2.axhline(np.log(task.num_labels), color="k", ls=":", label="loss of a uniform guess")
ax2.set(xlabel="step", ylabel=f"training loss (mean of {window} steps)", title="have the readers converged?")  # fmt: skip
ax2.legend(fontsize=8, loc="best")
fig.tight_layout()
fig.savefig(OUT / "readers.png", dpi=100)
plt.close(fig)

# %% [markdown]
# ## What the numbers say
# Built from this run's numbers. At scale, hierarchical readers beat truncation on long
# documents whose label depends on text past the first block (Yang et al. 2016 on review
# classification; Pappagari et al. 2019 on call transcripts): whether they do here, with a
# frozen 1.3M-parameter backbone and a few hundred steps of a small reader, is what the
# scale claims below answer.

# %%
claim("HAN's weights sum to one at both levels, and the gated ensemble's output is exactly the mixture of its members' predictions",
      han_error < 1e-5 and mix_error < 1e-5, f"max deviations {han_error:.1e} and {mix_error:.1e}")  # fmt: skip
claim(f"encoding the longest document ({T} tokens) in segments of {L} computes fewer attention scores than dense attention over it",
      SCORES_SEGMENTS < SCORES_DENSE, f"{SCORES_SEGMENTS:,} vs {SCORES_DENSE:,}")  # fmt: skip
trunc = results["truncated"][0]
claim("the truncated model stays within noise of or below its ceiling (it cannot read a key it never sees)",
      trunc <= CEILING + 2 * accuracy_se(CEILING, len(val_ids)),
      f"{trunc:.3f} vs ceiling {CEILING:.3f}")  # fmt: skip
for kind, c in vs_truncated.items():
    claim(f"the {kind} reader beats the truncated model by more than noise", c.difference > 0 and not c.within_noise,
          f"{c.mean_a:.3f} vs {c.mean_b:.3f}, {c.difference:+.3f}, 95% CI {c.low:+.3f} to {c.high:+.3f}", at_scale=True)  # fmt: skip
for kind in ("han", "gated"):
    t, u = top_share[kind], uniform_share[kind]
    claim(f"{kind}'s top-weighted segment is the key's segment more often than a uniformly random pick would be",
          t.mean() - 2 * t.std() / np.sqrt(len(t)) > u, f"{t.mean():.0%} vs {u:.0%}", at_scale=True)  # fmt: skip
if FAST:
    print("(fast mode: a tiny base and few steps exercise the code; the numbers need normal mode)")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. `minift.recipes.long_finetune.finetune_long` trains the backbone too (at a lower rate
#    than the reader). Does HAN learn the task within the same steps then?
# 2. Make the task harder with `distractors=2`: every key also appears without the marker.
#    Which reader still finds the answer, and does its gate still land on the marker?
# 3. With `votes=3` the label is the majority of three marked keys, far apart. Can a
#    gated ensemble (a weighted *average* of segment predictions) count votes?
# 4. Fine-tune the backbone too (no FrozenFeatures then): every step pays the GPT's
#    forward and backward pass again. How many steps does the lesson's budget allow?
