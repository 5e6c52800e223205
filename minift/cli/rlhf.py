"""`minift rlhf --method ppo|dpo|best-of-n` and `minift feedback`.

Without --data both run on the embedded default: the ``file-words`` preference task, the
base model after SFT on its demonstrations (the reference policy) and the cached reward
model, and they report the hidden ground truth next to the reward model's score. With
--data FILE (a preference JSONL, e.g. written by `minift feedback`) the reward model or
DPO trains on that file instead.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

METHODS = ("ppo", "dpo", "best-of-n")


def register(sub) -> None:
    s = sub.add_parser("rlhf", help="RLHF: PPO against a reward model, DPO, or best-of-n sampling")
    s.add_argument("--method", choices=METHODS, default="ppo")
    s.add_argument(
        "--data", help="preference JSONL (prompt, chosen, rejected); default: the file-words task"
    )
    s.add_argument("--model", help="starting policy (minift model folder); default: SFT'd base")
    s.add_argument("--iterations", type=int, default=None, help="PPO iterations")
    s.add_argument("--steps", type=int, default=None, help="DPO steps")
    s.add_argument("--rm-steps", type=int, default=None, help="reward-model steps (with --data)")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--lr", type=float, default=None)
    s.add_argument("--kl-coef", type=float, default=None, help="PPO's beta (0: no KL penalty)")
    s.add_argument("--kl-estimator", choices=("k1", "k3"), default="k1")
    s.add_argument("--adaptive-kl", action="store_true", help="adapt beta toward --kl-target")
    s.add_argument("--kl-target", type=float, default=6.0)
    s.add_argument("--critic", action="store_true", help="separate critic (from the reward model)")
    s.add_argument("--lora", type=int, default=0, help="train LoRA adapters of this rank only")
    s.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    s.add_argument("-n", type=int, default=8, help="samples per prompt for best-of-n")
    s.add_argument("--max-new-tokens", type=int, default=24)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--eval-samples", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="folder for metrics, plot and report (default runs/rlhf-METHOD)")
    s.add_argument("--save", help="save the trained policy to this folder")
    s.set_defaults(func=cmd_rlhf)

    f = sub.add_parser(
        "feedback", help="compare two sampled responses and record your preference (JSONL)"
    )
    f.add_argument("--out", default="preferences.jsonl", help="preference JSONL to append to")
    f.add_argument("--model", help="policy to sample from (default: the SFT'd base)")
    f.add_argument("--prompts", help="text file, one prompt per line (default: file-words)")
    f.add_argument("--rounds", type=int, default=10)
    f.add_argument("--answers", help="file of answers (1, 2, s or q per line) instead of asking")
    f.add_argument("--max-new-tokens", type=int, default=24)
    f.add_argument("--temperature", type=float, default=1.0)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_feedback)


def load_policy(path: str | None):
    """(policy, encoding): a saved minift model with the default tokenizer, or the SFT'd
    default policy."""
    from minift.data.encoding import default_encoding
    from minift.model import GPT
    from minift.recipes.rlhf_stages import default_policy

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


def split_preferences(rows: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """10% of the rows held out (by a stable hash of the prompt and responses); files with
    fewer than 20 rows are too small to hold any out, so everything trains."""
    from minift.data.tasks import stable_fraction

    if len(rows) < 20:
        return rows, []
    key = lambda r: r["prompt"] + "\x00" + r["chosen"] + "\x00" + r["rejected"]  # noqa: E731
    train = [r for r in rows if stable_fraction(key(r), seed) >= 0.1]
    val = [r for r in rows if stable_fraction(key(r), seed) < 0.1]
    return (train, val) if train and val else (rows, [])


def cmd_rlhf(args) -> None:
    from minift.io import write_json
    from minift.recipes.rlhf_stages import (
        default_reward_config,
        default_reward_model,
        reference_samples,
        task_prompts,
    )
    from minift.recipes.tasks import get_task
    from minift.rlhf.evaluate import evaluate_policy
    from minift.rlhf.preference import load_preferences
    from minift.rlhf.reward import train_reward_model
    from minift.rlhf.tasks import truth_score
    from minift.utils import output_dir

    rows = load_preferences(args.data) if args.data else None  # bad data fails first
    policy, enc = load_policy(args.model)
    out = pathlib.Path(args.out) if args.out else output_dir(f"rlhf-{args.method}")
    if rows is not None:
        train, val = split_preferences(rows, args.seed)
        prompts = [r["prompt"] for r in train]
        eval_prompts = [r["prompt"] for r in (val or train)]
        truth = None
        print(f"{args.data}: {len(train)} training pairs, {len(val)} held out")
    else:
        task = get_task("file-words", seed=args.seed)
        train, val = task.train, task.val
        prompts, eval_prompts, truth = task_prompts("train"), task_prompts("val"), truth_score
        print(task.summary())

    reward_model, rm_report = None, {}
    if args.data and args.method != "dpo":
        config = default_reward_config()
        if args.rm_steps:
            config = dataclasses.replace(config, steps=args.rm_steps)
        rm = train_reward_model(policy, enc, train, val or train, config)
        samples = reference_samples(policy, enc, prompts, 256, args.max_new_tokens, 1.0, seed=1)
        rm_report = {"val_accuracy": rm.accuracy, **rm.model.normalize(samples.sequences, samples.attention_mask)}  # fmt: skip
        reward_model = rm.model
    elif not args.data:
        reward_model, rm_report = default_reward_model()
    if rm_report:
        held = "held-out" if (val or not args.data) else "training"
        print(f"reward model: {held} pairwise accuracy {rm_report['val_accuracy']:.3f}")

    common = dict(
        n=args.eval_samples, reward_model=reward_model, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, truth=truth,
    )  # fmt: skip
    before = evaluate_policy(policy, enc, eval_prompts, reference=policy, **common)
    trained, after, history = _run_method(args, policy, enc, reward_model, train, val, prompts, truth, eval_prompts, out)  # fmt: skip
    if after is None:
        after = evaluate_policy(trained, enc, eval_prompts, reference=policy, **common)
    _print_report(args.method, before, after)
    report = {"method": args.method, "reference": before, "trained": after, "reward_model": {k: v for k, v in rm_report.items() if k != "history"}}  # fmt: skip
    write_json(out / "report.json", report)
    if history:
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if args.save and trained is not None:
        trained.save(args.save)
        print(f"saved the trained policy to {args.save}")
    print(f"report, metrics and plots in {out}")


def _run_method(args, policy, enc, reward_model, train, val, prompts, truth, eval_prompts, out):
    """(trained policy or None, metrics of its samples or None, history)."""
    from minift.peft import LoRAConfig
    from minift.recipes.rlhf import evaluate_best_of_n, run_ppo
    from minift.rlhf.dpo import DPOConfig, train_dpo
    from minift.rlhf.trainer import PPOConfig

    if args.method == "ppo":
        config = PPOConfig(
            iterations=args.iterations or 50, batch_size=args.batch_size or 64,
            lr=args.lr or 3e-4, kl_coef=0.2 if args.kl_coef is None else args.kl_coef,
            kl_estimator=args.kl_estimator, adaptive_kl=args.adaptive_kl,
            kl_target=args.kl_target, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, seed=args.seed, progress=True,
        )  # fmt: skip
        lora = LoRAConfig(r=args.lora, alpha=2 * args.lora, target_modules=["c_attn", "c_fc"], trainable_extra=[]) if args.lora else None  # fmt: skip
        run = run_ppo(policy, enc, reward_model, prompts, config, lora, args.critic, truth, out)
        return run.model.policy, None, run.result.history
    if args.method == "dpo":
        config = DPOConfig(
            steps=args.steps or 150, batch_size=args.batch_size or 32, lr=args.lr or 3e-4,
            beta=args.beta, seed=args.seed, progress=True, out_dir=str(out),
        )  # fmt: skip
        result = train_dpo(policy, enc, train, val or None, config)
        return result.model, None, []
    after = evaluate_best_of_n(
        policy, enc, reward_model, eval_prompts, args.n, args.eval_samples, args.max_new_tokens,
        args.temperature, truth=truth,
    )  # fmt: skip
    return None, after, []


def _print_report(method: str, before: dict, after: dict) -> None:
    keys = [k for k in ("truth", "rm_score", "kl", "eos_rate", "length") if k in after]
    label = {"truth": "ground truth", "rm_score": "reward model", "kl": "KL (nats)"}
    print(f"\n{'':14s} {'reference':>10s} {method:>10s}")
    for k in keys:
        print(f"{label.get(k, k):14s} {before.get(k, float('nan')):10.3f} {after[k]:10.3f}")
    for s in after.get("samples", [])[:4]:
        print(f"  {s}")


def cmd_feedback(args) -> None:
    from minift.recipes.rlhf_stages import task_prompts
    from minift.rlhf.feedback import collect_feedback, read_answers

    answers = read_answers(args.answers) if args.answers else None
    if args.prompts:
        lines = pathlib.Path(args.prompts).read_text(encoding="utf-8").splitlines()
        prompts = [p for p in lines if p.strip()]
        if not prompts:
            raise ValueError(f"{args.prompts}: no prompts (one per line)")
    else:
        prompts = task_prompts("val")
    policy, enc = load_policy(args.model)
    collect_feedback(
        policy, enc, prompts, args.out, args.rounds, answers, args.max_new_tokens,
        args.temperature, args.seed,
    )  # fmt: skip
