# %% [markdown]
# # Lesson 30: human-in-the-loop evaluation
#
# Automatic scores (a reward model, perplexity) are cheap stand-ins for what people think
# of a model's outputs. This lesson measures people instead, and the people themselves:
#
# 1. **ratings**: each output scored 1-5, or two outputs compared, recorded per rater in a
#    JSONL file (`minift rate`, `minift/rating/records.py`);
# 2. **agreement**: raters disagree, and the disagreement is the noise floor of every human
#    evaluation. Cohen's kappa (two raters; weighted for ordered scales), Fleiss' kappa
#    (many raters, complete data) and Krippendorff's alpha (many raters, missing ratings,
#    nominal/ordinal/interval) report agreement beyond chance (`minift/rating/kappa.py`,
#    `krippendorff.py`);
# 3. **validity**: does the reward model, or perplexity, order outputs as the raters do?
#    Spearman's rho and Kendall's tau-b (`minift/rating/correlation.py`);
# 4. **what to rate next**: show the pairs the reward model is least sure about first
#    (uncertainty sampling, Lewis and Gale 1994) and count the ratings it saves
#    (`minift/rating/uncertainty.py`).
#
# No person is needed to run it: a **simulated panel** rates instead
# (`minift/rating/panel.py`). Each simulated rater is a noisy copy of the hidden judge of
# the `file-words` task (lessons 16-18: storage words good, repeating them bad), with its own
# noise, leniency and coverage. The outputs come from two policies on the same held-out
# prompts: the SFT'd base, and best-of-4 under the reward model (lesson 18).

# %%
import io
import re
import time
from contextlib import redirect_stdout

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import minift.cli
from minift.claims import claim
from minift.metrics import compare, mean_se
from minift.rating import (
    Item,
    SimulatedRater,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    kendall_tau,
    krippendorff_alpha,
    labelling_curve,
    margin_order,
    panel,
    rating_matrix,
    ratings_to_reach,
    simulate_ratings,
    spearman,
)
from minift.rating.records import append_ratings
from minift.recipes.rate import ratings_to_preferences
from minift.recipes.rlhf_stages import default_policy, default_reward_model, task_prompts
from minift.rlhf.preference import encode_prompt
from minift.rlhf.rollout import response_logprobs, sample_responses
from minift.rlhf.tasks import demonstrations, truth_score
from minift.tokenizer import eot_id, pad_id
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "30")
policy, enc = default_policy()
reward_model, _ = default_reward_model()
N_PROMPTS, K = (64, 4) if FAST else (160, 4)
SEEDS = range(3) if FAST else range(5)
print(f"fast mode: {FAST}; {N_PROMPTS} held-out prompts, {K} samples each, {len(SEEDS)} panel seeds")  # fmt: skip

# %% [markdown]
# ## 1. The outputs to rate
# For each prompt the SFT policy samples K = 4 responses. The first is "SFT"; the one the
# reward model scores highest is "best-of-4". Each is scored by the reward model and by
# the policy's perplexity (exp of the mean negative log-probability per response token),
# the two automatic scores to check against the panel.

# %%
prompts = task_prompts("val")
g = torch.Generator().manual_seed(0)
picks = torch.randint(0, len(prompts), (N_PROMPTS,), generator=g).tolist()
ids = [encode_prompt(enc, prompts[i]) for i in picks for _ in range(K)]
with torch.no_grad():
    roll = sample_responses(policy, ids, 24, eot_id(enc), pad_id(enc), 1.0, g)
    reward = reward_model(roll.sequences, roll.attention_mask).view(N_PROMPTS, K).numpy()
    lp, _ = response_logprobs(policy, roll.sequences, roll.attention_mask, roll.prompt_len, 1.0)
