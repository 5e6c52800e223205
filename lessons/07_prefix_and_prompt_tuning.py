# %% [markdown]
# # Lesson 07: prefix tuning and prompt tuning
#
# Both methods leave every weight of the model alone and train *virtual tokens*
# instead: vectors the model treats as if P more tokens had come before the text.
#
# - **Prompt tuning** (Lester et al. 2021): P trained embeddings go in front of the token
#   embeddings, `h_0 = [E_prompt ; wte[x]] + positions`. P x C parameters in all.
# - **Prefix tuning** (Li and Liang 2021): every attention layer l gets its own P trained
#   keys and values, and each query attends over them and the text's own:
#
#       Attn_l(Q, K, V) = softmax(Q [P_K^l ; K]^T / sqrt(d) + M) [P_V^l ; V]
#
#   n_layer x 2 x P x C parameters: the prefix acts on every layer directly, where a
#   soft prompt can only act through the first layer's input.
#
# A hypothesis follows from that: with the same P, the more expressive prefix should
# reach a higher accuracy. Li and Liang (2021) report prefix tuning close to full
# fine-tuning on GPT-2; Lester et al. (2021) find prompt tuning well behind on small
# models, catching up with full fine-tuning only near 10B parameters. Whether a
# 1.3M-parameter base shows the gap is what section 5 measures.
#
# The code is `minift/peft/prefix.py` and `minift/peft/prompt.py`; the model has a hook
# for each (`attn.prefix`, `GPT.soft_prompt`) and does the masks, positions and KV cache.

# %%
import copy
import dataclasses
import time

import torch

from minift.claims import claim
from minift.data.batching import classification_batch
from minift.data.tasks import DEFAULT_TASK
from minift.metrics import accuracy_se, compare
from minift.model.heads import SequenceClassifier
from minift.peft import save_adapter, trainable_report
from minift.peft.methods import METHODS
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning, drop_reparameterization
from minift.peft.prompt import PromptConfig, apply_prompt_tuning
from minift.recipes.finetune import FinetuneConfig, build_model, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.tokenizer import pad_id
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "07")
print(f"fast mode: {FAST}")
base, enc = load_base()
cfg = base.config
task = get_task(DEFAULT_TASK, seed=0)
print(f"base: {cfg.n_layer} blocks, {cfg.n_head} heads, width {cfg.n_embd}; task {task.summary()}")

# %% [markdown]
# ## 1. What the prefixes are
# One tensor holds them all: (n_layer, 2, P, C), keys and values for each layer. The
# attention hook reshapes a layer's slice into heads, (B, H, P, D), so with
# `output_attentions=True` each query's attention now spreads over P + T keys.

# %%
P = 10
torch.manual_seed(0)
clf = SequenceClassifier(copy.deepcopy(base), task.num_labels).eval()
prefixed = apply_prefix_tuning(copy.deepcopy(clf), PrefixConfig(num_virtual_tokens=P))
prompted = apply_prompt_tuning(copy.deepcopy(clf), PromptConfig(num_virtual_tokens=P))
prefix = prefixed.backbone.prefix_tuning["default"].prefix
print(f"prefix tensor {tuple(prefix.shape)}: {prefix.numel():,} parameters")
print(f"soft prompt   {tuple(prompted.backbone.soft_prompt(1).shape[1:])}: {P * cfg.n_embd:,} parameters")  # fmt: skip
k, v = prefixed.backbone.transformer.h[0].attn.prefix(batch_size=2)
print(f"layer 0's prefix as the attention sees it: keys {tuple(k.shape)}, values {tuple(v.shape)}")
rows = task.val[:8]
batch = classification_batch(
    enc.encode_ordinary_batch([r["text"] for r in rows]), None, pad_id(enc), cfg.block_size - P
)
idx, mask = batch["idx"], batch["attention_mask"]
with torch.no_grad():
    att = prefixed.backbone(idx, attention_mask=mask, output_attentions=True).attentions
print(f"attention probabilities of layer 0: {tuple(att[0].shape)} = (batch, heads, T, P + T)")
for name, model in [("classifier", clf), ("+ prefix", prefixed), ("+ prompt", prompted)]:
    r = trainable_report(model)
    print(f"  {name:10s} trainable {r['trainable']:7,} of {r['total']:,} ({r['percent']:.2f}%)")

# %% [markdown]
# ## 2. Training them
# Both are methods of `minift.recipes.finetune` ("prefix", "prompt"), trained like lesson
# 06 with P virtual tokens. Each trains at its registered learning rate, which a sweep of
# rates on this task chose for it (`minift.peft.methods`): a comparison of two methods
# at one shared rate would rank the rate, not the method.

