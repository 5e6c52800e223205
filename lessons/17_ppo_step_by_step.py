# %% [markdown]
# # Lesson 17: PPO step by step
#
# Stage 3 of RLHF: make the policy produce responses the reward model (lesson 16) scores
# highly, without wandering far from the reference policy. The algorithm is PPO, proximal
# policy optimisation (Schulman et al. 2017), as used for language models by Ziegler et
# al. 2019, Stiennon et al. 2020 and Ouyang et al. 2022. The many small choices that make
# it work are catalogued by Huang et al. 2024, "The N Implementation Details of RLHF with
# PPO"; minift follows them, and this lesson walks one iteration piece by piece:
#
#     rollout -> log-probs and values -> KL and reward -> advantages -> clipped update
#
# then runs the loop and reads its dashboard. The task is lesson 16's `file-words`, whose
# hidden truth tells us whether a rising reward means better responses.

# %%
import copy
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from minift.claims import claim
from minift.metrics import compare
from minift.recipes.rlhf_methods import run_ppo
from minift.recipes.rlhf_stages import default_policy, default_reward_model, task_prompts
from minift.rlhf import ppo
from minift.rlhf.evaluate import SampleRecorder, evaluate_policy
from minift.rlhf.plots import plot_ppo
from minift.rlhf.policy import PolicyWithValue, Reference
from minift.rlhf.preference import encode_prompt
from minift.rlhf.rollout import sample_responses
from minift.rlhf.tasks import truth_score
from minift.rlhf.trainer import PPOConfig
from minift.tokenizer import eot_id, pad_id
from minift.utils import fast_mode, output_dir

t_start = time.perf_counter()
FAST = fast_mode()
OUT = output_dir("lessons", "17")
print(f"fast mode: {FAST}")
torch.manual_seed(0)

# %% [markdown]
# ## 1. The cast
# - the **policy**: the SFT model (lesson 16's starting point), which PPO trains;
# - the **reference**: a frozen copy of it; the KL to it is the leash;
# - the **reward model**: trained on the pairs and normalised so that the reference's
#   samples score mean 0, std 1 (built once and cached);
# - the **value head**: a linear layer on the policy's last hidden states, predicting the
#   return from each prefix. It starts at exactly zero (Huang et al.), so the first
#   advantages are the rewards themselves, not a random critic's noise.

# %%
policy, enc = default_policy()
reward_model, rm_report = default_reward_model()
print(f"reward model: held-out pairwise accuracy {rm_report['val_accuracy']:.3f}")
model = PolicyWithValue(copy.deepcopy(policy).requires_grad_(True))
reference = Reference(model=copy.deepcopy(policy))
EOS, PAD = eot_id(enc), pad_id(enc)
print(
    f"end token {EOS}, pad token {PAD}: distinct, so a response's end is never mistaken for padding"
)

# %% [markdown]
# ## 2. A rollout
# Prompts of different lengths are padded on the **left**: every prompt then ends in the
# same column and generation appends to all rows at once (with the KV cache). Positions
# count from each row's first real token, so padding changes nothing. Sampling uses the
# plain softmax at temperature T, with no top-k or top-p: PPO optimises the log-probs of
# the distribution it samples from, and filtering would make them differ. After a
# response's end token, the rest of its row is padding, masked out of everything.

# %%
T = 1.0
prompts = ["Return", "Open the", "Create a new", "Close"]
g = torch.Generator().manual_seed(3)
rollout = sample_responses(
    model.policy, [encode_prompt(enc, p) for p in prompts], 16, EOS, PAD, T, g
)
P = rollout.prompt_len
names = {EOS: "<eos>", PAD: "<pad>"}
for i in range(len(prompts)):
    toks = [names.get(t, enc.decode([t])) for t in rollout.sequences[i].tolist()]
    print(f"row {i}: prompt {toks[:P]} | response {toks[P:]}")
print(f"attention mask row 0: {rollout.attention_mask[0].tolist()}")
print(
    f"response mask row 0:  {rollout.response_mask[0].tolist()}  (1 up to and including the end token)"
)

