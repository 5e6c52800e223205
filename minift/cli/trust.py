"""Trustworthy fine-tuning: `minift robust` (adversarial training and attacks),
`minift backdoor` (a poisoned fine-tune and two defences), `minift scrub` (secrets out of
a JSONL file), `minift fairness` (group metrics and mitigations).

    minift robust --task doc-returns --method full --radius 0.2 --trainings standard,fgm,pgd,freelb
    minift robust --method lora --norm linf --radius 0.005 --radii 0.002,0.005 --swaps 1
    minift backdoor --task doc-returns --rates 0,0.01,0.03,0.1 --defend-at 0.1
    minift scrub data.jsonl clean.jsonl --fields text,response
    minift fairness --task doc-returns-people --mitigations none,cda,reweight
    minift fairness --data people.jsonl --group-field gender --swap gender
    minift fairness --model runs/saved --data people.jsonl --group-field gender

The jobs are minift.recipes.robust and minift.recipes.security; the algorithms
minift.robust and minift.security.
"""

from __future__ import annotations

import argparse


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def register(sub) -> None:
    from minift.peft.methods import METHODS
    from minift.recipes.robust import AttackConfig
    from minift.robust import NORMS

    a = AttackConfig()
    s = sub.add_parser("robust", help="adversarial training, and attacks on the result")
    s.add_argument("--task", default="doc-returns", help="a classification task")
    s.add_argument("--method", default="full", choices=sorted(METHODS))
    s.add_argument(
        "--trainings", default="standard,fgm,pgd,freelb",
        help="comma-separated: standard and any of fgm, pgd, freelb",
    )  # fmt: skip
    s.add_argument("--radius", type=float, default=0.2, help="adversarial training's radius")
    s.add_argument("--adv-steps", type=int, default=3, help="K ascent steps (pgd, freelb)")
    s.add_argument("--norm", default=a.norm, choices=NORMS)
    s.add_argument("--radii", type=_floats, default=a.radii, help="PGD attack radii")
    s.add_argument("--attack-steps", type=int, default=a.steps)
    s.add_argument("--swaps", type=int, default=a.swaps, help="HotFlip: tokens changed at most")
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--lr", type=float, default=None, help="default: the method's")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save", default=None, help="save the model of the last --trainings entry here, its robustness on its model card")  # fmt: skip
    s.set_defaults(func=cmd_robust)

    s = sub.add_parser("backdoor", help="poison a share of the rows with a trigger; defend")
    s.add_argument("--task", default="doc-returns", help="a classification task")
    s.add_argument("--method", default="full", choices=sorted(METHODS))
    s.add_argument("--rates", type=_floats, default=(0.0, 0.03, 0.1), help="poison rates")
    s.add_argument("--target", type=int, default=0, help="the label the trigger forces")
    s.add_argument("--defend-at", type=float, default=None, help="run ONION and spectral signatures at this rate")  # fmt: skip
    s.add_argument("--eps", type=float, default=0.2, help="spectral: bound on a class's poisoned share")  # fmt: skip
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_backdoor)

    s = sub.add_parser("scrub", help="replace e-mails, IPs, keys and tokens in a JSONL file")
    s.add_argument("input", help="a JSONL file")
    s.add_argument("output", help="where the scrubbed rows go (written atomically)")
    s.add_argument("--fields", default="text", help="comma-separated string fields to scrub")
    s.set_defaults(func=cmd_scrub)

    s = sub.add_parser("fairness", help="group fairness and counterfactual flips; mitigations")
    s.add_argument("--task", default="doc-returns-people", help="rows with a 'group' field")
    s.add_argument("--data", help="your JSONL of text, label and a group field (instead of --task)")  # fmt: skip
    s.add_argument("--group-field", default="group", help="--data: the field of the protected attribute")  # fmt: skip
    s.add_argument("--swap", default=None, help="the counterfactual swap rule: gender, or WORD:WORD,... (--task default: gender; --data: none, the test is skipped)")  # fmt: skip
    s.add_argument("--positive", default=None, help="--data: the label whose rate parity compares (default: the second, sorted)")  # fmt: skip
    s.add_argument("--model", default=None, help="--data: report on a model saved by `minift finetune --save` instead of training")  # fmt: skip
    s.add_argument("--method", default="full", choices=sorted(METHODS))
    s.add_argument("--mitigations", default=None, help="comma-separated (default none,cda,reweight; without a swap rule none,reweight)")  # fmt: skip
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save", default=None, help="save the model of the last mitigation here, its fairness on its model card")  # fmt: skip
    s.set_defaults(func=cmd_fairness)