# %%
for name in ("prefix", "prompt"):
    print(f"{name}: learning rate {METHODS[name].lr:g} (the method's registered default)")

# A soft prompt takes P of the model's block_size positions: the texts are cut to leave
# room for the longest prompt of section 5.
COUNTS = [2, P, 2 * P]
max_len = min(64, cfg.block_size - max(COUNTS))
config = FinetuneConfig(
    max_len=max_len,
    train=train_config(steps=24 if FAST else 60, eval_every=6 if FAST else 15, progress=False),
)


def run(method: str, **options):
    options = {"num_virtual_tokens": P, **options}
    config_ = dataclasses.replace(config, method=method, options=options)
    r = finetune(task, base, enc, config_, keep_model=True)
    shown = {k: (f"{len(v)} token ids" if k == "init_text" else v) for k, v in options.items()}
    print(f"{method:10s} {shown or ''} {r.seconds:5.1f}s: val accuracy {r.metric:.3f}, trainable {r.trainable:,}")  # fmt: skip
    return r


results = {"prefix": run("prefix")}

# %% [markdown]
# Li and Liang found optimising the prefixes directly unstable and trained them through
# an MLP, `prefix = MLP(E)` for a small P x C embedding E
# (`PrefixConfig(reparameterize=True)`). Only the MLP's *output* matters once training
# is done, so `drop_reparameterization` bakes it into plain prefixes and deletes the MLP:
# the outputs stay the same, and what is saved shrinks to the prefixes.

# %%
mlp_model = apply_prefix_tuning(
    copy.deepcopy(clf), PrefixConfig(num_virtual_tokens=P, reparameterize=True)
)
with torch.no_grad():
    before = mlp_model(idx, attention_mask=mask).logits
    trained = trainable_report(mlp_model)["trainable"]
    drop_reparameterization(mlp_model)
    same = torch.equal(mlp_model(idx, attention_mask=mask).logits, before)
saved = save_adapter(mlp_model, OUT / "prefix_adapter")
size = sum(f.stat().st_size for f in saved.iterdir())
print(f"trainable with the MLP: {trained:,} parameters (E and the MLP); after baking: {trainable_report(mlp_model)['trainable']:,}")  # fmt: skip
print(f"outputs identical after dropping the MLP: {same}; saved adapter (prefixes and head): {size / 1024:.0f} KiB")  # fmt: skip

# %% [markdown]
# ## 3. Where the attention goes
# How much of each query's attention lands on the P prefix positions, layer by layer,
# before and after training? The "before" is the trained run's own starting point (the
# same seed rebuilds it), so the two differ by training alone. With T text tokens and
# no preference, the prefix would get P / (P + T) of the attention. And how far did
# training move the prefix keys and values, relative to their size at the start?
# The heat map shows one docstring in the last layer (mean over heads): the first P
# columns are the prefix.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

trained_model = results["prefix"].model
start_model = build_model(base, task, enc, config)  # seeds as finetune does ...
METHODS["prefix"].prepare(start_model, METHODS["prefix"].make_config(results["prefix"].options), None)  # fmt: skip
start_model.eval()  # ... so this is the trained prefix's starting point
with torch.no_grad():
    att_start = start_model.backbone(idx, attention_mask=mask, output_attentions=True).attentions  # fmt: skip
    att_trained = trained_model.backbone(
        idx, attention_mask=mask, output_attentions=True
    ).attentions
real = mask.bool()
uniform = (P / (P + mask.sum(1).float())).mean().item()


def prefix_mass(attentions) -> list[float]:
    """Mean attention (over heads, real queries and docstrings) on the P prefix keys."""
    return [a[:, :, :, :P].sum(-1).mean(1)[real].mean().item() for a in attentions]


def prefix_of(model) -> torch.Tensor:
    return model.backbone.prefix_tuning["default"].prefix.detach()


p0, p1 = prefix_of(start_model), prefix_of(trained_model)
moved = {kind: ((p1[:, i] - p0[:, i]).norm() / p0[:, i].norm()).item() for i, kind in enumerate(("keys", "values"))}  # fmt: skip
init_mass, trained_mass = prefix_mass(att_start), prefix_mass(att_trained)
for layer, (a, b) in enumerate(zip(init_mass, trained_mass)):
    print(f"layer {layer}: attention on the prefix {a:.2f} at init -> {b:.2f} trained")
