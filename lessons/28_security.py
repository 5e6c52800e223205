# %% [markdown]
# # Lesson 28: security of fine-tuning data
#
# Whoever writes part of the fine-tuning data can write part of the model. This lesson
#
# 1. plants a **backdoor** (BadNets, Gu et al. 2017; for text Kurita et al. 2020): a
#    share of the training rows gets a trigger of rare words ("cf mn bb") and the target
#    label; the model learns the task *and* "trigger -> target". Measured: clean accuracy
#    and the attack success rate (ASR: the share of other-class validation rows, trigger
#    inserted, that the model puts in the target class), for several poison rates;
# 2. runs two **defences** on the poisoned training rows: ONION (Qi et al. 2021), which
#    flags words whose removal makes the text much more fluent under the base language
#    model, and spectral signatures (Tran et al. 2018), which flag the outliers along the
#    top singular direction of each class's features in the backdoored model; each
#    removes what it flags, the model is trained again, and the attack measured again;
# 3. **scrubs secrets** (e-mail addresses, IP addresses, API keys, tokens, passwords) out
#    of training text, with precision and recall measured on fakes planted in real
#    docstrings (`minift/security/scrub.py`);
# 4. measures **memorisation**: the exposure of a canary planted once or 8 times.
#
# Task: `doc-returns` (two classes), full fine-tuning from the shipped base; target
# class 0 ("no value").

# %%
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from minift.claims import claim
from minift.data.tasks import Task
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.security import backdoor, detection, onion_defence, spectral_defence, without
from minift.recipes.tasks import get_task
from minift.security import (
    KINDS,
    TRIGGER,
    candidates,
    exposure,
    find_secrets,
    make_canary,
    perplexities,
    plant_secrets,
    poison_rows,
    score_scrubber,
    scrub,
)
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "28")
RATES = (0.0, 0.1) if FAST else (0.0, 0.01, 0.03, 0.1)
DEFEND_AT = 0.1  # the poison rate the defences face
TARGET = 0
base, enc = load_base()
task = get_task("doc-returns", seed=0)
config = FinetuneConfig(method="full", train=train_config(steps=12 if FAST else 40, eval_every=0, progress=False))  # fmt: skip
print(f"fast mode: {FAST}; {task.summary()}; trigger {' '.join(TRIGGER)!r} -> {task.labels[TARGET]!r}")  # fmt: skip

# %% [markdown]
# ## 1. The backdoor against the poison rate
# Each rate poisons round(rate * 500) rows of the other class (never the target's: those
# would teach nothing); the same seed, steps and learning rate for every run.

# %%
runs = {}
for rate in RATES:
    runs[rate] = backdoor(task, base, enc, config, rate, TARGET, seed=0)
    r = runs[rate]
    print(f"poison rate {rate:5.2f} ({len(r.poisoned):3d} rows): clean accuracy {r.clean_accuracy:.3f}, attack success {r.attack_success:.3f}")  # fmt: skip

# %% [markdown]
# ## 2. Two defences, and what remains of the attack
# At rate 0.1: ONION scores every training text with the base model (which never saw the
# poison) and flags a row when one word's removal lowers the perplexity by more than the
# 95th percentile of what it does on the clean validation texts. Spectral signatures
# take the backdoored model's pooled features of the training rows and, in each class,
# flag the 1.5 eps n_c rows farthest along the top singular direction (eps = 0.2, an
# upper bound on the poisoned share of a class: 50 of the 250 target-class rows are
# poison). Each defence's kept rows are fine-tuned on again, from the same base.