# %% [markdown]
# ## 3. Log-probabilities, values, and the KL to the reference
# One forward pass over prompt + response gives, for each response token, its
# log-probability under the policy (at the same temperature T as the sampling), the
# value of the state before it, and the same log-probability under the reference. Their
# difference is a one-sample estimate of the KL, per token (Schulman 2020):
#
#     k1 = log pi - log ref          k3 = (ref/pi - 1) - log(ref/pi)  (never negative)
#
# The policy equals the reference now, so both are exactly 0.

# %%
seq, att, mask = rollout.sequences, rollout.attention_mask, rollout.response_mask
with torch.no_grad():
    logp, values, entropy = model.evaluate(seq, att, P, T)
    ref_logp = reference.logprobs(seq, att, P, T)
    score = reward_model(seq, att)
k1 = ppo.kl_estimate(logp, ref_logp, "k1") * mask
print(f"log pi of row 0's response tokens: {[round(x, 2) for x in (logp[0] * mask[0]).tolist()]}")
print(f"KL to the reference now: k1 sum {k1.sum():.1f}, max |value| {values.abs().max():.1f}")
start_kl, start_value = k1.abs().max().item(), values.abs().max().item()

# %% [markdown]
# ## 4. The reward of each token
# The reward model scores a whole response; PPO needs a reward per token. The score goes
# on the last token (the end token), and every token pays a KL penalty:
#
#     r_t = -beta * KL_t  (+ score - missing-EOS penalty, on the last token)
#
# A response that never emitted the end token within the limit is penalised (a
# truncated answer is not an answer). To make the penalty visible, pretend the policy had
# already drifted: we perturb its log-probs by a made-up amount.

# %%
beta, eos_penalty = 0.2, 1.0
fake_logp = logp + 0.3 * torch.randn_like(logp)
kl = ppo.kl_estimate(fake_logp, ref_logp, "k1") * mask
penalised = score - eos_penalty * (~rollout.has_eos).float()
rewards = ppo.shape_rewards(penalised, kl, mask, beta)
n0 = int(mask[0].sum())
print(f"row 0: score {score[0]:+.2f}, ended by itself: {bool(rollout.has_eos[0])}")
print(f"{'token':>10s} {'KL_t':>7s} {'r_t':>7s}")
for t in range(n0):
    tok = names.get(int(rollout.responses[0, t]), enc.decode([int(rollout.responses[0, t])]))
    print(f"{tok!r:>10s} {kl[0, t]:+7.3f} {rewards[0, t]:+7.3f}")

# %% [markdown]
# ## 5. Advantages: how much better than expected was each token?
# Generalised advantage estimation (Schulman et al. 2016) with gamma = 1 (the episode
# is short and the score comes at its end) and lambda = 0.95:
#
#     delta_t = r_t + V_{t+1} - V_t,     A_t = delta_t + lambda A_{t+1}
#
# With the value head at zero, A_t is the sum of the rewards from t on, discounted by
# lambda. Advantages are then *whitened* over the batch (mean 0, std 1): the update's
# scale no longer depends on the reward's.

# %%
adv, returns = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
white = ppo.masked_whiten(adv, mask)
print(f"row 0 advantages:  {[round(x, 2) for x in adv[0, :n0].tolist()]}")
print(f"row 0 whitened:    {[round(x, 2) for x in white[0, :n0].tolist()]}")
print(f"returns = advantages + values; values are all 0 now: {bool(torch.all(values == 0))}")

# %% [markdown]
# ## 6. One clipped update
# The policy loss compares the new log-probs with those at sampling time through the
# ratio rho = pi_new / pi_old and takes the *pessimistic* of the plain and the clipped
# objective, max(-A rho, -A clip(rho, 1 - eps, 1 + eps)): once a token's probability
# moved by more than eps in the direction its advantage asks for, its gradient stops.
# The value loss is clipped the same way around the old values. We take a few steps on
# this one batch and watch the ratio leave [0.8, 1.2] and the clip fraction grow.