mask = roll.response_mask.float()
ppl = torch.exp(-(lp * mask).sum(1) / mask.sum(1)).view(N_PROMPTS, K).numpy()
texts = np.array(roll.texts(enc), dtype=object).reshape(N_PROMPTS, K)
truth = np.vectorize(truth_score)(texts).astype(float)
best = reward.argmax(1)
print(f"reward-model pick's truth {truth[np.arange(N_PROMPTS), best].mean():.3f} vs first sample's {truth[:, 0].mean():.3f}")  # fmt: skip

# %% [markdown]
# The panel rates on a 1-5 scale, and a scale needs a judge with more than one thing to
# say: most samples mention no storage word, so the file-words truth alone is 0 for nearly
# every output. The rating judge adds fluency, the share of an output's words that are
# words of the docstring corpus the task's lines come from:
#
#     judge(text) = truth(text) + 2 * (share of real words),   rating = 1 + judge (+ noise)
#
# The reward model learned the first part only; perplexity knows something of the second.
# An output both policies produced (best-of-4 picked the first sample) is one item, rated
# once.

# %%
VOCAB = {w for r in demonstrations("train") for w in re.findall(r"[a-z]+", (r["prompt"] + r["response"]).lower())}  # fmt: skip


def judge(text: str) -> float:
    words = re.findall(r"[A-Za-z]+", text)
    real = sum(w.lower() in VOCAB for w in words) / len(words) if words else 0.0
    return truth_score(text) + 2.0 * real


items, index = [], {}  # unique items; (policy, prompt) -> item index
auto_reward, auto_ppl = [], []
for name, col in (("SFT", np.zeros(N_PROMPTS, dtype=int)), ("best-of-4", best)):
    for i, j in enumerate(col):
        it = Item(prompts[picks[i]], (texts[i, j],))
        if it.id not in index:
            index[it.id] = len(items)
            items.append(it)
            auto_reward.append(reward[i, j])
            auto_ppl.append(ppl[i, j])
        index[(name, i)] = index[it.id]
item_judge = np.array([judge(it.outputs[0]) for it in items])
auto_reward, auto_ppl = np.array(auto_reward), np.array(auto_ppl)
print(f"{len(items)} distinct outputs to rate; judge mean {item_judge.mean():.2f}, std {item_judge.std():.2f}, range {item_judge.min():.2f}..{item_judge.max():.2f}")  # fmt: skip
for it in items[:4]:
    print(f"  judge {judge(it.outputs[0]):.2f}  {it.prompt}{it.outputs[0]!r}")

# %% [markdown]
# ## 2. Agreement as the raters get noisier
# A panel of 5 raters scores every output on 1-5: rating = round(1 + judge + bias +
# noise * z), clipped. Their biases spread over -0.5..+0.5 (one lenient, one harsh) and
# each rates a random 80% of the outputs, so Fleiss' kappa uses only the outputs all five
# rated while Krippendorff's alpha uses everything. Cohen's quadratic-weighted kappa is
# the mean over the 10 pairs of raters. Raw agreement (the share of rater pairs giving the
# same score) is shown too: it counts the agreement chance alone would give, which the
# kappas and alpha remove. The first row has no noise, only the raters' different
# leniency: compare it with the noise-free, bias-free panel of the first claim below.

# %%
NOISES = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]


def rate_items(noise: float, seed: int, bias_spread: float = 0.5) -> list[dict]:
    raters = panel(5, noise, bias_spread=bias_spread, coverage=0.8, seed=seed)
    return simulate_ratings(raters, items, judge, offset=1.0)