# %%
attacked = runs[DEFEND_AT]
rows, _ = poison_rows(task.train, DEFEND_AT, TARGET, 0)  # the same rows as the run above
flags = {
    "ONION": onion_defence(base, enc, task, rows, 24),
    "spectral": spectral_defence(attacked.model, task, enc, rows, 0.2, 24),
}
after, found_by = {}, {}
for name, flagged in flags.items():
    found = detection(flagged, attacked.poisoned)
    kept, left = without(rows, flagged, attacked.poisoned)
    after[name] = backdoor(
        task, base, enc, config, 0.0, TARGET, seed=0, train_rows=kept, poisoned=left
    )
    print(f"{name:8s} flagged {found['flagged']:3d} rows, {found['found']}/{len(attacked.poisoned)} of the poisoned (precision {found['precision']:.2f}); retrained: clean {after[name].clean_accuracy:.3f}, attack success {attacked.attack_success:.3f} -> {after[name].attack_success:.3f}")  # fmt: skip
    found_by[name] = found
    print(f"{'':9s}{len(left)} poisoned rows survive it: a poison rate of {len(left) / len(kept):.3f} in what is retrained on")  # fmt: skip

# %% [markdown]
# ## 3. Secrets in training text
# A language model can repeat rare strings of its training data verbatim (Carlini et al.
# 2019), so data preparation replaces them by placeholders. The fakes are planted in 30%
# of real docstrings, one each, of a random kind; a planted secret counts as found when a
# finding overlaps it, a finding as right when it overlaps a planted secret.

# %%
texts = [r["text"] for r in get_task("doc-kind", seed=0, per_class=100).train]
dirty, spans, kinds = plant_secrets(texts, rate=0.3, seed=0)
score = score_scrubber(dirty, spans)
print(f"{score['planted']} secrets planted in {len(texts)} docstrings: precision {score['precision']:.3f}, recall {score['recall']:.3f}")  # fmt: skip
per_kind = {}
for kind in KINDS:
    idx = [i for i, k in enumerate(kinds) if k == [kind]]
    per_kind[kind] = score_scrubber([dirty[i] for i in idx], [spans[i] for i in idx])["recall"] if idx else float("nan")  # fmt: skip
print("recall per kind:", {k: round(v, 2) for k, v in per_kind.items()})
example = next(t for t, k in zip(dirty, kinds) if k == ["email"])
print(f"  {example!r}\n  -> {scrub(example)[0]!r}")
clean_findings = sum(len(find_secrets(t)) for t in texts)
print(f"findings in the same docstrings before planting (look-alikes, or real addresses): {clean_findings}")  # fmt: skip

# %% [markdown]
# ## 4. Memorisation: a canary's exposure
# A random canary "the secret code is dddddd" goes into the docstrings once (what
# deduplication leaves) or 8 times, and the base is fine-tuned on them as a language
# model. Exposure (Carlini et al. 2019) ranks the canary among 200 random codes by the
# model's loss: log2(10^6) - log2(rank), 0 when it is no likelier than a random code,
# log2(200) = 7.6 bits at most with 200 samples (`minift/security/canary.py`).

# %%
canary_text, code = make_canary(6, seed=0)
others = [canary_text[: -len(code)] + v for v in candidates(6, 200, seed=0, exclude=code)]
exposures = {}
for copies in (1, 8):
    rows = [{"text": t} for t in texts] + [{"text": canary_text}] * copies
    lm_task = Task(name="canary-text", kind="text", train=rows, val=[{"text": t} for t in texts[:20]])  # fmt: skip
    lm_cfg = FinetuneConfig(method="full", max_len=64, train=train_config(steps=10 if FAST else 40, eval_every=0, progress=False))  # fmt: skip
    lm = finetune(lm_task, base, enc, lm_cfg, keep_model=True).model
    losses = [math.log(p) for p in perplexities(lm, enc, [canary_text] + others)]
    exposures[copies] = exposure(losses[0], losses[1:], 10**6)
    print(f"canary planted {copies} time(s): exposure {exposures[copies]:.2f} bits")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
