"""`minift prompt`: classify a task's validation rows by prompting the language model.

    minift prompt --task stdlib-package --shots 8 --select similar
    minift prompt --task doc-kind --shots 0 --model runs/saved

Prints the largest k that fits the context and the accuracy with and without contextual
calibration (the job: minift.recipes.prompting.run_prompt).
"""

from __future__ import annotations

from minift.cli.model import load_model_and_encoding


def register(sub) -> None:
    from minift.data.tasks import DEFAULT_TASK
    from minift.prompting import STRATEGIES

    s = sub.add_parser("prompt", help="zero-/few-shot classification by prompting, no training")
    s.add_argument("--task", default=DEFAULT_TASK, help="a registered classification task or a .jsonl path")  # fmt: skip
    s.add_argument("--shots", type=int, default=8, help="demonstrations per prompt (k)")
    s.add_argument("--select", default="similar", choices=STRATEGIES, help="how the k are chosen")  # fmt: skip
    s.add_argument("--model", help="a model folder (default: the embedded base)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_prompt)


def cmd_prompt(args) -> None:
    from minift.prompting.selection import check_shots
    from minift.recipes.prompting import run_prompt
    from minift.recipes.tasks import get_task

    task = get_task(args.task, seed=args.seed)
    check_shots(args.shots, len(task.train))  # before the model loads
    model, enc = load_model_and_encoding(args.model)
    run_prompt(task, model, enc, args.shots, args.select, args.seed)
