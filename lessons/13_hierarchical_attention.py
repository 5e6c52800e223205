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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from minift.longctx.hierarchical import (
    GatedSegmentEnsemble,
    HANClassifier,
    HierarchicalTransformer,
    segment_batch,
)
from minift.longctx.task import MARKER
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
# Documents of 2-5 segments here (the task's defaults run to 20,000 tokens; the budget of
# a lesson on a laptop CPU does not). No distractors: the key occurs once, after the marker.

# %%
LENGTHS = (150, 350) if FAST else (2 * L, 4 * L)
task = get_task(
    "long-passkey", seed=0, distractors=0, min_tokens=LENGTHS[0], max_tokens=LENGTHS[1],
    n_train=512, n_val=64,
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


at = marker_token(task.val[0])
print(f"a document of {len(val_ids[0])} tokens = {-(-len(val_ids[0]) // L)} segments of {L}")
print(f"marker at token {at} (segment {at // L}): ...{enc.decode(val_ids[0][at - 6 : at + 7])!r}...")  # fmt: skip
marker_seg = [marker_token(r) // L for r in task.val]
seen = sum(m == 0 for m in marker_seg) / len(task.val)
print(f"the marker lies in the first {L} tokens in {seen:.0%} of the val documents")
print(f"so a truncated model can reach about {seen + (1 - seen) / task.num_labels:.2f} at best")

# %% [markdown]
# ## 2. The readers, before training
# `segment_batch` right-pads segments to L and documents to S segments; only real segments
# go through the GPT, and every pooling skips padding. HAN's weights sum to one at both
# levels; the gated ensemble's output is exactly the mixture of its members.

# %%
torch.manual_seed(0)
batch = segment_batch(val_ids[:4], L, PAD)
print(f"batch: idx {tuple(batch['idx'].shape)} (B, S, L), real segments per doc {batch['segment_mask'].sum(1).tolist()}")  # fmt: skip
han = HANClassifier(copy.deepcopy(base), task.num_labels).eval()
gated = GatedSegmentEnsemble(copy.deepcopy(base), task.num_labels).eval()
with torch.no_grad():
    out = han(**batch)
    real = batch["segment_mask"].bool()
    print(f"HAN word weights sum per real segment: {out.token_weights.sum(-1)[real].min():.4f} .. {out.token_weights.sum(-1)[real].max():.4f}")  # fmt: skip
    print(f"HAN segment weights sum per document: {out.segment_weights.sum(-1).tolist()}")
    g = gated(**batch)
    mix = (g.segment_weights[..., None] * g.segment_logits.softmax(-1)).sum(1)
    print(f"gated: max |exp(logits) - sum_s g_s p(y|s)| = {(g.logits.exp() - mix).abs().max():.2e}")
T = max(len(d) for d in val_ids)
print(f"attention scores for the longest doc ({T} tokens): dense {T * T:,}, segments {-(-T // L) * L * L:,}")  # fmt: skip

# %% [markdown]
# ## 3. Train each reader, against a truncated dense model
# The pretrained GPT stays frozen (so a step costs one forward pass of the backbone; the
# readers are small). The baseline is the same GPT truncated to its first L tokens, read
# by the same HAN pooling: the comparison is about what each model can see. Same rows,
# seed and steps for all; accuracy on the 64 val documents.

# %%
STEPS = 40 if FAST else 140
BATCH = 8
READERS = {
    "truncated": lambda gpt: HANClassifier(gpt, task.num_labels),
    "han": lambda gpt: HANClassifier(gpt, task.num_labels),
    "transformer": lambda gpt: HierarchicalTransformer(gpt, task.num_labels, max_segments=8),
    "gated": lambda gpt: GatedSegmentEnsemble(gpt, task.num_labels),
}


def make_batch(kind: str, docs, labels) -> dict:
    b = segment_batch(docs, L, PAD, max_segments=1 if kind == "truncated" else 8)
    b["labels"] = torch.tensor(labels)
    return b


def accuracy(model, kind: str) -> tuple[float, list]:
    outs, correct = [], 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(val_ids), 16):
            b = make_batch(kind, val_ids[i : i + 16], val_y[i : i + 16])
            out = model(**b)
            correct += int((out.logits.argmax(-1) == b["labels"]).sum())
            outs.append(out)
    return correct / len(val_ids), outs


results, models = {}, {}
for kind, build in READERS.items():
    torch.manual_seed(0)
    model = build(copy.deepcopy(base))
    model.backbone.requires_grad_(False)

    def batch_fn(step: int, micro: int, kind=kind) -> dict:
        g = torch.Generator().manual_seed(step * 1_009 + micro)
        rows = torch.randint(0, len(train_ids), (BATCH,), generator=g).tolist()
        return make_batch(kind, [train_ids[i] for i in rows], [train_y[i] for i in rows])

    config = TrainConfig(
        steps=STEPS, lr=3e-2, warmup_steps=5, weight_decay=0.0, eval_every=0, progress=False
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = Trainer(
        model,
        config,
        batch_fn,
        lambda m, b: (m(**b).loss, {}),
        param_groups=[{"params": trainable}],
    ).fit()
    acc, _ = accuracy(model, kind)
    results[kind], models[kind] = (acc, result.seconds, sum(p.numel() for p in trainable)), model
    print(f"{kind:11s} val accuracy {acc:.3f}  ({sum(p.numel() for p in trainable):,} trained parameters, {result.seconds:.1f}s)")  # fmt: skip
print(f"chance {1 / task.num_labels:.2f}")

# %% [markdown]
# ## 4. Where the attention over segments lands
# The gated ensemble's gate g_s and HAN's segment attention b_s are weights over the
# segments of one document. If a reader learnt the task, they should sit on the segment
# that holds the marker, wherever it is in the document.

# %%
hits = {}
for kind in ("han", "gated"):
    _, outs = accuracy(models[kind], kind)
    weights = [w for o in outs for w in o.segment_weights]
    on_marker = [float(w[m]) for w, m in zip(weights, marker_seg)]
    top = [int(w.argmax()) == m for w, m in zip(weights, marker_seg)]
    n_seg = [-(-len(d) // L) for d in val_ids]
    uniform = sum(1 / n for n in n_seg) / len(n_seg)
    hits[kind] = weights
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
    ax.axvspan(marker - 0.3, marker + 0.7, color="gold", alpha=0.3, label="marker's segment")
    ax.set(xlabel="segment", title=f"val doc {i}: {len(val_ids[i])} tokens")
axes[0].set_ylabel("weight over segments")
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "segment_attention.png", dpi=100)
plt.close(fig)
print(f"plot saved to {OUT / 'segment_attention.png'}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(list(results), [r[0] for r in results.values()], color=["gray", "C0", "C2", "C1"])
ax.axhline(1 / task.num_labels, color="k", ls=":", label="chance")
ax.axhline(seen + (1 - seen) / task.num_labels, color="r", ls="--", label="truncated ceiling")
ax.set(ylabel="val accuracy", title=f"long-passkey, {LENGTHS[0]}-{LENGTHS[1]} tokens, L = {L}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "readers.png", dpi=100)
plt.close(fig)
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. `minift.recipes.long_finetune.finetune_long` trains the backbone too (at a lower rate
#    than the reader). Does HAN learn the task within the same steps then?
# 2. Make the task harder with `distractors=2`: every key also appears without the marker.
#    Which reader still finds the answer, and does its gate still land on the marker?
# 3. With `votes=3` the label is the majority of three marked keys, far apart. Can a
#    gated ensemble (a weighted *average* of segment predictions) count votes?