# %%
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, eps=1e-5)
old_logp = logp.detach()
clip_fractions, first_ratio = [], None
for step in range(4):
    new_logp, new_values, _ = model.evaluate(seq, att, P, T)
    pg, st = ppo.policy_loss(new_logp, old_logp, white, mask, clip=0.2)
    vf, _ = ppo.value_loss(new_values, values, returns, mask, clip=0.2)
    ratio = (new_logp - old_logp).exp()[mask.bool()]
    clip_fractions.append(float(st["clipfrac"]))
    first_ratio = first_ratio if first_ratio is not None else (ratio - 1).abs().max().item()
    print(f"step {step}: policy loss {pg:+.4f}, value loss {vf:.4f}, ratio in [{ratio.min():.3f}, {ratio.max():.3f}], clip fraction {st['clipfrac']:.2f}")  # fmt: skip
    opt.zero_grad()
    (pg + 0.1 * vf).backward()
    opt.step()

# %% [markdown]
# ## 7. The loop
# `PPOTrainer` repeats: sample a batch of rollouts, score them, compute advantages, then
# several epochs over shuffled minibatches of that batch, then update the KL coefficient
# (here fixed). Its dashboard is what to watch: the reward-model score and the hidden
# truth, the KL it costs, the entropy, how far each update moves (clip fraction,
# approximate KL between successive policies), and the critic (value loss, explained
# variance).

# %%
config = PPOConfig(
    iterations=6 if FAST else 30, batch_size=16 if FAST else 32, num_minibatches=2,
    ppo_epochs=2, lr=3e-4, kl_coef=0.2, max_new_tokens=24, seed=0,
)  # fmt: skip
t0 = time.perf_counter()


def show(row: dict) -> None:
    if row["iteration"] % (2 if FAST else 5) == 0 or row["iteration"] == 1:
        print(f"iteration {row['iteration']:3d}: score {row['score']:+.2f}, truth {row['truth']:+.2f}, KL {row['kl']:5.2f}, entropy {row['entropy']:.2f}, clipfrac {row['clipfrac']:.2f}, explained var {row['explained_variance']:+.2f}")  # fmt: skip


run = run_ppo(policy, enc, reward_model, task_prompts("train"), config, truth=truth_score, on_iteration=show)  # fmt: skip
secs = time.perf_counter() - t0
n_samples = config.iterations * config.batch_size
print(f"{config.iterations} iterations, {n_samples} rollouts in {secs:.1f}s ({n_samples / secs:.0f} rollouts/s)")  # fmt: skip
plot_ppo(run.result.history, OUT / "ppo_dashboard.png", title="PPO on file-words, beta = 0.2")

n_eval = 64 if FAST else 256


samples = {}
for name, m in (("reference", policy), ("PPO", run.model.policy)):
    samples[name] = rec = SampleRecorder(reward_model)
    samples[name].metrics = evaluate_policy(m, enc, task_prompts("val"), n_eval, rec, policy, truth=rec.score)  # fmt: skip
before, after = samples["reference"].metrics, samples["PPO"].metrics
truth_gain = compare("PPO truth", samples["PPO"].truth, "reference truth", samples["reference"].truth)  # fmt: skip
reward_gain = compare("PPO reward", samples["PPO"].reward, "reference reward", samples["reference"].reward)  # fmt: skip
print(f"\nheld-out prompts, {n_eval} samples each:")
print(f"{'':12s} {'truth':>7s} {'reward':>7s} {'KL':>6s} {'length':>7s}")
for name, m in (("reference", before), ("PPO", after)):
    print(f"{name:12s} {m['truth']:7.3f} {m['rm_score']:7.3f} {m['kl']:6.2f} {m['length']:7.1f}")
for s in after["samples"][:5]:
    print(f"  {s}")
print(f"{reward_gain}\n{truth_gain}")

# %% [markdown]
# ## 8. The adaptive KL controller
# A fixed beta says how much reward a nat of KL is worth. Ziegler et al. 2019 instead fix
# the KL they are willing to spend: a proportional controller moves beta by at most 20%
# of the way per horizon's worth of samples,
#
#     e = clip(KL / KL_target - 1, -0.2, 0.2),    beta <- beta (1 + e n / horizon)
#
# Below, the controller reacting to this run's KL trace, with a target of 3 nats.

