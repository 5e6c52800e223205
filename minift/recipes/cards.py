"""What each saving command writes on its model card (minift.recipes.model_card): the
facts of one run, gathered where the model is saved.

    finetune_card     `minift finetune --save` (minift.recipes.finetune_card)
    distill_card      `minift distill --save`: the student's backbone, teacher and student
    rlhf_card         `minift rlhf --save`: the policy, before and after
    personalize_card  `minift personalize`: a user's adapter
    (pretrain and export --hf: minift.recipes.base_card)

Each card's command is rebuilt from the run's own settings, every value spelled out, so it
trains the same model even after a default changes; a setting the command line cannot
express is listed under the command instead of being left out silently.
"""

from __future__ import annotations

import hashlib
import pathlib
import shlex
from dataclasses import fields
from typing import Any

from minift.recipes.model_card import ModelCard, evaluation

# TrainConfig fields that only say where and how loudly a run reports
BOOKKEEPING = ("out_dir", "overwrite", "progress", "desc", "log_every", "ckpt_every", "monitor", "mode")  # fmt: skip
USE = (
    "Research and teaching: a small model fine-tuned with minift to study the method, on "
    "rows like its training data."
)
NOT_FOR = (
    "Not for decisions about people, and not for any use where an error costs something: it "
    "is small, trained on little data, and was evaluated on that data's distribution alone."
)


def flags(values: dict[str, Any]) -> list[str]:
    """``{"batch_size": 32, "baseline": True}`` as ``--batch-size 32 --baseline`` (a key
    that starts with "-" is the flag itself); None and False are left out (the command's
    default is then the run's)."""
    out: list[str] = []
    for key, value in values.items():
        flag = key if key.startswith("-") else "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(map(str, value))]
        else:
            out += [flag, repr(value) if isinstance(value, float) else str(value)]
    return out


def command(name: str, values: dict[str, Any], fast: bool, extra: list[str] = ()) -> str:
    env = ["MINIFT_FAST=1"] if fast else []
    return shlex.join([*env, "minift", name, *flags(values)]) + "".join(f"\n# {x}" for x in extra)


