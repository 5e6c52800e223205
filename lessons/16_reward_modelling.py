# %% [markdown]
# # Lesson 16: reward modelling
#
# Fine-tuning so far had right answers: a label, a reference response. Many things we
# want from a language model have none; people can only say which of two responses they
# prefer. RLHF (Christiano et al. 2017; Stiennon et al. 2020; Ouyang et al. 2022) turns
# such comparisons into training in three stages:
#
# 1. **SFT**: fine-tune the base on demonstrations, so it produces responses of the
#    right shape (this is the *reference policy*);
# 2. **reward model**: learn a score r(x, y) from comparisons "y_c is better than y_r";
# 3. **RL** (PPO, lesson 17) or its shortcut DPO (lesson 18): push the policy towards
#    high reward without drifting far from the reference.
#
# This lesson is stage 2. Real preferences have no ground truth to check a reward model
# against, so minift's task `file-words` has a *hidden judge*, a function of the text:
#
#     truth(response) = (distinct storage words: file, path, directory, bytes, ...)
#                       - (repeated occurrences of them)
#
# The texts are real docstring summary lines; the prompt is a line's first word. A pair
# is two lines with the same first word and different truths, and the one with the higher
# truth is `chosen` (`minift/rlhf/tasks.py`, make_pairs): the labels are this rule,
# applied exactly, with no noise. The reward model never sees the rule, only the pairs.

# %%
import copy
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.data.batching import pad_sequences
from minift.metrics import accuracy_se, compare, mean_se
from minift.recipes.rlhf_stages import (
    default_policy,
    default_reward_config,
    reference_samples,
    task_prompts,
)
from minift.recipes.tasks import get_task
from minift.rlhf.preference import encode_pairs
from minift.rlhf.reward import (
    RewardModel,
    bradley_terry_loss,
    pairwise_accuracy,
    score_pairs,
    train_reward_model,
)
from minift.rlhf.tasks import STORAGE_WORDS, storage_counts, truth_score
from minift.tokenizer import eot_id, pad_id
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "16")
print(f"fast mode: {FAST}")
torch.manual_seed(0)

# %% [markdown]
# ## 1. The comparisons and their hidden judge

# %%
task = get_task("file-words")
print(task.summary())
print(f"storage words: {sorted(STORAGE_WORDS)}")
for row in task.train[:3]:
    print(f"\nprompt   {row['prompt']!r}")
    print(f"chosen   {row['chosen']!r}  truth {truth_score(row['chosen']):+.0f}")
    print(f"rejected {row['rejected']!r}  truth {truth_score(row['rejected']):+.0f}")
demos = get_task("file-words-sft").train
share = sum(truth_score(r["response"]) > 0 for r in demos) / len(demos)
print(
    f"\n{share:.1%} of the {len(demos)} real lines mention a storage word: a property the texts rarely have"
)


def pair_kind(row: dict) -> str:
    """Why the chosen response won: more distinct storage words, or fewer repetitions."""
    distinct_chosen, distinct_rejected = storage_counts(row["chosen"])[0], storage_counts(row["rejected"])[0]  # fmt: skip
    return "more storage words" if distinct_chosen > distinct_rejected else "fewer repetitions"


kinds = [pair_kind(r) for r in task.train]
for kind in sorted(set(kinds)):
    print(f"training pairs decided by {kind:18s}: {kinds.count(kind):5d}")
REPEAT_SHARE = kinds.count("fewer repetitions") / len(kinds)

# %% [markdown]
# ## 2. Bradley-Terry by hand
# The Bradley-Terry model (Bradley and Terry 1952) says a person prefers y_c to y_r with
# probability sigmoid(r_c - r_r). Training maximises the likelihood of the observed
# choices: loss = -log sigmoid(r_c - r_r). Only differences matter, so a constant added to
# every reward changes nothing; *centering* (a small penalty on (r_c + r_r)^2, Eisenstein
# et al. 2023) pins the scale's zero. A *margin* m (Touvron et al. 2023) asks for a gap of
# at least m on clearly decided pairs.

# %%
r_c, r_r = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([0.0, 0.5, 1.0])
for c, r in zip(r_c.tolist(), r_r.tolist()):
    p = torch.sigmoid(torch.tensor(c - r)).item()
    print(f"r_c = {c:+.1f}, r_r = {r:+.1f}: P(chosen preferred) = {p:.3f}, loss = {-torch.log(torch.tensor(p)).item():.3f}")  # fmt: skip