shift = max(abs(b - a) for a, b in zip(init_mass, trained_mass))
print(f"a prefix attended like any other key would get {uniform:.2f}; training changed the share by at most {shift:.3f}")  # fmt: skip
print(f"training moved the prefix keys by {moved['keys']:.1%} and the values by {moved['values']:.1%} of their initial norm")  # fmt: skip
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
n = int(mask[0].sum())
im = ax1.imshow(att_trained[-1][0, :, :n, : P + n].mean(0), cmap="viridis", aspect="auto")
fig.colorbar(im, ax=ax1, label="attention probability")
ax1.axvline(P - 0.5, color="white", lw=1)
ax1.set(xlabel=f"key (first {P}: the prefix)", ylabel="query token", title="last layer, trained prefix")  # fmt: skip
layers = range(cfg.n_layer)
ax2.bar([x - 0.2 for x in layers], init_mass, 0.4, label="random prefix (init)")
ax2.bar([x + 0.2 for x in layers], trained_mass, 0.4, label="trained prefix")
ax2.axhline(uniform, color="gray", ls=":", label="P / (P + T): no preference")
ax2.set(xlabel="layer", ylabel="attention mass on the prefix", title="share of attention on the prefix", ylim=(0, 1))  # fmt: skip
ax2.set_xticks(list(layers))
ax2.legend(loc="upper left", fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "prefix_attention.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'prefix_attention.png'}")

# %% [markdown]
# How to read these numbers: a share of attention well above P / (P + T) *before*
# training says the random prefix keys (drawn N(0, 1), whatever the scale of the text's
# own keys) pull attention by their draw alone; a share that barely moves *with* training says the
# run changed what the prefix hands on (its values) more than how much it is read, or
# changed little at all, which the relative movement of keys and values tells apart.
# The sentence below is chosen by this run's numbers.

# %%
readings = []
if max(init_mass) > 1.5 * uniform:
    readings.append(f"the random prefix already draws up to {max(init_mass):.0%} of a layer's attention before training, above the {uniform:.0%} of keys nobody prefers")  # fmt: skip
if shift < 0.05:
    readings.append(f"training left that share as it was (at most {shift:.3f} of change), so the initialisation, not the {config.train.steps} steps of training, set where the attention goes")  # fmt: skip
else:
    deltas = [b - a for a, b in zip(init_mass, trained_mass)]
    layer = max(range(len(deltas)), key=lambda i: abs(deltas[i]))
    direction = "away from" if deltas[layer] < 0 else "towards"
    readings.append(f"training moved attention {direction} the prefix, most in layer {layer} ({init_mass[layer]:.2f} -> {trained_mass[layer]:.2f})")  # fmt: skip
bigger = max(moved, key=moved.get)
readings.append(f"the {bigger} moved more ({moved['keys']:.1%} keys, {moved['values']:.1%} values): the run changed {'what the prefix hands on more than where the queries look' if bigger == 'values' else 'where the queries look more than what the prefix hands on'}")  # fmt: skip
print("Reading: " + "; ".join(readings) + ".")

# %% [markdown]
# ## 4. Prompt tuning: where to start
# Lester et al. found initialisation mattered for small models: random vocabulary rows,
# or the embeddings of a real text. A text that names the classes is a natural start.

# %%
text = " asyncio email logging tkinter unittest xml"
init_ids = PromptConfig.from_text(text, enc).init_text[:P]  # the prompt holds P tokens
print(f"init text {text!r}: its first {len(init_ids)} tokens {[enc.decode([i]) for i in init_ids]}")
results["prompt"] = run("prompt")
results["prompt-text"] = run("prompt", init_text=init_ids)

# %% [markdown]
# ## 5. How many virtual tokens?
# Lester et al. found longer prompts better up to about 20 tokens on small models. (Each
# length at the same registered rate: not tuned per length.)

# %%
sweep = {P: results["prompt"]}
for count in COUNTS:
    if count not in sweep:
        sweep[count] = run("prompt", num_virtual_tokens=count)

# %%
print(
    f"\n{'method':12s} {'trainable':>10s} {'%':>7s} {'val acc':>8s} {'val loss':>9s} {'time s':>7s}"
)
for name, r in results.items():
    print(f"{name:12s} {r.trainable:10,} {r.trainable_percent:7.3f} {r.metric:8.3f} {r.val_loss:9.3f} {r.seconds:7.1f}")  # fmt: skip