def file_facts(path: str) -> dict[str, Any]:
    """A user's data file by path and the SHA-256 of its bytes (which file, exactly)."""
    p = pathlib.Path(path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else "(file gone)"
    return {"source": f"the user's file {p.resolve()}", "sha256": digest}


def base_facts(base: dict[str, Any]) -> dict[str, Any]:
    """minift.recipes.saved.base_reference(...) as card rows."""
    if base["source"] == "default":
        what = "the embedded default: minift's GPT pretrained on Python's docstrings (pydocs)"
        facts = {"source": what, "size": base.get("size"), "fast mode": base.get("fast")}
    else:
        facts = {"source": f"the model folder {base['path']}"}
    return {**facts, "weights fingerprint": base["fingerprint"]}


def data_limits(n_train: int, n_val: int | None, base_default: bool) -> list[str]:
    out = [
        f"Trained on {n_train} rows"
        + (f" and evaluated on {n_val} held-out rows" if n_val else "")
        + " of one data set: the metrics describe rows like these, nothing else. No "
        "out-of-distribution test was run.",
    ]
    if base_default:
        out.append(
            "The base was pretrained on Python's docstrings only: it knows technical English "
            "and little else, and a few million parameters limit what any fine-tune can learn."
        )
    return out


def interval_limits(evaluations: list[dict]) -> list[str]:
    out = []
    for e in evaluations:
        for name, m in e["metrics"].items():
            if "low" in m and m["high"] - m["low"] > 0.1:
                out.append(
                    f"{name} on {e['n']} examples is only known to within "
                    f"[{m['low']:.3f}, {m['high']:.3f}] (95%): more evaluation rows narrow it."
                )
    return out


# ------------------------------------------------------------------ the other saving commands
def _settings(obj, skip=()) -> dict[str, Any]:
    """A config dataclass's fields as card rows (a nested TrainConfig without bookkeeping)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in skip:
            continue
        if hasattr(value, "__dataclass_fields__"):
            out.update({f"{f.name}.{k}": v for k, v in _settings(value, BOOKKEEPING).items()})
        else:
            out[f.name] = value
    return out


def policy_facts(model: str | None, fingerprint: str) -> dict[str, Any]:
    what = f"the model folder {model}" if model else (
        "the default policy: minift's embedded base after supervised fine-tuning on "
        "file-words-sft (minift.recipes.rlhf_stages)"
    )  # fmt: skip
    return {"source": what, "weights fingerprint": fingerprint}


def distill_limits(task, base: dict) -> list[str]:
    out = data_limits(len(task.train) if task else 0, len(task.val) if task else None, base["source"] == "default")  # fmt: skip
    return out if task is not None else out[1:]  # pydocs: no rows to count


def distill_card(job, report: dict, task, base: dict, fast: bool) -> ModelCard:
    """`minift distill --save`: the student (a classifier with its head, or a language model)."""
    run, teacher = report["runs"]["distilled"], report["teacher"]
    name = run["metric_name"]
    n = len(task.val) if task is not None else None
    data = {"name": job.task, "kind": "text" if task is None else task.kind}
    data.update(
        {"source": "Python's docstrings (pydocs), windows of 64 tokens"} if task is None
        else {"train rows": len(task.train), "validation rows": len(task.val)}
    )  # fmt: skip
    metrics = {name: run["metric"], "val_loss": run["val_loss"]}
    evals = [evaluation(f"{job.task} validation rows", metrics, n, "minift distill")]
    t = job.distill.train
    values = {**{k: getattr(job, k) for k in ("task", "teacher_steps", "init", "budget", "layers", "heads")},
              **_settings(job.distill, ("train",)), "transfer": job.transfer, "on_policy": job.on_policy,
              "prompt_len": job.prompt_len, "lr": t.lr, "batch_size": job.batch_size,
              "steps": t.steps, "eval_every": t.eval_every, "seed": t.seed, "save": job.save}  # fmt: skip
    return ModelCard(
        title=f"a student distilled from a {job.task} teacher", kind="distill",
        base=base_facts(base), data=data,
        method=f"knowledge distillation into {report['student']['params']:,} parameters "
        f"(teacher {report['teacher']['params']:,}; teacher {name} "
        f"{teacher['metrics'].get(name, float('nan')):.4f})",
        settings=_settings(job, ("out", "save", "speed_repeats")), evaluations=evals,
        command=command("distill", values, fast), intended_use=[USE],
        limitations=[
            *distill_limits(task, base),
            *interval_limits(evals), NOT_FOR,
        ],
        fairness_note="`minift distill` measures no fairness figure.",
        robustness_note="`minift distill` attacks nothing; `minift robust` measures it.",
        loading="`minift eval --model DIR` measures the classifier again (its head and "
        "tokenizer are in the folder); a pydocs student loads with minift.model.GPT.load(DIR).",
        tags=[job.init],
    )  # fmt: skip


def rlhf_card(job, report: dict, policy: dict, pairs: tuple[int, int], fast: bool) -> ModelCard:
    """`minift rlhf --save`: the trained policy (LoRA merged), judged before and after."""
    data = {"name": job.data or "file-words", "kind": "preference pairs"}
    data.update(file_facts(job.data) if job.data else {"source": "the embedded file-words task (minift.rlhf.tasks)"})  # fmt: skip
    data.update({"train pairs": pairs[0], "held-out pairs": pairs[1]})
    keys = ("truth", "rm_score", "kl", "eos_rate", "length")
    held = (
        "held-out" if pairs[1] or job.data is None else "training (too few pairs to hold any out)"
    )
    judged = f"{job.eval_samples} sampled responses to {held} prompts"
    evals = [
        evaluation(f"{judged}: the trained policy", {k: report["trained"][k] for k in keys if k in report["trained"]}, job.eval_samples, "minift rlhf"),
        evaluation(f"{judged}: the starting policy", {k: report["reference"][k] for k in keys if k in report["reference"]}, job.eval_samples, "minift rlhf"),
    ]  # fmt: skip
    dpo, ppo = job.method == "dpo", job.method == "ppo"
    values = {"method": job.method, "data": job.data, "model": job.model, "iterations": job.ppo.iterations,
              "steps": job.dpo.train.steps, "rm_steps": job.rm_steps,
              "batch_size": job.dpo.batch_size if dpo else job.ppo.batch_size if ppo else None,
              "lr": job.dpo.train.lr if dpo else job.ppo.lr if ppo else None,
              "kl_coef": job.ppo.kl_coef, "kl_estimator": job.ppo.kl_estimator,
              "adaptive_kl": job.ppo.adaptive_kl, "kl_target": job.ppo.kl_target, "critic": job.critic,
              "lora": job.lora, "beta": job.dpo.beta, "-n": job.n, "max_new_tokens": job.ppo.max_new_tokens,
              "temperature": job.ppo.temperature, "eval_samples": job.eval_samples, "seed": job.seed,
              "save": job.save}  # fmt: skip
    return ModelCard(
        title=f"a policy trained by {job.method}", kind="rlhf", base=policy, data=data,
        method=f"{job.method} on preference pairs" + (f", LoRA rank {job.lora} merged" if job.lora else ""),  # fmt: skip
        settings=_settings(job, ("out", "save")), evaluations=evals,
        command=command("rlhf", values, fast), intended_use=[USE],
        limitations=[
            "Scores are means over sampled responses (no interval: the per-sample scores are "
            "not kept); truth exists for the embedded task only, rm_score is a learned proxy "
            "that a policy can exploit (reward hacking), kl is the distance travelled from the "
            "starting policy.",
            NOT_FOR,
        ],
        fairness_note="`minift rlhf` measures no fairness figure.",
        robustness_note="`minift rlhf` attacks nothing.",
        loading="Load it with `minift generate --model DIR` or minift.model.GPT.load(DIR).",
        tags=[job.method],
    )  # fmt: skip


def personalize_card(job, report: dict, policy: dict, fast: bool) -> ModelCard:
    """`minift personalize`: one user's adapter on the shared policy."""
    data = {"name": report["source"], "kind": report["method"] == "dpo" and "preference pairs" or "prompt/response rows"}  # fmt: skip
    if job.data:
        data.update(file_facts(job.data))
    data.update({"train rows": report["train_rows"], "held-out pairs": report["val_pairs"]})
    evals = []
    if "val_accuracy" in report:
        evals.append(evaluation(f"{report['val_pairs']} held-out pairs of {report['source']}", {"val_accuracy": report["val_accuracy"]}, report["val_pairs"], "minift personalize"))  # fmt: skip
    if "hidden_preference_accuracy" in report:
        evals.append(evaluation(f"{report['hidden_pairs']} pairs judged by the hidden taste of simulated user {job.user!r}", {"hidden_preference_accuracy": report["hidden_preference_accuracy"]}, report["hidden_pairs"], "minift personalize"))  # fmt: skip
    values = {k: getattr(job, k) for k in ("user", "data", "model", "rank", "steps", "lr", "beta", "save", "seed")}  # fmt: skip
    return ModelCard(
        title=f"{job.user}'s personal adapter", kind="personalize", base=policy, data=data,
        method=f"LoRA rank {job.rank} trained by {report['method']} on one user's data",
        settings=_settings(job), evaluations=evals, command=command("personalize", values, fast),
        intended_use=[USE, f"It serves one user ({job.user}); it says nothing about anyone else's taste."],  # fmt: skip
        limitations=[
            "Preference accuracy: the share of held-out pairs where the adapter's implicit "
            "DPO reward ranks the chosen response above the rejected one.",
            *interval_limits(evals), NOT_FOR,
        ],
        fairness_note="`minift personalize` measures no fairness figure.",
        robustness_note="`minift personalize` attacks nothing.",
        loading="Load it with `minift generate --adapter DIR`.", tags=["lora"],
    )  # fmt: skip


__all__ = [
    "NOT_FOR", "USE", "base_facts", "command", "data_limits", "distill_card", "file_facts",
    "flags", "interval_limits", "personalize_card", "policy_facts", "rlhf_card",
]  # fmt: skip