# %%
ctl = ppo.AdaptiveKLController(init=0.2, target=3.0, horizon=1000)
betas, right_way = [], True
for row in run.result.history:
    old = ctl.value
    ctl.update(row["kl"], config.batch_size)
    betas.append(ctl.value)
    # beta must move up when the KL is above target, down when below (or stay at the target)
    right_way &= np.sign(ctl.value - old) == np.sign(row["kl"] - 3.0)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([r["kl"] for r in run.result.history], label="KL of the run (nats)")
ax.axhline(3.0, ls="--", color="gray", label="target")
ax2 = ax.twinx()
ax2.plot(betas, color="C1", label="beta")
ax.set_xlabel("iteration")
ax.set_ylabel("KL (nats per response)")
ax2.set_ylabel("beta")
lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
fig.legend(lines, [h.get_label() for h in lines], loc="upper center", ncol=3, fontsize=8)
fig.tight_layout(rect=(0, 0, 1, 0.92))
fig.savefig(OUT / "adaptive_kl.png", dpi=110)
plt.close(fig)
print(
    f"beta: 0.200 at the start, {betas[-1]:.3f} after the trace (it grows while the KL is above target, shrinks below)"
)

# %% [markdown]
# ## What the numbers say
# The first claims are exact properties of PPO's pieces, on any base. The last two are
# what PPO is for: at scale it raises the reward model's score and, with a KL penalty and
# a good reward model, the quality people judge (Stiennon et al. 2020; Ouyang et al.
# 2022). Whether this short run on a small base does so, beyond the noise of the
# held-out samples, is measured, not assumed.

# %%
claim("before any update the policy equals the reference (KL exactly 0) and the zero-initialised value head predicts 0",
      start_kl == 0 and start_value == 0, f"max |k1| {start_kl}, max |value| {start_value}")  # fmt: skip
claim("the first clipped step starts at ratio 1, and over four steps on one batch the clip fraction grows",
      first_ratio < 1e-5 and clip_fractions[-1] > clip_fractions[0],
      f"max |ratio - 1| at step 0: {first_ratio:.1e}; clip fraction {' -> '.join(f'{c:.2f}' for c in clip_fractions)}")  # fmt: skip
claim("the adaptive controller raised beta at every step where the KL was above target and lowered it where below",
      bool(right_way), f"beta 0.200 -> {betas[-1]:.3f}")  # fmt: skip
claim("PPO raised the reward model's score on held-out prompts, beyond noise",
      reward_gain.difference > 0 and not reward_gain.within_noise,
      f"{reward_gain.mean_b:+.3f} -> {reward_gain.mean_a:+.3f}, 95% CI of the gain {reward_gain.low:+.3f} to {reward_gain.high:+.3f}", at_scale=True)  # fmt: skip
claim("PPO raised the hidden truth on held-out prompts, beyond noise",
      truth_gain.difference > 0 and not truth_gain.within_noise,
      f"{truth_gain.mean_b:+.3f} -> {truth_gain.mean_a:+.3f}, 95% CI of the gain {truth_gain.low:+.3f} to {truth_gain.high:+.3f}", at_scale=True)  # fmt: skip
if FAST:
    print("(fast mode: a tiny base and few iterations exercise the code; the numbers need normal mode)")  # fmt: skip
print(f"lesson done in {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# ## Exercises
# 1. Set `kl_estimator="k3"` and compare the KL curves. Which estimate is noisier per
#    batch, and why does the reward use k1 by default?
# 2. Turn whitening of advantages off (`whiten_advantages=False`). What happens to the
#    clip fraction in the first iterations?
# 3. Use a separate critic initialised from the reward model (`run_ppo(..., critic=True)`).
#    How does the explained variance start, compared with the zero value head?
# 4. Train through LoRA (`run_ppo(..., lora=LoRAConfig(r=8, target_modules=["c_attn",
#    "c_fc"], trainable_extra=[]))`): the reference is then the same model with its
#    adapters off. Compare the truth reached and the parameters trained.