by_hand = (-torch.nn.functional.logsigmoid(r_c - r_r)).mean()
bt_error = max(abs(by_hand - bradley_terry_loss(r_c, r_r)), abs(by_hand - bradley_terry_loss(r_c + 10, r_r + 10))).item()  # fmt: skip
print(f"mean loss by hand {by_hand:.4f}, "
      f"bradley_terry_loss {bradley_terry_loss(r_c, r_r):.4f}; shifted by +10: {bradley_terry_loss(r_c + 10, r_r + 10):.4f}")  # fmt: skip
print(f"with margin 1: {bradley_terry_loss(r_c, r_r, margin=1.0):.4f}; with centering 0.01: {bradley_terry_loss(r_c + 10, r_r + 10, center_coef=0.01):.4f}")  # fmt: skip

# %% [markdown]
# ## 3. The reward model
# The SFT policy's transformer with a linear head giving one number, read at the last real
# token of prompt + response (its end token): in a causal model, the only position that
# has seen the whole text. Padding must not matter: the same text scores the same alone,
# left-padded or right-padded. (The SFT policy is built once and cached, like the base.)

# %%
policy, enc = default_policy()
rm = RewardModel(copy.deepcopy(policy)).eval()
texts = [" the path of the file.", " a widget.", " an object that holds the configuration"]
seqs = [enc.encode_ordinary("Return" + t) for t in texts]
alone = [rm(torch.tensor([s])).item() for s in seqs]
padding_error = 0.0
for side in ("left", "right"):
    ids, mask = pad_sequences(seqs, pad_id(enc), side=side)
    padded = rm(ids, mask).tolist()
    padding_error = max(padding_error, *(abs(a - b) for a, b in zip(padded, alone)))
    print(f"{side:5s} padding: {[f'{x:.4f}' for x in padded]}")
print(f"alone:         {[f'{x:.4f}' for x in alone]}  (an untrained head: these mean nothing yet)")

# %% [markdown]
# ## 4. Training it
# Each step scores a batch of chosen and rejected responses in one forward pass and
# takes a step on the Bradley-Terry loss. The held-out pairs share no response with the
# training pairs (lines were split before pairing).

# %%
config = default_reward_config()
t0 = time.perf_counter()
result = train_reward_model(policy, enc, task.train, task.val, config)
print(f"{config.train.steps} steps of {config.batch_size} pairs in {time.perf_counter() - t0:.1f}s")
evals = [h for h in result.history if "val_accuracy" in h]
for h in evals:
    print(f"step {h['step']:4d}: held-out pairwise accuracy {h['val_accuracy']:.3f}, loss {h['val_loss']:.3f}")  # fmt: skip
rm = result.model

# Baselines: a rule that counts distinct storage words (the first term of the labelling
# rule: it knows the vocabulary the judge likes, not the repetition penalty), and "the
# longer response wins". Every method is scored pair by pair on the same held-out pairs,
# a tie counting as a coin flip (0.5), so compare() can pair them.
val = task.val


def wins(chosen: list[float], rejected: list[float]) -> np.ndarray:
    """Per pair: 1 if the chosen scores higher, 0 if lower, 0.5 for a tie."""
    c, r = np.asarray(chosen, float), np.asarray(rejected, float)
    return (c > r) + 0.5 * (c == r)


def rule_wins(rule) -> np.ndarray:
    return wins([rule(r["chosen"]) for r in val], [rule(r["rejected"]) for r in val])


keyword_hits = rule_wins(lambda text: storage_counts(text)[0])
longer_hits = rule_wins(len)
pairs = encode_pairs(val, enc, policy.config.block_size)
c, r = score_pairs(rm, pairs, enc)
rm_hits = wins(c.tolist(), r.tolist())
keyword, longer = keyword_hits.mean(), longer_hits.mean()
print(f"held-out pairs ranked right: reward model {rm_hits.mean():.3f}, count storage words {keyword:.3f}, "
      f"longer wins {longer:.3f}, chance 0.5 ({len(val)} pairs; keyword ties {np.mean(keyword_hits == 0.5):.1%})")  # fmt: skip
