"""The model card of `minift finetune --save` (minift.recipes.model_card, written by
minift.recipes.saved.save_finetuned): the base and its fingerprint, the task or the user's
file (with its SHA-256) and its rows, the method with all its options and the training
settings, the validation metric with its 95% Wilson interval, the fairness figures when
the validation rows carry a protected attribute (a ``group`` field with two groups or
more: measured then, by minift.recipes.fairness.fairness_report), and the command line.
"""

from __future__ import annotations

import pathlib
from dataclasses import asdict
from typing import Any

from minift.recipes.cards import (
    BOOKKEEPING,
    NOT_FOR,
    USE,
    base_facts,
    command,
    data_limits,
    file_facts,
    interval_limits,
)
from minift.recipes.model_card import ModelCard, evaluation


def finetune_card(
    meta: dict, task, save: str, n: int | None, config=None, fairness: dict | None = None,
    robustness: dict | None = None, robustness_note: str = "", command_line: str | None = None,
    fairness_note: str = "",
) -> ModelCard:  # fmt: skip
    """The card of save_finetuned's folder: ``meta`` its finetune.json, ``task`` the task
    it trained on, ``n`` the examples its metric was measured on, ``config`` the
    FinetuneConfig (batch size, balance, ...; None: not recorded); a job that measured
    robustness or fairness (`minift robust|fairness --save`) gives its figures, a note on
    how they were measured, and its own command line."""
    from minift.peft.methods import get_method
    from minift.recipes.finetune import train_config

    train, t = meta["train"] or {}, meta["task"]
    registered = not t["name"].endswith((".jsonl", ".ndjson", ".json"))
    data = {"name": t["name"], "kind": t["kind"]}
    if registered:
        data["source"] = f"the registered task {t['name']!r}, built by minift from seed {t['seed']}"
        data["description"] = task.description
    else:
        data.update(file_facts(t["name"]))
    data.update({"train rows": len(task.train), "validation rows": len(task.val)})
    if t["labels"]:
        data["labels"] = t["labels"]
    defaults = get_method(meta["method"]).option_defaults()
    options = {k: v for k, v in meta["options"].items() if defaults.get(k, object()) != v}
    settings: dict[str, Any] = {"method": meta["method"], **{f"option {k}": v for k, v in meta["options"].items()}}  # fmt: skip
    settings.update({k: v for k, v in train.items() if k not in BOOKKEEPING})
    settings["max_len"] = meta["max_len"]
    extra = [] if t["seed"] == train.get("seed") else [f"the task was built with seed {t['seed']}, the training with {train.get('seed')}"]  # fmt: skip
    if config is not None:
        settings.update(batch_size=config.batch_size, pooling=config.pooling, balance=config.balance, head=config.head)  # fmt: skip
        settings["adversarial training"] = asdict(config.adversarial) if config.adversarial else "none"  # fmt: skip
        if config.pooling != "last" or config.adversarial is not None:
            extra.append("set through the Python API (FinetuneConfig): pooling, adversarial")
    else:
        extra.append("batch size, pooling and balance were not recorded (saved without its FinetuneConfig)")  # fmt: skip
    cli_fields = ("steps", "lr", "eval_every", "seed", "ckpt_every")
    api = {k: v for k, v in train.items() if k not in (*cli_fields, *BOOKKEEPING) and asdict(train_config()).get(k) != v}  # fmt: skip
    if api:
        extra.append("set through the Python API (TrainConfig): " + ", ".join(f"{k}={v!r}" for k, v in api.items()))  # fmt: skip
    base = meta["base"]
    values = {"task": t["name"], "method": meta["method"], "model": base.get("path"),
              "steps": train.get("steps"), "lr": train.get("lr"), "eval_every": train.get("eval_every"),
              "seed": train.get("seed"), "max_len": meta["max_len"]}  # fmt: skip
    if config is not None:
        values.update(batch_size=config.batch_size, balance=config.balance, head=config.head)
    values.update({**options, "save": save, "merge": meta["merged"]})
    monitor = next(iter(meta["metrics"]))
    evals = [evaluation(f"{t['name']} validation rows", meta["metrics"], n, "minift finetune")]
    use = [USE]
    if t["labels"]:
        use.append(f"It sorts a text into one of {len(t['labels'])} labels: {', '.join(t['labels'])}.")  # fmt: skip
    limits = data_limits(len(task.train), len(task.val), base["source"] == "default")
    limits += interval_limits(evals) + [NOT_FOR]
    return ModelCard(
        title=f"{pathlib.Path(t['name']).name}, fine-tuned with {meta['method']}",
        kind="finetune", base=base_facts(base), data=data,
        method=f"{meta['method']} ({get_method(meta['method']).description}); "
        f"stored as {meta['weights']}{' (merged)' if meta['merged'] else ''}; "
        f"validation metric {monitor}",
        settings=settings, evaluations=evals,
        command=command_line or command("finetune", values, bool(base.get("fast")), extra),
        intended_use=use, limitations=limits,
        fairness=fairness, fairness_note=fairness_note or default_fairness_note(fairness),
        robustness=robustness,
        robustness_note=robustness_note or "`minift finetune` does not attack the model; "
        "`minift robust --save` measures accuracy under attack (PGD in embedding space, "
        "HotFlip token swaps) and saves a model with those figures on its card.",
        loading="Load it with `minift eval --model DIR` (which updates the metrics above), "
        "`minift generate --model DIR`, or minift.recipes.saved.load_finetuned(DIR).",
        tags=[meta["method"]],
    )  # fmt: skip