def cmd_robust(args: argparse.Namespace) -> None:
    from minift.errors import UserError
    from minift.metrics import compare
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.robust import AttackConfig, run_robust
    from minift.recipes.tasks import get_task
    from minift.robust import ADVERSARIAL, AdversarialConfig
    from minift.utils import default_device

    names = [t.strip() for t in args.trainings.split(",") if t.strip()]
    unknown = [t for t in names if t != "standard" and t not in ADVERSARIAL]
    if unknown or not names:
        raise UserError(
            f"unknown training {unknown or names}; choices: standard, {', '.join(ADVERSARIAL)}"
        )
    trainings = {
        t: None if t == "standard" else AdversarialConfig(t, args.radius, args.norm, args.adv_steps)
        for t in names
    }
    attacks = AttackConfig(tuple(args.radii), args.norm, args.attack_steps, args.swaps)
    if args.save:  # a destination that could not take the model fails before any work
        from minift.recipes.saved import check_destination

        check_destination(args.save)
    changes = {"steps": args.steps, "seed": args.seed, "eval_every": 0}
    if args.lr is not None:
        changes["lr"] = args.lr
    config = FinetuneConfig(method=args.method, train=train_config(**changes))
    task = get_task(args.task, seed=args.seed)
    base, enc = load_base()
    keep = names[-1] if args.save else None
    runs = run_robust(task, base, enc, config, trainings, attacks, default_device(), keep)
    cols = list(runs[0].scores)
    print(f"{args.task}, {args.method}, trained at radius {args.radius} ({args.norm}); accuracy:")
    print(f"{'training':12s}" + "".join(f"{c:>15s}" for c in cols) + f"{'seconds':>9s}")
    for r in runs:
        acc = r.accuracy()
        print(
            f"{r.training:12s}" + "".join(f"{acc[c]:>15.3f}" for c in cols) + f"{r.seconds:>9.1f}"
        )
    ref = runs[0]
    for r in runs[1:]:
        for c in cols:
            print(
                " ", compare(f"{r.training} {c}", r.scores[c], f"{ref.training} {c}", ref.scores[c])
            )
    if args.save:
        from minift.recipes.cards import command
        from minift.recipes.save_measured import save_robust
        from minift.utils import fast_mode

        keys = ("task", "method", "trainings", "radius", "adv_steps", "norm", "radii", "attack_steps", "swaps", "steps", "lr", "seed", "save")  # fmt: skip
        again = command("robust", {k: getattr(args, k) for k in keys}, fast_mode())
        path = save_robust(
            args.save, runs, task, base, enc, config, trainings[keep], attacks, again
        )
        print(f"saved the {keep} model (and its model card) in {path}")


def cmd_backdoor(args: argparse.Namespace) -> None:
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.security import (
        backdoor,
        detection,
        onion_defence,
        spectral_defence,
        without,
    )
    from minift.recipes.tasks import get_task
    from minift.security import check_rate, poison_rows
    from minift.utils import default_device

    for rate in (*args.rates, *([args.defend_at] if args.defend_at is not None else [])):
        check_rate(rate)  # before any work
    task = get_task(args.task, seed=args.seed)
    base, enc = load_base()
    device = default_device()
    base = base.to(device)
    config = FinetuneConfig(method=args.method, train=train_config(steps=args.steps, seed=args.seed, eval_every=0))  # fmt: skip
    for rate in args.rates:
        r = backdoor(task, base, enc, config, rate, args.target, args.seed)
        print(f"poison rate {rate:5.3f} ({len(r.poisoned)} rows): clean accuracy {r.clean_accuracy:.3f}, attack success {r.attack_success:.3f}")  # fmt: skip
    if args.defend_at is None:
        return
    attacked = backdoor(task, base, enc, config, args.defend_at, args.target, args.seed)
    rows, _ = poison_rows(task.train, args.defend_at, args.target, args.seed)
    flags = {
        "ONION": onion_defence(base, enc, task, rows, config.max_len),
        "spectral": spectral_defence(attacked.model, task, enc, rows, args.eps, config.max_len),
    }
    for name, flagged in flags.items():
        found = detection(flagged, attacked.poisoned)
        kept, left = without(rows, flagged, attacked.poisoned)
        again = backdoor(task, base, enc, config, 0.0, args.target, args.seed, kept, left)
        print(f"{name}: flagged {found['flagged']}, found {found['found']}/{len(attacked.poisoned)}; attack success {attacked.attack_success:.3f} -> {again.attack_success:.3f}, clean {again.clean_accuracy:.3f}")  # fmt: skip