def agreement(noise: float, seed: int, bias_spread: float = 0.5) -> dict:
    ratings = rate_items(noise, seed, bias_spread)
    x = np.array(rating_matrix(ratings)[2])
    complete = ~np.isnan(x).any(0)
    kappas, raw = [], []
    for a in range(5):
        for b in range(a + 1, 5):
            both = ~np.isnan(x[a]) & ~np.isnan(x[b])
            kappas.append(cohen_kappa(x[a, both], x[b, both], "quadratic"))
            raw.append(np.mean(x[a, both] == x[b, both]))
    return {
        "alpha (ordinal)": krippendorff_alpha(x, "ordinal"),
        "alpha (interval)": krippendorff_alpha(x, "interval"),
        "Fleiss kappa": fleiss_kappa(category_counts(x[:, complete])[1]),
        "Cohen kappa (quadratic)": float(np.mean(kappas)),
        "raw agreement": float(np.mean(raw)),
    }


sweep = {noise: [agreement(noise, s) for s in SEEDS] for noise in NOISES}
MEASURES = list(sweep[NOISES[0]][0])
print(f"{'noise':>6s} " + " ".join(f"{m:>24s}" for m in MEASURES))
for noise, runs in sweep.items():
    cells = []
    for m in MEASURES:
        v = [r[m] for r in runs]
        cells.append(f"{np.mean(v):8.3f} +- {mean_se(v).se:.3f}")
    print(f"{noise:6.2f} " + " ".join(f"{c:>24s}" for c in cells))
print(f"(mean over {len(SEEDS)} panel seeds +- one standard error)")

# %% [markdown]
# ## 3. What the panel says about the two policies, and about the automatic scores
# One panel at noise 1 (perception noise with a standard deviation of one scale point). Each
# output's panel score is the mean of the ratings it got. The reward model was trained on
# the storage-word part of the judge; perplexity on neither part, though a fluent output
# tends to be a likely one (so a good correlation with perplexity is a *negative* one).

# %%
panel_ratings = rate_items(1.0, seed=0)
raters, item_ids, values = rating_matrix(panel_ratings)
x = np.array(values)
column = {iid: k for k, iid in enumerate(item_ids)}
panel_mean = np.array([np.nanmean(x[:, column[it.id]]) if it.id in column else np.nan for it in items])  # fmt: skip
ok = ~np.isnan(panel_mean)
sft = np.array([panel_mean[index[("SFT", i)]] for i in range(N_PROMPTS)])
bo = np.array([panel_mean[index[("best-of-4", i)]] for i in range(N_PROMPTS)])
both = ~np.isnan(sft) & ~np.isnan(bo)
policy_cmp = compare("best-of-4", bo[both], "SFT", sft[both])
judged = {name: np.array([item_judge[index[(name, i)]] for i in range(N_PROMPTS)]) for name in ("SFT", "best-of-4")}  # fmt: skip
truth_cmp = compare("best-of-4", judged["best-of-4"][both], "SFT", judged["SFT"][both])
print(f"panel:        {policy_cmp}")
print(f"hidden judge: {truth_cmp}")
corr = {}
for name, auto in (("reward model", auto_reward), ("perplexity", auto_ppl), ("hidden judge", item_judge)):  # fmt: skip
    corr[name] = (spearman(panel_mean[ok], auto[ok]), kendall_tau(panel_mean[ok], auto[ok]))
    print(f"panel mean vs {name:12s}: Spearman {corr[name][0]:+.3f}, Kendall tau-b {corr[name][1]:+.3f} ({ok.sum()} outputs)")  # fmt: skip

# %% [markdown]
# The same ratings, through the command a person would use: written as a ratings file
# (the format `minift rate` appends to) and read back by `minift agreement`.

# %%
ratings_file = OUT / "panel_ratings.jsonl"
ratings_file.unlink(missing_ok=True)
append_ratings(ratings_file, panel_ratings)
buf = io.StringIO()
with redirect_stdout(buf):
    status = minift.cli.main(["agreement", str(ratings_file)])
lines = buf.getvalue().splitlines()
pairwise = [line for line in lines if line.startswith("Cohen's kappa")]
print("\n".join(lines[:2] + pairwise[:3] + [f"... ({len(pairwise) - 3} more Cohen's kappa rows: every pair of raters)"] + lines[2 + len(pairwise) :]))  # fmt: skip