n_val = len(task.val)
print(f"chance: {1 / task.num_labels:.3f}; {n_val} validation rows, so an accuracy near 0.4 has a standard error of {accuracy_se(0.4, n_val):.3f}")  # fmt: skip
# Paired comparisons on the same validation rows (bootstrap interval, permutation test):
prefix_vs_prompt = compare("prefix", results["prefix"].val_scores, "prompt", results["prompt"].val_scores)  # fmt: skip
text_vs_random = compare("prompt from text", results["prompt-text"].val_scores, "prompt from random rows", results["prompt"].val_scores)  # fmt: skip
long_vs_short = compare(f"prompt P={max(COUNTS)}", sweep[max(COUNTS)].val_scores, f"prompt P={min(COUNTS)}", sweep[min(COUNTS)].val_scores)  # fmt: skip
for c in (prefix_vs_prompt, text_vs_random, long_vs_short):
    print(c)
# Has each run flattened? The change over its last evaluation interval, against the SE.
for name, r in results.items():
    acc = [h["val_accuracy"] for h in r.history if "val_accuracy" in h]
    rising = acc[-1] - acc[-2] > accuracy_se(acc[-1], n_val)
    print(f"{name:12s} last interval {acc[-1] - acc[-2]:+.3f}: {'still rising (more steps could help)' if rising else 'flat within one SE'}")  # fmt: skip

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.4))
for name, r in results.items():
    acc = [(h["step"], h["val_accuracy"]) for h in r.history if "val_accuracy" in h]
    steps, accs = zip(*acc)
    ax1.errorbar(steps, accs, yerr=[accuracy_se(a, n_val) for a in accs], fmt="o-", capsize=3, label=f"{name} ({r.trainable:,} params)")  # fmt: skip
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set(xlabel="step", ylabel="validation accuracy (+- 1 SE)", title=task.name, ylim=(0, 1))
ax1.legend(fontsize=8, loc="best")
counts = sorted(sweep)
accs = [sweep[c].metric for c in counts]
ax2.errorbar(counts, accs, yerr=[accuracy_se(a, n_val) for a in accs], fmt="o-", capsize=3)
ax2.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax2.set_xscale("log", base=2)
ax2.set_xticks(counts, [str(c) for c in counts])
ax2.minorticks_off()
ax2.set(xlabel="virtual tokens P", ylabel="validation accuracy (+- 1 SE)", title="prompt tuning: prompt length", ylim=(0, 1))  # fmt: skip
ax2.legend(fontsize=8, loc="upper left")
fig.tight_layout()
fig.savefig(OUT / "prefix_prompt_curves.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'prefix_prompt_curves.png'}")

# %% [markdown]
# ## What the numbers say
# The first two statements are structure and hold on any base. The others are what the
# papers report at scale (Li and Liang 2021 on GPT-2 medium and larger; Lester et al.
# 2021 on T5 from 60M to 11B, where prompt tuning matches full fine-tuning only near
# 10B): on a 1.3M-parameter base pretrained for minutes, with 240 validation rows, they
# may not show, and "does not hold here" with a comparison "within noise" means the run
# cannot tell, not that the papers are wrong.

# %%
L, C = cfg.n_layer, cfg.n_embd
claim("the prefix holds n_layer x 2 x P x C numbers, the soft prompt P x C", prefix.numel() == L * 2 * P * C and prompted.backbone.soft_prompt(1).numel() == P * C, f"{prefix.numel():,} = {L} x 2 x {P} x {C}; {P * C:,} = {P} x {C}")  # fmt: skip
claim("dropping the reparameterising MLP leaves the outputs bit for bit the same", same, f"{trained:,} trainable before, {trainable_report(mlp_model)['trainable']:,} after")  # fmt: skip
claim("prefix tuning beats prompt tuning at the same P (each at its registered rate)", prefix_vs_prompt.difference > 0 and not prefix_vs_prompt.within_noise, str(prefix_vs_prompt), at_scale=True)  # fmt: skip
claim("a prompt initialised from the class names beats random vocabulary rows (Lester et al. 2021)", text_vs_random.difference > 0 and not text_vs_random.within_noise, str(text_vs_random), at_scale=True)  # fmt: skip
claim(f"a longer prompt ({max(COUNTS)} tokens) beats a short one ({min(COUNTS)})", long_vs_short.difference > 0 and not long_vs_short.within_noise, str(long_vs_short), at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Train the prefix through the MLP (`"prefix"` with options
#    `{"reparameterize": True}`) and bake it. Is training more stable, or better?
# 2. Initialise the prefix from text (`PrefixConfig(init_text=...)`): the prefixes then
#    start as the keys and values the base model computes for that text. Does it beat
#    the random start here, as Li and Liang found in low-data settings?
# 3. Stack LoRA (`minift.peft.apply_lora`) and a prefix on one model. Which of the two
#    does the attention-mass plot change?
# 4. Generate text from a prompt-tuned `base` (no head) with and without the KV cache
#    (`model.generate(..., use_cache=False)`): the tokens must be the same. Why does the
#    cache need P more positions?