def cmd_scrub(args: argparse.Namespace) -> None:
    import json
    from collections import Counter

    from minift.data.jsonl import read_jsonl
    from minift.errors import UserError
    from minift.io import atomic_path
    from minift.security import scrub

    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    rows = read_jsonl(args.input, required=fields)
    counts: Counter = Counter()
    for i, row in enumerate(rows):
        for f in fields:
            if not isinstance(row[f], str):
                raise UserError(f"{args.input}: row {i + 1}: field {f!r} is not a string")
            row[f], found = scrub(row[f])
            counts.update(x.kind for x in found)
    with atomic_path(args.output) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "nothing found"
    print(f"{len(rows)} rows scrubbed into {args.output}: {summary}")


def cmd_fairness(args: argparse.Namespace) -> None:
    from minift.errors import UserError
    from minift.fairness.data import swap_rule
    from minift.recipes.evaluate import saved_model_fairness
    from minift.recipes.fairness import MITIGATIONS, group_file_task, positive_index, run_fairness
    from minift.recipes.finetune import FinetuneConfig, train_config
    from minift.recipes.pretrain import load_base
    from minift.recipes.tasks import get_task

    pairs = swap_rule(args.swap if args.swap is not None or args.data else "gender")
    if args.model:  # every row of the file, on the saved model: nothing is trained
        if not args.data:
            raise UserError("--model reports on your file: give --data FILE as well")
        return print_fairness({"saved model": saved_model_fairness(args.model, args.data, args.group_field, pairs, args.positive)})  # fmt: skip
    default = "none,cda,reweight" if pairs is not None else "none,reweight"
    hows = [m.strip() for m in (args.mitigations or default).split(",") if m.strip()]
    bad = [m for m in hows if m not in MITIGATIONS]
    if bad or not hows:
        raise UserError(f"unknown mitigation {bad or hows}; choices: {', '.join(MITIGATIONS)}")
    if "cda" in hows and pairs is None:
        raise UserError("the cda mitigation swaps the attribute in the texts: give a swap rule (--swap gender or --swap WORD:WORD,...), or leave cda out of --mitigations")  # fmt: skip
    if args.data:
        task = group_file_task(args.data, args.group_field, args.seed)
    else:
        task = get_task(args.task, seed=args.seed)
    if task.kind != "classification" or any("group" not in r for r in task.train + task.val):
        raise UserError(f"{args.task}: fairness needs a classification task whose rows have a 'group'")  # fmt: skip
    pos = positive_index(task.labels, args.positive)
    keep = hows[-1] if args.save else None
    if args.save:
        from minift.recipes.saved import check_destination

        check_destination(args.save)
        if keep == "adversary":
            raise UserError("--save keeps the last mitigation's model; adversary's cannot be saved (it trains outside finetune): put another last")  # fmt: skip
    print(task.summary())
    if args.mitigations is None and pairs is None:
        print("mitigations none,reweight: cda is left out, it needs a swap rule (--swap)")
    base, enc = load_base()
    config = FinetuneConfig(method=args.method, train=train_config(steps=args.steps, seed=args.seed, eval_every=0))  # fmt: skip
    reports = run_fairness(task, base, enc, config, hows, pairs, pos, keep)
    print_fairness(reports)
    if args.save:
        from minift.recipes.cards import command
        from minift.recipes.save_measured import save_fair
        from minift.utils import fast_mode

        keys = (
            "task",
            "data",
            "group_field",
            "swap",
            "positive",
            "method",
            "steps",
            "seed",
            "save",
        )
        values = {**{k: getattr(args, k) for k in keys}, "mitigations": ",".join(hows)}
        values["task"] = None if args.data else args.task
        again = command("fairness", values, fast_mode())
        path = save_fair(args.save, reports[keep], keep, task, base, enc, config, again)
        print(f"saved the {keep} model (and its model card) in {path}")


def print_fairness(reports: dict) -> None:
    cols = ["accuracy", "accuracy_gap", "demographic_parity", "equalized_odds", "flip_rate"]
    first = next(iter(reports.values()))
    print(f"{first['n']} rows; positive label {first['positive_label']!r}")
    print(f"{'training':11s}" + "".join(f"{c:>19s}" for c in cols))
    for how, r in reports.items():
        cells = ["skipped" if r[c] is None else f"{r[c]:.3f}" for c in cols]
        print(f"{how:11s}" + "".join(f"{c:>19s}" for c in cells))
        print(" " * 11 + "  ".join(f"group {g}: accuracy {a:.3f}" for g, a in r["group_accuracy"].items()))  # fmt: skip
    if first["flip_rate"] is None:
        print(f"counterfactual test skipped: {first['counterfactual']}")
    else:
        print(f"counterfactual: {first['counterfactual_rows']} of {first['n']} texts changed by the swap rule")  # fmt: skip