def measured_fairness(model, task, enc, max_len: int) -> dict | None:
    """The fairness figures of a classifier whose validation rows carry a ``group`` (two
    groups or more), as card rows; None when they do not."""
    if task.kind != "classification" or not task.val:
        return None
    if any("group" not in r for r in task.val) or len({str(r["group"]) for r in task.val}) < 2:
        return None
    from minift.fairness import GENDER_PAIRS
    from minift.recipes.fairness import fairness_report

    # The registered task with groups writes its attribute as pronouns; for a user's file
    # no swap rule is assumed (it would be a guess), so its counterfactual test is skipped.
    pairs = None if task.name.endswith((".jsonl", ".ndjson", ".json")) else GENDER_PAIRS
    return fairness_figures(fairness_report(model, task, enc, max_len, pairs))


def fairness_figures(report: dict) -> dict:
    """A fairness report's scalars and per-group accuracies, for a card."""
    keep = ("n", "positive_label", "accuracy", "accuracy_gap", "demographic_parity", "equalized_odds", "flip_rate", "mean_change", "counterfactual_rows")  # fmt: skip
    out = {k: report[k] for k in keep if report.get(k) is not None}
    out.update({f"accuracy of group {g}": a for g, a in report["group_accuracy"].items()})
    if report.get("flip_rate") is None:
        out["counterfactual"] = report.get("counterfactual", "not measured")
    return out


def default_fairness_note(figures: dict | None) -> str:
    if figures is None:
        return (
            "The validation rows carry no protected attribute (a `group` field with two "
            "groups or more): `minift fairness --data FILE --group-field FIELD` measures "
            "per-group accuracy, demographic parity and equalized odds on a file that does."
        )
    return (
        "Measured at the end of training on the validation rows, by their `group` field "
        "(demographic parity and equalized odds: differences between the groups' rates, 0 "
        "is equal; Hardt et al. 2016). Counterfactual flip rate: the share of predictions "
        "that change when the attribute's words are swapped (Huang et al. 2020)"
        + ("." if "flip_rate" in figures else "; skipped, as the counterfactual row says.")
    )


__all__ = ["fairness_figures", "finetune_card", "measured_fairness"]
