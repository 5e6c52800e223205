"""`minift report`: the report card, base and each fine-tuning method on the standard suite.

    minift report --methods probe,lora,full --steps 160 --out runs/report

The job: minift.recipes.report.report_card (one markdown table: suite scores, time,
FLOPs, peak memory, parameters).
"""

from __future__ import annotations


def register(sub) -> None:
    from minift.recipes.report import REPORT_METHODS

    s = sub.add_parser("report", help="the report card: base + each method on the standard suite")
    s.add_argument("--methods", default=",".join(REPORT_METHODS), help="comma-separated methods")
    s.add_argument("--task", default=None, help="the task they fine-tune on (default: stdlib-package)")  # fmt: skip
    s.add_argument("--steps", type=int, default=None, help="default: the demo's")
    s.add_argument("--suite", default="default", help="default, or comma-separated tasks")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/report", help="folder for report_card.json and .md")
    s.set_defaults(func=cmd_report)


def cmd_report(args) -> None:
    from minift.peft.methods import METHODS
    from minift.recipes.report import card_markdown, report_card

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    card = report_card(methods, args.task, args.steps, args.suite, args.seed, args.out)
    print(card_markdown(card))