rm_vs_keyword = compare("reward model", rm_hits, "keyword rule", keyword_hits)
print(rm_vs_keyword)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
steps = [h["step"] for h in result.history if "loss" in h]
ax1.plot(steps, [h["loss"] for h in result.history if "loss" in h], label="train loss")
ax1.plot([h["step"] for h in evals], [h["val_loss"] for h in evals], "o-", label="held-out loss")
ax1.set_xlabel("step")
ax1.set_ylabel("Bradley-Terry loss")
ax1.legend()
ax2.plot([h["step"] for h in evals], [h["val_accuracy"] for h in evals], "o-", label="reward model")
ax2.axhline(keyword, ls="--", color="C2", label="count storage words (rule)")
ax2.axhline(0.5, ls=":", color="gray", label="chance")
ax2.set_xlabel("step")
ax2.set_ylabel("held-out pairwise accuracy")
ax2.legend()
fig.tight_layout()
fig.savefig(OUT / "reward_model_training.png", dpi=110)
plt.close(fig)

# %% [markdown]
# The keyword rule's score is no surprise: the labels *are* a rule, distinct storage words
# minus repeats, and counting distinct storage words reproduces it on every pair that the
# first term decides, which is nearly all of them (section 1). The reward model had to
# find that from the training pairs alone. So why learn a reward model at all? Because with real human
# preferences no one can write the rule down: a learned reward model is the tool for
# preferences without a known rule, and here the known rule is what lets us grade it.
#
# ## 5. Where it is right, and where it is wrong
# Accuracy by why a pair was decided: pairs where the chosen response has more storage
# words are common; pairs decided by repetition are rare (real lines seldom repeat a
# storage word). And a reward model is only trained on text like the training pairs: on
# text unlike them, like a response that repeats "file" again and again, its score is an
# extrapolation, and can be wrong in a way an optimiser will find (lessons 17 and 18).

# %%
for kind in ("more storage words", "fewer repetitions"):
    rows = [i for i, row in enumerate(val) if pair_kind(row) == kind]
    if rows:
        acc = pairwise_accuracy(c[rows], r[rows])
        print(f"held-out pairs decided by {kind:18s}: {len(rows):4d} pairs, reward model {acc:.3f}, keyword rule {keyword_hits[rows].mean():.3f}")  # fmt: skip
probes = [" the path of the file.", " the file.", " the file file.", " the file file file file.",
          " a file path directory.", " the the the the."]  # fmt: skip
ids, mask = pad_sequences([enc.encode_ordinary("Return" + t) + [eot_id(enc)] for t in probes], pad_id(enc))  # fmt: skip
with torch.no_grad():
    raw = rm(ids, mask, normalized=False)
probe_reward = dict(zip(probes, raw.tolist()))
print(f"\n{'response to Return':30s} {'truth':>6s} {'reward':>7s}")
for t, s in zip(probes, raw.tolist()):
    print(f"{t!r:30s} {truth_score(t):+6.0f} {s:+7.2f}")

# %% [markdown]
# ## 6. Normalising on the reference policy's samples
# The reward's scale is arbitrary (only differences were trained). PPO adds a KL penalty
# in nats to it, so the scale matters: following Ziegler et al. 2019, a gain and a bias
# make the rewards of the reference policy's own samples mean 0 and std 1. Below: those
# samples' rewards against the hidden truth.

# %%
samples = reference_samples(
    policy, enc, task_prompts("train"), 128 if FAST else 512, 24, 1.0, seed=1
)
stats = rm.normalize(samples.sequences, samples.attention_mask)
with torch.no_grad():
    scores = rm(samples.sequences, samples.attention_mask)
truths = [truth_score(t) for t in samples.texts(enc)]
print(f"raw rewards of {len(truths)} reference samples: mean {stats['raw_mean']:.2f}, std {stats['raw_std']:.2f}")  # fmt: skip
print(f"normalised: mean {scores.mean():.3f}, std {scores.std():.3f}")
by_truth = {}
for t, s in zip(truths, scores.tolist()):
    by_truth.setdefault(t, []).append(s)
for t in sorted(by_truth):
    print(f"truth {t:+.0f}: {len(by_truth[t]):4d} samples, mean reward {statistics.fmean(by_truth[t]):+.2f}")  # fmt: skip
