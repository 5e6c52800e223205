"""`minift rlhf`: improve a policy from preferences by PPO, DPO or best-of-n, and report it.

    data    = preference pairs: a JSONL file (prompt, chosen, rejected), or the embedded
              file-words task, whose hidden ground truth the report shows beside the reward
    policy  = a saved model, or the base after SFT (minift.recipes.rlhf_stages)
    reward  = a reward model trained on the file (PPO, best-of-n), or the cached default one
    method  = PPO against the reward model with a KL penalty to the policy (run_ppo), DPO on
              the pairs (run_dpo), or best-of-n sampling, which trains nothing
    report  = truth, reward-model score, KL and length before and after: report.json,
              metrics.jsonl and ppo.png under ``out``

    run_rlhf(RLHFJob(method="dpo", data="prefs.jsonl", lora=8))

The methods are minift.recipes.rlhf_methods (run_ppo, run_dpo); the stages before them,
the SFT policy and the default reward model, minift.recipes.rlhf_stages.
"""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from minift.data.encoding import default_encoding
from minift.io import write_json
from minift.model import GPT
from minift.peft import merge_and_unload
from minift.recipes.cards import policy_facts, rlhf_card
from minift.recipes.model_card import write_card
from minift.recipes.rlhf_methods import rlhf_lora, run_dpo, run_ppo
from minift.recipes.rlhf_stages import (
    DEFAULT_TASK,
    default_policy,
    default_reward_config,
    default_reward_model,
    reference_samples,
    task_prompts,
)
from minift.recipes.saved import weights_fingerprint
from minift.recipes.tasks import get_task
from minift.rlhf.dpo import DPOConfig
from minift.rlhf.dpo import train_config as dpo_train_config
from minift.rlhf.evaluate import evaluate_best_of_n, evaluate_policy
from minift.rlhf.preference import load_preferences, split_preferences
from minift.rlhf.reward import train_reward_model
from minift.rlhf.tasks import truth_score
from minift.rlhf.trainer import PPOConfig
from minift.utils import fast_mode, output_dir

METHODS = ("ppo", "dpo", "best-of-n")


@dataclass
class RLHFJob:
    method: str = "ppo"  # one of METHODS
    data: str | None = None  # preference JSONL; None: the file-words task
    model: str | None = None  # starting policy (a minift model folder); None: the SFT'd base
    rm_steps: int | None = None  # reward-model steps on data; None: default_reward_config's
    lora: int = 0  # PPO, DPO: train LoRA adapters of this rank only; 0: every weight
    critic: bool = False  # PPO: a separate critic started from the reward model
    n: int = 8  # best-of-n: samples per prompt
    eval_samples: int = 256  # responses sampled to judge each policy
    seed: int = 0  # the task and the held-out split
    out: str | None = None  # report folder (default runs/rlhf-METHOD)
    save: str | None = None  # save the trained policy here (LoRA merged)
    # Every method samples with ppo.max_new_tokens and ppo.temperature.
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(progress=True))
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(train=dpo_train_config(progress=True)))  # fmt: skip

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.rm_steps is not None and self.rm_steps < 1:
            raise ValueError(f"rm_steps must be >= 1, got {self.rm_steps}")
        if self.lora < 0 or self.n < 1 or self.eval_samples < 1:
            raise ValueError(f"need lora >= 0, n >= 1, eval_samples >= 1: {self.lora}, {self.n}, {self.eval_samples}")  # fmt: skip
        if self.lora and self.method == "best-of-n":
            raise ValueError("best-of-n trains nothing: LoRA applies to ppo and dpo")
        if self.critic and self.method != "ppo":
            raise ValueError("a critic is PPO's: use it with method='ppo'")


@dataclass
class Preferences:
    train: list[dict]
    val: list[dict]
    prompts: list[str]  # what PPO samples responses to
    eval_prompts: list[str]  # what each policy is judged on
    truth: Callable[[str], float] | None  # the hidden ground truth (the embedded task only)


