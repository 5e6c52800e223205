"""`minift rlhf --method ppo|dpo|best-of-n` and `minift feedback`.

Without --data both run on the embedded default: the ``file-words`` preference task, the
base model after SFT on its demonstrations (the reference policy) and the cached reward
model, and they report the hidden ground truth next to the reward model's score. With
--data FILE (a preference JSONL, e.g. written by `minift feedback`) the reward model or
DPO trains on that file instead. The job is minift.recipes.rlhf (RLHFJob, run_rlhf);
every default here is a config's.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from minift.recipes.rlhf import METHODS, RLHFJob

    job = RLHFJob()  # the defaults
    ppo, dpo = job.ppo, job.dpo
    s = sub.add_parser("rlhf", help="RLHF: PPO against a reward model, DPO, or best-of-n sampling")
    s.add_argument("--method", choices=METHODS, default=job.method)
    s.add_argument("--data", default=job.data, help="preference JSONL (prompt, chosen, rejected); default: the file-words task")  # fmt: skip
    s.add_argument("--model", default=job.model, help="starting policy (minift model folder); default: SFT'd base")  # fmt: skip
    s.add_argument("--iterations", type=int, default=ppo.iterations, help="PPO iterations")
    s.add_argument("--steps", type=int, default=dpo.train.steps, help="DPO steps")
    s.add_argument("--rm-steps", type=int, default=job.rm_steps, help="reward-model steps (with --data; default: the default reward model's)")  # fmt: skip
    # One flag for the method that trains; None takes that method's default.
    s.add_argument("--batch-size", type=int, default=None, help=f"rollouts (PPO, default {ppo.batch_size}) or pairs (DPO, default {dpo.batch_size}) per step")  # fmt: skip
    s.add_argument("--lr", type=float, default=None, help=f"learning rate (default PPO {ppo.lr}, DPO {dpo.train.lr})")  # fmt: skip
    s.add_argument("--kl-coef", type=float, default=ppo.kl_coef, help="PPO's beta (0: no KL penalty)")  # fmt: skip
    s.add_argument("--kl-estimator", choices=("k1", "k3"), default=ppo.kl_estimator)
    s.add_argument("--adaptive-kl", action="store_true", help="adapt beta toward --kl-target")
    s.add_argument("--kl-target", type=float, default=ppo.kl_target)
    s.add_argument("--critic", action="store_true", help="separate critic (from the reward model)")
    s.add_argument("--lora", type=int, default=job.lora, help="train LoRA adapters of this rank only (PPO, DPO)")  # fmt: skip
    s.add_argument("--beta", type=float, default=dpo.beta, help="DPO's beta")
    s.add_argument("-n", type=int, default=job.n, help="samples per prompt for best-of-n")
    s.add_argument("--max-new-tokens", type=int, default=ppo.max_new_tokens)
    s.add_argument("--temperature", type=float, default=ppo.temperature)
    s.add_argument("--eval-samples", type=int, default=job.eval_samples)
    s.add_argument("--seed", type=int, default=job.seed)
    s.add_argument("--out", default=job.out, help="folder for metrics, plot and report (default runs/rlhf-METHOD)")  # fmt: skip
    s.add_argument("--save", default=job.save, help="save the trained policy to this folder")
    s.set_defaults(func=cmd_rlhf)

    f = sub.add_parser("feedback", help="compare two sampled responses and record your preference (JSONL)")  # fmt: skip
    f.add_argument("--out", default=None, help="preference JSONL to append to (default: preferences.jsonl, or $MINIFT_HOME/users/USER.jsonl with --user)")  # fmt: skip
    f.add_argument("--user", default=None, help="whose preferences these are (for `minift personalize --user`)")  # fmt: skip
    f.add_argument("--model", help="policy to sample from (default: the SFT'd base)")
    f.add_argument("--prompts", help="text file, one prompt per line (default: file-words)")
    f.add_argument("--rounds", type=int, default=10)
    f.add_argument("--answers", help="file of answers (1, 2, s or q per line) instead of asking")
    f.add_argument("--max-new-tokens", type=int, default=ppo.max_new_tokens)
    f.add_argument("--temperature", type=float, default=ppo.temperature)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_feedback)


def given(method: str, a: argparse.Namespace, trains: str) -> dict:
    """--batch-size and --lr for the config of ``trains`` when it is the method that runs
    and they were given (None: the config's default)."""
    options = {"batch_size": a.batch_size, "lr": a.lr}
    return {k: v for k, v in options.items() if v is not None} if method == trains else {}


def cmd_rlhf(a: argparse.Namespace) -> None:
    from minift.recipes.rlhf import RLHFJob, run_rlhf
    from minift.rlhf.dpo import DPOConfig, train_config
    from minift.rlhf.trainer import PPOConfig

    ppo = PPOConfig(
        iterations=a.iterations, kl_coef=a.kl_coef, kl_estimator=a.kl_estimator,
        adaptive_kl=a.adaptive_kl, kl_target=a.kl_target, max_new_tokens=a.max_new_tokens,
        temperature=a.temperature, seed=a.seed, progress=True, **given(a.method, a, "ppo"),
    )  # fmt: skip
    dpo_options = given(a.method, a, "dpo")
    lr = {"lr": dpo_options.pop("lr")} if "lr" in dpo_options else {}
    train = train_config(steps=a.steps, seed=a.seed, progress=True, **lr)
    dpo = DPOConfig(beta=a.beta, train=train, **dpo_options)
    job = RLHFJob(
        method=a.method, data=a.data, model=a.model, rm_steps=a.rm_steps, lora=a.lora,
        critic=a.critic, n=a.n, eval_samples=a.eval_samples, seed=a.seed, out=a.out,
        save=a.save, ppo=ppo, dpo=dpo,
    )  # fmt: skip
    run_rlhf(job)  # bad values fail above, in the configs, before any training


def cmd_feedback(a: argparse.Namespace) -> None:
    import pathlib

    from minift.recipes.rlhf import load_policy
    from minift.recipes.rlhf_stages import task_prompts
    from minift.rlhf.feedback import collect_feedback, read_answers

    answers = read_answers(a.answers) if a.answers else None
    if a.prompts:
        lines = pathlib.Path(a.prompts).read_text(encoding="utf-8").splitlines()
        prompts = [p for p in lines if p.strip()]
        if not prompts:
            raise ValueError(f"{a.prompts}: no prompts (one per line)")
    else:
        prompts = task_prompts("val")
    out = a.out or "preferences.jsonl"
    if a.user:
        from minift.recipes.personalize import user_preferences_path

        out = a.out or user_preferences_path(a.user)
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    policy, enc = load_policy(a.model)
    collect_feedback(
        policy, enc, prompts, out, a.rounds, answers, a.max_new_tokens, a.temperature, a.seed
    )
    if a.user:
        print(f"train {a.user}'s adapter on them with `minift personalize --user {a.user}`")