# %% [markdown]
# ## 4. Rate the pairs the reward model is least sure about first
# Every two samples of a prompt that the judge tells apart make a pair (pairs the judge
# scores equal have no right answer and are left out). The reward model labels every pair
# (the higher score wins). A careful person, here one simulated rater with noise 0.25
# (wrong on a pair about 0.2% of the time), corrects the labels one rating at a time: after k ratings the k rated pairs carry the rater's label
# and the rest the reward model's. In which order should the pairs be rated? Least sure
# first (smallest |reward margin|) against random orders (the mean of 50).

# %%
pair_items, pair_margin, pair_truth = [], [], []
for i in range(N_PROMPTS):
    for a in range(K):
        for b in range(a + 1, K):
            if truth[i, a] != truth[i, b] and texts[i, a] != texts[i, b]:
                pair_items.append(Item(prompts[picks[i]], (texts[i, a], texts[i, b])))
                pair_margin.append(reward[i, a] - reward[i, b])
                pair_truth.append(1 if truth[i, a] > truth[i, b] else 2)
pair_margin, pair_truth = np.array(pair_margin), np.array(pair_truth)
rm_label = np.where(pair_margin > 0, 1, 2)
rater = simulate_ratings([SimulatedRater("ana", noise=0.25, seed=7)], pair_items, truth_score)
human_label = np.array([r["preferred"] for r in rater])
n_pairs = len(pair_items)
smart = labelling_curve(margin_order(pair_margin), rm_label, human_label, pair_truth)
rng = np.random.default_rng(0)
random_curves = np.array([labelling_curve(rng.permutation(n_pairs), rm_label, human_label, pair_truth) for _ in range(50)])  # fmt: skip
rand = random_curves.mean(0)
target = smart[0] + 0.75 * (smart[-1] - smart[0])  # three quarters of the way to all-rated
k_smart = ratings_to_reach(smart, target)
k_rand = [ratings_to_reach(c, target) for c in random_curves]
print(f"{n_pairs} pairs; reward model alone right on {smart[0]:.3f}, the rater alone on {np.mean(human_label == pair_truth):.3f}")  # fmt: skip
print(f"ratings to reach {target:.3f} label accuracy: least sure first {k_smart}, random {np.mean(k_rand):.1f} +- {mean_se(k_rand).se:.1f} (50 orders)")  # fmt: skip
quarter = max(1, n_pairs // 4)
rand_hi = np.percentile(random_curves[:, quarter], 90)
print(f"after {quarter} ratings (a quarter): least sure first {smart[quarter]:.3f}, random {rand[quarter]:.3f} (90th percentile {rand_hi:.3f})")  # fmt: skip
wrong = rm_label != pair_truth
confident = np.abs(pair_margin) > np.median(np.abs(pair_margin))
print(f"the reward model is wrong on {wrong.sum()} pairs, {(wrong & confident).sum()} of them with a margin above the median: least sure first reaches those last")  # fmt: skip

# %% [markdown]
# ## 5. From pairwise ratings to DPO data
# The panel compares the same pairs; `minift ratings-to-prefs` (here
# `ratings_to_preferences`) keeps one row per pair, the majority's choice as `chosen`,
# a tie dropped. A majority of five noisy raters is right more often than one of them.

# %%
pair_ratings = simulate_ratings(panel(5, 1.0, seed=3), pair_items, truth_score)
prefs, ties = ratings_to_preferences(pair_ratings)
right = {it.id: it.outputs[t - 1] for it, t in zip(pair_items, pair_truth)}
by_text = {(p["chosen"], p["rejected"]): p for p in prefs}
majority_right = np.mean([by_text[k]["chosen"] == right[it.id] for it in pair_items for k in [(it.outputs[0], it.outputs[1]), (it.outputs[1], it.outputs[0])] if k in by_text])  # fmt: skip
single_right = np.mean([r["preferred"] == t for r, t in zip((r for r in pair_ratings if r["rater"] == "sim1"), pair_truth)])  # fmt: skip
print(f"{len(prefs)} preference rows ({ties} ties dropped); majority right on {majority_right:.3f}, one rater on {single_right:.3f}")  # fmt: skip

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for m in ("alpha (ordinal)", "Fleiss kappa", "Cohen kappa (quadratic)", "raw agreement"):
    mean = [np.mean([r[m] for r in sweep[n]]) for n in NOISES]
    se = [mean_se([r[m] for r in sweep[n]]).se for n in NOISES]
    axes[0].errorbar(NOISES, mean, yerr=se, marker="o", capsize=3, label=m)
axes[0].set_xlabel("rater noise (std, scale points)")
axes[0].set_ylabel("agreement")
axes[0].set_title("5 simulated raters, 80% coverage")
axes[0].legend(fontsize=8)
for name, col, mk in (
    ("SFT", slice(0, N_PROMPTS), "o"),
    ("best-of-4", slice(N_PROMPTS, None), "s"),
):
    axes[1].scatter(np.array(auto_reward)[col], panel_mean[col], marker=mk, alpha=0.6, label=name)
axes[1].set_xlabel("reward-model score")
axes[1].set_ylabel("panel mean rating (noise 1)")
axes[1].set_title(f"Spearman {corr['reward model'][0]:+.2f}")
axes[1].legend(fontsize=8)
ks = np.arange(n_pairs + 1)
axes[2].plot(ks, smart, label="least sure first")
axes[2].plot(ks, rand, label="random order (mean of 50)")
axes[2].fill_between(ks, np.percentile(random_curves, 10, 0), np.percentile(random_curves, 90, 0), alpha=0.2, label="random, 10-90%")  # fmt: skip
axes[2].axhline(target, color="grey", ls=":", lw=1)
axes[2].set_xlabel("pairs rated by a person")
axes[2].set_ylabel("labels right (rest: reward model)")
axes[2].legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "human_evaluation.png", dpi=110)
plt.close(fig)
print(f"plot: {OUT / 'human_evaluation.png'}")