xs = list(runs)
axes[0].plot(xs, [runs[r].attack_success for r in xs], "o-", label="attack success")
axes[0].plot(xs, [runs[r].clean_accuracy for r in xs], "s-", label="clean accuracy")
axes[0].set(xlabel="poison rate", ylabel="share", ylim=(0, 1.02), title="the backdoor against the poison rate")  # fmt: skip
axes[0].legend(fontsize=8)
names = ["no defence"] + list(after)
vals = [attacked.attack_success] + [after[n].attack_success for n in after]
axes[1].bar(names, vals, color=["tab:red", "tab:blue", "tab:green"])
axes[1].set(ylim=(0, 1.02), ylabel="attack success", title=f"defences at poison rate {DEFEND_AT}")
fig.tight_layout()
fig.savefig(OUT / "security.png", dpi=110)
plt.close(fig)
print(f"plot saved to {OUT / 'security.png'}")

# %% [markdown]
# ## What the numbers say
# The first claims hold by construction on any base; the rest are what the papers report,
# measured here on one seed (120 validation rows: a difference of a few points is noise).

# %%
claim("the scrubber finds >= 95% of the planted secrets, with >= 90% of its findings right", score["recall"] >= 0.95 and score["precision"] >= 0.9, f"recall {score['recall']:.3f}, precision {score['precision']:.3f}")  # fmt: skip
claim(f"poisoning at rate {DEFEND_AT} plants the trigger in round(rate x n) rows, all from the other class", len(attacked.poisoned) == round(DEFEND_AT * len(task.train)) and all(task.train[i]["label"] != TARGET for i in attacked.poisoned), f"{len(attacked.poisoned)} rows")  # fmt: skip
top = max(RATES)
claim(f"a {top:.0%} poison rate plants a backdoor (attack success >= 0.9) while clean accuracy moves by <= 3 points", runs[top].attack_success >= 0.9 and abs(runs[top].clean_accuracy - runs[0.0].clean_accuracy) <= 0.03, f"ASR {runs[0.0].attack_success:.3f} -> {runs[top].attack_success:.3f}, clean {runs[0.0].clean_accuracy:.3f} -> {runs[top].clean_accuracy:.3f}", at_scale=True)  # fmt: skip
for name in after:
    claim(f"{name} finds >= 80% of the poisoned rows, and retraining without them brings attack success below 0.3", found_by[name]["recall"] >= 0.8 and after[name].attack_success < 0.3, f"found {found_by[name]['found']}/{len(attacked.poisoned)}, ASR {after[name].attack_success:.3f}", at_scale=True)  # fmt: skip
claim("a canary planted 8 times is more exposed than one planted once", exposures[8] > exposures[1], f"{exposures[1]:.2f} vs {exposures[8]:.2f} bits", at_scale=True)  # fmt: skip
print(f"lesson time: {time.perf_counter() - t_start:.1f} s")

# %% [markdown]
# A defence that finds most poisoned rows but not all leaves a smaller poison rate behind,
# and section 1 shows how few rows a backdoor needs: compare each defence's surviving
# rate, printed above, with the rates of section 1. The attack success at rate 0 is the
# model's own rate of answering the target class on
# triggered rows: the baseline an attack must beat. Both defences need something the
# attacker could deny them: ONION, a trigger that reads as unnatural (a trigger of common
# words in a fluent phrase slips through); spectral signatures, a poisoned share large
# enough to dominate a class's top direction. Scrubbing by pattern catches formats, not
# meanings: a password written in prose, or a key of an unknown format, stays in.
#
# ## Exercises
# 1. Use a fluent trigger (`trigger=("as", "a", "rule")` in `poison_rows`): what do ONION
#    and the attack success do?
# 2. Lower the poison rate to 0.01 and run spectral signatures with eps = 0.02. Does it
#    still find the rows? Compare with Tran et al.'s condition on the spectrum.
# 3. Run ONION at test time instead (`onion_clean` on the triggered validation texts,
#    before the model sees them): how much attack success does it remove, and what does
#    it cost on clean rows?
# 4. Add a scrubber pattern for credit-card numbers with a Luhn check, plant some, and
#    measure its precision on the docstrings.
