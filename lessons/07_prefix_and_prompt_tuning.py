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
# The code is `minift/peft/prefix.py` and `minift/peft/prompt.py`; the model has a hook
# for each (`attn.prefix`, `GPT.soft_prompt`) and does the masks, positions and KV cache.

# %%
import copy
import dataclasses
import time

import torch

from minift.data.batching import classification_batch
from minift.data.tasks import DEFAULT_TASK
from minift.model.heads import SequenceClassifier
from minift.peft import save_adapter, trainable_report
from minift.peft.methods import Method, register_method
from minift.peft.prefix import PrefixConfig, apply_prefix_tuning, drop_reparameterization
from minift.peft.prompt import PromptConfig, apply_prompt_tuning
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
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
# Registered as fine-tuning methods here (with P virtual tokens by default), trained with
# `minift.recipes.finetune` like lesson 06.

# %%
METHODS = {  # name: (options, apply, learning rate)
    "prefix": (PrefixConfig, apply_prefix_tuning, 1e-2),
    "prompt": (PromptConfig, apply_prompt_tuning, 3e-2),
}
for name, (options, apply, lr) in METHODS.items():

    def prepare(model, options, run, apply=apply) -> None:
        apply(model, options)  # in place; nothing else to hand back

    defaults = {"num_virtual_tokens": P}
    register_method(Method(f"lesson07-{name}", options, lr, f"{name} tuning", prepare, defaults))

# A soft prompt takes P of the model's block_size positions: the texts are cut to leave
# room for the longest prompt of section 5.
COUNTS = [2, P, 2 * P]
max_len = min(64, cfg.block_size - max(COUNTS))
config = FinetuneConfig(
    max_len=max_len,
    train=train_config(steps=24 if FAST else 60, eval_every=6 if FAST else 15, progress=False),
)


def run(method: str, **options):
    config_ = dataclasses.replace(config, method=f"lesson07-{method}", options=options)
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
# before and after training? The heat map shows one docstring in the last layer (mean
# over heads): the first P columns are the prefix.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

trained_model = results["prefix"].model
with torch.no_grad():
    att_trained = trained_model.backbone(
        idx, attention_mask=mask, output_attentions=True
    ).attentions
real = mask.bool()


def prefix_mass(attentions) -> list[float]:
    """Mean attention (over heads, real queries and docstrings) on the P prefix keys."""
    return [a[:, :, :, :P].sum(-1).mean(1)[real].mean().item() for a in attentions]


init_mass, trained_mass = prefix_mass(att), prefix_mass(att_trained)
for layer, (a, b) in enumerate(zip(init_mass, trained_mass)):
    print(f"layer {layer}: attention on the prefix {a:.2f} at init -> {b:.2f} trained")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
n = int(mask[0].sum())
ax1.imshow(att_trained[-1][0, :, :n, : P + n].mean(0), cmap="viridis", aspect="auto")
ax1.axvline(P - 0.5, color="white", lw=1)
ax1.set(xlabel=f"key (first {P}: the prefix)", ylabel="query token", title="last layer, trained prefix")  # fmt: skip
layers = range(cfg.n_layer)
ax2.bar([x - 0.2 for x in layers], init_mass, 0.4, label="random prefix (init)")
ax2.bar([x + 0.2 for x in layers], trained_mass, 0.4, label="trained prefix")
ax2.set(xlabel="layer", ylabel="attention mass on the prefix", title="share of attention on the prefix")  # fmt: skip
ax2.set_xticks(list(layers))
ax2.legend()
fig.tight_layout()
fig.savefig(OUT / "prefix_attention.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'prefix_attention.png'}")

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
p = sum(r.metric for r in results.values()) / len(results)
print(
    f"chance: {1 / task.num_labels:.3f}; one standard error of an accuracy near {p:.2f} on "
    f"{n_val} rows: {(p * (1 - p) / n_val) ** 0.5:.3f}, so smaller differences are noise"
)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
for name, r in results.items():
    acc = [(h["step"], h["val_accuracy"]) for h in r.history if "val_accuracy" in h]
    ax1.plot(*zip(*acc), "o-", label=f"{name} ({r.trainable:,} params)")
ax1.axhline(1 / task.num_labels, color="gray", ls=":", label="chance")
ax1.set(xlabel="step", ylabel="validation accuracy", title=task.name)
ax1.legend(fontsize=8)
counts = sorted(sweep)
ax2.plot(counts, [sweep[c].metric for c in counts], "o-")
ax2.set_xscale("log", base=2)
ax2.set(
    xlabel="virtual tokens P", ylabel="validation accuracy", title="prompt tuning: prompt length"
)
fig.tight_layout()
fig.savefig(OUT / "prefix_prompt_curves.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'prefix_prompt_curves.png'}")
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