none = [s for t, v in by_truth.items() if t <= 0 for s in v]  # no storage word, or repeats
some = [s for t, v in by_truth.items() if t > 0 for s in v]

fig, ax = plt.subplots(figsize=(6, 3.8))
levels = sorted(by_truth)
ax.boxplot([by_truth[t] for t in levels], positions=range(len(levels)))
ax.set_xticks(range(len(levels)), [f"{t:+.0f}\n(n={len(by_truth[t])})" for t in levels])
ax.set_xlabel("hidden truth of the sample")
ax.set_ylabel("normalised reward")
ax.set_title("reference policy samples: reward vs truth")
fig.tight_layout()
fig.savefig(OUT / "reward_vs_truth.png", dpi=110)
plt.close(fig)

# %% [markdown]
# ## What the numbers say
# The first claims are exact properties of the code or of the data, on any base. The
# last ones are about this reward model, trained for a few minutes on a small base: at
# scale, reward models rank held-out comparisons well but are exploited by the policies
# optimised against them (Gao et al. 2023, "Scaling Laws for Reward Model
# Overoptimization"); whether this one has such a hole is a measurement.

# %%
claim("the Bradley-Terry loss equals -log sigmoid(r_c - r_r) by hand and does not move when every reward is shifted",
      bt_error < 1e-6, f"max deviation {bt_error:.1e}")  # fmt: skip
claim("a response scores the same alone, left-padded and right-padded", padding_error < 1e-4,
      f"max deviation {padding_error:.1e}")  # fmt: skip
claim("after normalisation the reference samples' rewards have mean 0 and std 1",
      abs(scores.mean().item()) < 1e-3 and abs(scores.std().item() - 1) < 1e-2,
      f"mean {scores.mean():.4f}, std {scores.std():.4f}")  # fmt: skip
claim("pairs decided by a repetition are rare in the training data (under 10%)", REPEAT_SHARE < 0.1,
      f"{REPEAT_SHARE:.1%} of {len(kinds)} pairs")  # fmt: skip
acc_rm = rm_hits.mean()
claim("the reward model ranks held-out pairs better than chance, beyond noise",
      acc_rm - 2 * accuracy_se(acc_rm, len(val)) > 0.5, f"{acc_rm:.3f} on {len(val)} pairs")  # fmt: skip
k = rm_vs_keyword
claim("the keyword rule, which nearly reproduces the labelling rule, ranks held-out pairs at least as well as the learned reward model",
      k.difference <= 0 or k.within_noise,
      f"{k.mean_b:.3f} vs {k.mean_a:.3f}, reward model minus rule {k.difference:+.3f}, 95% CI {k.low:+.3f} to {k.high:+.3f}")  # fmt: skip
hole = probe_reward[" the file file file file."] > probe_reward[" the file."]
claim('the reward model scores " the file file file file." (truth -2) above " the file." (truth +1): a hole an optimiser can find',
      hole, f"{probe_reward[' the file file file file.']:+.2f} vs {probe_reward[' the file.']:+.2f} (raw rewards)", at_scale=True)  # fmt: skip
gap, se = statistics.fmean(some) - statistics.fmean(none), (mean_se(some).se ** 2 + mean_se(none).se ** 2) ** 0.5 if len(some) > 1 else float("nan")  # fmt: skip
claim("on the reference policy's own samples, those with positive truth get a higher mean reward than the others, beyond noise",
      len(some) > 1 and gap > 2 * se, f"{statistics.fmean(some) if some else float('nan'):+.2f} ({len(some)} samples) vs {statistics.fmean(none):+.2f} ({len(none)}), +- {se:.2f}", at_scale=True)  # fmt: skip
if FAST:
    print("(fast mode: a tiny base and few steps exercise the code; the numbers need normal mode)")
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Train with `center_coef=0.01`. Does accuracy change? What happens to the mean reward
#    of the training pairs?
# 2. Add a `margin` field to the rows (the truth difference) and train with
#    `use_margin=True` (Llama 2's margin loss). Which kind of pair gains accuracy?
# 3. Train the reward model from the *base* instead of the SFT policy. Which starts
#    better, and why might the SFT policy's features suit responses better?
# 4. Write 20 preference rows of your own where repetition decides, add them to the
#    training pairs, and probe " the file file file file." again.