# %% [markdown]
# ## Rating by hand
# The same loop with a person in it (the answers are typed; Ctrl-C or Ctrl-D stops and
# keeps every rating; running the same command again resumes where you stopped):
#
#     minift rate --rater YOURNAME --out ratings.jsonl                 # 20 outputs, 1-5
#     minift rate --rater YOURNAME --mode pair --by-uncertainty --out pairs.jsonl
#     minift agreement ratings.jsonl          # after a second rater has rated the same items
#     minift ratings-to-prefs pairs.jsonl --out prefs.jsonl
#     minift rlhf --method dpo --data prefs.jsonl
#
# Two raters see the same items when they use the same `--seed` and `--items`. Before
# rating, agree on a written guideline (what a 1, a 3 and a 5 look like) and rate a few
# shared items together: most disagreement in real panels comes from raters reading the
# scale differently, which bias in the simulation stands for.

# %% [markdown]
# ## What the numbers say

# %%
exact = [agreement(0.0, s, bias_spread=0.0) for s in SEEDS]
claim("raters with no noise and no bias agree perfectly: Krippendorff's alpha and Fleiss' kappa are exactly 1",
      all(r["alpha (ordinal)"] == 1.0 and r["Fleiss kappa"] == 1.0 for r in exact),
      f"alpha {[round(r['alpha (ordinal)'], 6) for r in exact]}")  # fmt: skip
lo_alpha = [r["alpha (ordinal)"] for r in sweep[0.25]]
hi_alpha = [r["alpha (ordinal)"] for r in sweep[NOISES[-1]]]
claim(f"agreement falls as raters get noisier: alpha at noise {NOISES[-1]} is below alpha at noise 0.25 in every seed",
      max(hi_alpha) < min(lo_alpha), f"{np.mean(lo_alpha):.3f} -> {np.mean(hi_alpha):.3f} over {len(SEEDS)} seeds")  # fmt: skip
