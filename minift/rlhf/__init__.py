"""Reinforcement learning from human feedback: preference data, a reward model, PPO, DPO,
best-of-n, and a loop that learns from a user's own preferences.

    preference.py  JSONL prompt/chosen/rejected rows as token batches
    tasks.py       file-words: a preference task with a hidden ground-truth score
    reward.py      reward model (GPT + scalar head), Bradley-Terry loss, normalisation
    rollout.py     batched sampling with left padding, log-probabilities at a temperature
    ppo.py         GAE, whitening, clipped losses, KL estimators and controllers
    policy.py      policy with a value head or a critic; the reference model
    trainer.py     the PPO loop
    dpo.py         direct preference optimisation
    best_of_n.py   rejection sampling under the reward model
    evaluate.py    truth, reward-model score and KL of a policy's samples (and best-of-n's)
    feedback.py    `minift feedback`: record a user's preferences

The jobs are in minift.recipes: rlhf_stages (the cached SFT policy and reward model of
the embedded default), rlhf_methods (one-call PPO and DPO, LoRA or not) and rlhf (the
`minift rlhf` job); the command line is minift.cli.rlhf.
"""

from minift.rlhf.best_of_n import best_of_n, best_of_n_kl_bound
from minift.rlhf.dpo import DPOConfig, dpo_loss, train_dpo
from minift.rlhf.evaluate import evaluate_policy, evaluate_rollout
from minift.rlhf.feedback import collect_feedback
from minift.rlhf.policy import Critic, PolicyWithValue, Reference
from minift.rlhf.preference import encode_pairs, load_preferences
from minift.rlhf.reward import RewardConfig, RewardModel, bradley_terry_loss, train_reward_model
from minift.rlhf.rollout import Rollout, sample_responses
from minift.rlhf.trainer import PPOConfig, PPOTrainer, reward_model_fn

__all__ = [
    "Critic", "DPOConfig", "PPOConfig", "PPOTrainer", "PolicyWithValue", "Reference",
    "RewardConfig", "RewardModel", "Rollout", "best_of_n", "best_of_n_kl_bound",
    "bradley_terry_loss", "collect_feedback", "dpo_loss", "encode_pairs", "evaluate_policy",
    "evaluate_rollout", "load_preferences", "reward_model_fn", "sample_responses",
    "train_dpo", "train_reward_model",
]  # fmt: skip
