"""Judging a policy: the hidden truth, the reward model's opinion, and the distance to the
reference, all on the same fresh samples.

    truth      mean ground-truth score of the responses (tasks.truth_score)
    rm_score   mean reward-model score (normalised: 0 is the reference policy's average)
    kl         mean over responses of sum_t log pi(y_t) - log ref(y_t), the sampled
               estimate of KL(pi || ref) in nats per response
    eos_rate   fraction of responses that ended by themselves

Reporting the truth next to the reward model's score is what exposes reward hacking:
the two should rise together; when the score rises alone, the policy found a flaw in
the reward model rather than a better answer. Best-of-n is judged the same way, with the
analytic KL bound in place of the sampled estimate.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

from minift.rlhf.best_of_n import best_of_n, best_of_n_kl_bound
from minift.rlhf.preference import encode_prompt
from minift.rlhf.rollout import Rollout, response_logprobs, sample_responses
from minift.rlhf.tasks import truth_score
from minift.rlhf.trainer import reward_model_fn
from minift.tokenizer import eot_id, pad_id


class SampleRecorder:
    """Passed to an evaluation as its truth function and its reward model, it keeps every
    sample's truth and reward, so that two policies can be compared sample by sample: an
    evaluation with the same seed draws the same prompts, so sample i of every policy
    answers the same prompt (a paired comparison, minift.metrics.compare)."""

    def __init__(self, reward_model=None, truth: Callable[[str], float] = truth_score) -> None:
        self.reward_model, self.truth_fn = reward_model, truth
        self.truth: list[float] = []
        self.reward: list[float] = []

    def score(self, text: str) -> float:
        self.truth.append(self.truth_fn(text))
        return self.truth[-1]

    def __call__(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.reward_model is None:
            raise ValueError("this SampleRecorder has no reward model to call")
        scores = self.reward_model(sequences, attention_mask)
        self.reward += scores.tolist()
        return scores


@torch.no_grad()
def evaluate_rollout(
    rollout: Rollout,
    enc,
    reward_model=None,
    truth: Callable[[str], float] | None = truth_score,
) -> dict[str, float]:
    """eos_rate, length, and (when given) truth and rm_score of sampled responses."""
    out: dict[str, float] = {
        "eos_rate": float(rollout.has_eos.float().mean()),
        "length": float(rollout.response_mask.sum(1).float().mean()),
    }
    if truth is not None:
        out["truth"] = statistics.fmean(truth(t) for t in rollout.texts(enc))
    if reward_model is not None:
        out["rm_score"] = float(reward_model(rollout.sequences, rollout.attention_mask).mean())
    return out


@torch.no_grad()
def rollout_kl(policy, reference, rollout: Rollout, temperature: float = 1.0) -> float:
    """Mean over responses of sum_t log pi(y_t) - log ref(y_t) (nats per response)."""
    args = (rollout.sequences, rollout.attention_mask, rollout.prompt_len, temperature)
    lp, _ = response_logprobs(policy, *args)
    ref_lp, _ = response_logprobs(reference, *args)
    return float(((lp - ref_lp) * rollout.response_mask).sum(1).mean())


@torch.no_grad()
def evaluate_policy(
    policy,
    enc,
    prompts: Sequence[str],
    n: int = 256,
    reward_model=None,
    reference=None,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    seed: int = 1234,
    truth: Callable[[str], float] | None = truth_score,
    batch: int = 128,
) -> dict:
    """Sample n responses of ``policy`` to prompts drawn (seeded) from ``prompts`` and
    score them; the same seed draws the same prompts for every policy. ``reference`` (a
    GPT) adds the KL of the policy to it. Returns the metrics and a few sample texts."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(prompts), (n,), generator=g).tolist()
    ids = [encode_prompt(enc, prompts[i]) for i in picks]
    rows: list[dict[str, float]] = []
    texts: list[str] = []
    for i in range(0, n, batch):
        r = sample_responses(
            policy, ids[i : i + batch], max_new_tokens, eot_id(enc), pad_id(enc), temperature, g
        )
        m = evaluate_rollout(r, enc, reward_model, truth)
        if reference is not None:
            m["kl"] = rollout_kl(policy, reference, r, temperature)
        m["n"] = r.sequences.size(0)
        rows.append(m)
        texts += [f"{enc.decode(p)}|{t}" for p, t in zip(ids[i : i + batch], r.texts(enc))]
    total = sum(m["n"] for m in rows)
    keys = [k for k in rows[0] if k != "n"]
    result = {k: sum(m[k] * m["n"] for m in rows) / total for k in keys}
    result["samples"] = texts[:8]
    return result


@torch.no_grad()
def evaluate_best_of_n(
    policy,
    enc,
    reward_model,
    prompts: Sequence[str],
    n: int,
    samples: int = 128,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    seed: int = 1234,
    truth: Callable[[str], float] | None = None,
) -> dict:
    """Best-of-n under the reward model for ``samples`` prompts drawn (seeded) from
    ``prompts``: truth, reward-model score and the analytic KL bound (no weights move, so
    the KL is the bound's, not a sampled estimate)."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(prompts), (samples,), generator=g).tolist()
    ids = [encode_prompt(enc, prompts[i]) for i in picks]
    out = best_of_n(
        policy, reward_model_fn(reward_model), ids, n, max_new_tokens, eot_id(enc), pad_id(enc),
        temperature, g,
    )  # fmt: skip
    metrics = evaluate_rollout(out.rollout, enc, reward_model=None, truth=truth)
    metrics["rm_score"] = float(out.scores.mean())
    metrics["kl"] = best_of_n_kl_bound(n)
    metrics["samples"] = [
        f"{enc.decode(p)}|{t}" for p, t in zip(ids[:8], out.rollout.texts(enc)[:8])
    ]
    return metrics