raw1 = np.mean([r["raw agreement"] for r in sweep[1.0]])
kap1 = np.mean([r["Fleiss kappa"] for r in sweep[1.0]])
claim("chance correction matters: at noise 1 raw agreement is above Fleiss' kappa",
      raw1 > kap1, f"raw {raw1:.3f}, Fleiss' kappa {kap1:.3f}")  # fmt: skip
ALPHA = "Krippendorff's alpha (ordinal)"
printed = next((line for line in buf.getvalue().splitlines() if line.startswith(ALPHA)), "")
claim("minift agreement prints the same alpha as the library computes on the panel's ratings",
      status == 0 and f"{krippendorff_alpha(x, 'ordinal'):.3f}" in printed, f"{printed.strip()!r}")  # fmt: skip
claim("with every pair rated, both orders give the same labels (the curves end at one point)",
      abs(smart[-1] - rand[-1]) < 1e-12, f"{smart[-1]:.3f} vs {rand[-1]:.3f}")  # fmt: skip
claim("the panel's mean rating orders outputs like the reward model (Spearman > 0)",
      corr["reward model"][0] > 0, f"rho {corr['reward model'][0]:+.3f}, tau-b {corr['reward model'][1]:+.3f}", at_scale=True)  # fmt: skip
claim("the reward model agrees with the panel better than perplexity does (|rho|)",
      abs(corr["reward model"][0]) > abs(corr["perplexity"][0]),
      f"{corr['reward model'][0]:+.3f} vs {corr['perplexity'][0]:+.3f}", at_scale=True)  # fmt: skip
claim("the panel rates best-of-4 above SFT, beyond noise (as the hidden judge does)",
      policy_cmp.difference > 0 and not policy_cmp.within_noise,
      f"{policy_cmp.mean_b:.3f} -> {policy_cmp.mean_a:.3f}, 95% CI {policy_cmp.low:+.3f} to {policy_cmp.high:+.3f}; judge {truth_cmp.mean_b:.3f} -> {truth_cmp.mean_a:.3f}", at_scale=True)  # fmt: skip
claim(f"with a quarter of the pairs rated ({quarter}), least sure first leaves more labels right than 90% of random orders",
      smart[quarter] > rand_hi, f"{smart[quarter]:.3f} vs random mean {rand[quarter]:.3f}, 90th percentile {rand_hi:.3f}", at_scale=True)  # fmt: skip
claim("least sure first reaches the target accuracy with fewer ratings than the average random order",
      k_smart is not None and k_smart < np.mean(k_rand),
      f"{k_smart} vs {np.mean(k_rand):.1f} +- {mean_se(k_rand).se:.1f} ratings for {target:.3f}", at_scale=True)  # fmt: skip
claim("a majority of five noisy raters is right more often than one rater",
      majority_right > single_right, f"{majority_right:.3f} vs {single_right:.3f} over {n_pairs} pairs", at_scale=True)  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Give one rater of the panel a bias of +1.5 (`SimulatedRater("lenient", 1.0, bias=1.5)`).
#    Which measure drops most: Cohen's unweighted kappa, quadratic-weighted kappa, or
#    alpha (interval)? Why does a constant shift hurt some and not others?
# 2. Lower the coverage to 0.4. Fleiss' kappa now sees few complete items; how wide does
#    its spread over seeds get compared with alpha's?
# 3. Order pairs by the *largest* reward margin first. How many ratings does it take to
#    reach the target now? When would confident-first be the right order (hint: auditing
#    a model you plan to ship)?
# 4. Rate 20 outputs yourself with `minift rate --rater you`, have a friend rate the same
#    ones, and compare your alpha with the simulated panel's: what noise level are you?