def run_rlhf(job: RLHFJob) -> dict:
    """Run the job; return its report (also written to report.json)."""
    rows = load_preferences(job.data) if job.data else None  # bad data fails first
    policy, enc = load_policy(job.model)
    out = pathlib.Path(job.out) if job.out else output_dir(f"rlhf-{job.method}")
    data = preferences(job, rows)
    reward_model, rm_report = reward_stage(job, policy, enc, data)
    judge = dict(
        n=job.eval_samples, reward_model=reward_model, max_new_tokens=job.ppo.max_new_tokens,
        temperature=job.ppo.temperature, truth=data.truth,
    )  # fmt: skip
    before = evaluate_policy(policy, enc, data.eval_prompts, reference=policy, **judge)
    trained, after, history = run_method(job, policy, enc, reward_model, data, out)
    if after is None:
        after = evaluate_policy(trained, enc, data.eval_prompts, reference=policy, **judge)
    print_comparison(job.method, before, after)
    rm_report = {k: v for k, v in rm_report.items() if k != "history"}
    report = {"method": job.method, "reference": before, "trained": after, "reward_model": rm_report}  # fmt: skip
    write_json(out / "report.json", report)
    if history:
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if job.save and trained is not None:
        (merge_and_unload(copy.deepcopy(trained)) if job.lora else trained).save(job.save)
        policy_card = policy_facts(job.model, weights_fingerprint(policy))
        pairs = (len(data.train), len(data.val))
        write_card(job.save, rlhf_card(job, report, policy_card, pairs, fast_mode()))
        print(f"saved the trained policy (and its model card) to {job.save}")
    print(f"report, metrics and plots in {out}")
    return report


def load_policy(path: str | None) -> tuple[GPT, object]:
    """(policy, encoding): a saved minift model with the default tokenizer, or the SFT'd
    default policy."""
    if path is None:
        return default_policy()
    folder = pathlib.Path(path)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder} is not a minift model folder (no model.safetensors)")
    model = GPT.load(folder).eval()
    enc = default_encoding()
    if model.config.vocab_size != enc.n_vocab:
        raise ValueError(
            f"{folder} has a {model.config.vocab_size}-token vocabulary but the default "
            f"tokenizer has {enc.n_vocab}; use a model trained with minift's tokenizer"
        )
    return model, enc


def preferences(job: RLHFJob, rows: list[dict] | None) -> Preferences:
    """The file's pairs (10% held out), or the embedded task with its hidden truth."""
    if rows is not None:
        train, val = split_preferences(rows, job.seed)
        print(f"{job.data}: {len(train)} training pairs, {len(val)} held out")
        prompts = [r["prompt"] for r in train]
        return Preferences(train, val, prompts, [r["prompt"] for r in (val or train)], None)
    task = get_task(DEFAULT_TASK, seed=job.seed)
    print(task.summary())
    return Preferences(task.train, task.val, task_prompts("train"), task_prompts("val"), truth_score)  # fmt: skip


def reward_stage(job: RLHFJob, policy: GPT, enc, data: Preferences):
    """(reward model or None, its report): trained on the file's pairs and normalised on
    the policy's samples (DPO needs none), or the cached default one."""
    if job.data is None:
        reward_model, report = default_reward_model()
    elif job.method == "dpo":
        return None, {}
    else:
        config = default_reward_config()
        if job.rm_steps is not None:
            config = replace(config, train=replace(config.train, steps=job.rm_steps))
        rm = train_reward_model(policy, enc, data.train, data.val or data.train, config)
        samples = reference_samples(policy, enc, data.prompts, 256, job.ppo.max_new_tokens, 1.0, seed=1)  # fmt: skip
        norm = rm.model.normalize(samples.sequences, samples.attention_mask)
        reward_model, report = rm.model, {"val_accuracy": rm.accuracy, **norm}
    held = "held-out" if (data.val or job.data is None) else "training"
    print(f"reward model: {held} pairwise accuracy {report['val_accuracy']:.3f}")
    return reward_model, report


def run_method(job: RLHFJob, policy: GPT, enc, reward_model, data: Preferences, out):
    """(trained policy or None, metrics of best-of-n's samples or None, history)."""
    lora = rlhf_lora(job.lora)
    if job.method == "ppo":
        run = run_ppo(policy, enc, reward_model, data.prompts, job.ppo, lora, job.critic, data.truth, out)  # fmt: skip
        return run.model.policy, None, run.result.history
    if job.method == "dpo":  # the job owns its folder: what another run left there is replaced
        train = replace(job.dpo.train, out_dir=str(out), overwrite=True)
        dpo = run_dpo(
            policy, enc, data.train, data.val or None, replace(job.dpo, train=train), lora
        )
        return dpo.model, None, []
    after = evaluate_best_of_n(
        policy, enc, reward_model, data.eval_prompts, job.n, job.eval_samples,
        job.ppo.max_new_tokens, job.ppo.temperature, truth=data.truth,
    )  # fmt: skip
    return None, after, []


def print_comparison(method: str, before: dict, after: dict) -> None:
    keys = [k for k in ("truth", "rm_score", "kl", "eos_rate", "length") if k in after]
    label = {"truth": "ground truth", "rm_score": "reward model", "kl": "KL (nats)"}
    print(f"\n{'':14s} {'reference':>10s} {method:>10s}")
    for k in keys:
        print(f"{label.get(k, k):14s} {before.get(k, float('nan')):10.3f} {after[k]:10.3f}")
    for s in after.get("samples", [])[:4]:
        print(f"  {s}")
