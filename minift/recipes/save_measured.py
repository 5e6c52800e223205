"""A model saved by a job that measured more than its validation metric: `minift robust
--save` (accuracy under each attack) and `minift fairness --save` (the groups' rates).
Each saves the model it kept as `minift finetune --save` does (minift.recipes.saved), with
those figures, a note on how they were measured, and its own command on the model card.
"""

from __future__ import annotations

from dataclasses import replace

from minift.data.tasks import Task
from minift.recipes.finetune import FinetuneConfig
from minift.recipes.finetune_card import fairness_figures
from minift.recipes.robust import AttackConfig, RobustRun, robustness_figures
from minift.recipes.saved import base_reference, save_finetuned


def save_robust(path, runs: list[RobustRun], task: Task, base, enc, config: FinetuneConfig, adversarial, attacks: AttackConfig, command_line: str):  # fmt: skip
    """`minift robust --save`: the kept run's model saved as `minift finetune --save`
    saves, its robustness figures and ``command_line`` on its model card."""
    kept = next(r for r in runs if r.result is not None)
    n = len(next(iter(kept.scores.values())))
    note = (
        f"Measured by `minift robust` on the {n} validation rows: accuracy under PGD in "
        f"embedding space ({attacks.norm}, radii {', '.join(map(str, attacks.radii))}, "
        f"{attacks.steps} steps; Madry et al. 2018) and HotFlip with at most {attacks.swaps} "
        f"token swaps (Ebrahimi et al. 2018); the model is the {kept.training!r} training."
    )
    card = {"robustness": robustness_figures(runs, kept), "robustness_note": note, "command_line": command_line}  # fmt: skip
    adv = replace(config, adversarial=adversarial)
    return save_finetuned(path, kept.result, task, enc, base_reference(None, base), config=adv, card=card)  # fmt: skip


def save_fair(path, report: dict, how: str, task: Task, base, enc, config: FinetuneConfig, command_line: str):  # fmt: skip
    """`minift fairness --save`: the kept mitigation's model (run_fairness(keep=how)) saved
    as `minift finetune --save` saves, its fairness figures and ``command_line`` on its
    model card."""
    note = (
        f"Measured by `minift fairness` on the {report['n']} validation rows, by their "
        f"group; the model was trained with the {how!r} mitigation; positive label "
        f"{report['positive_label']!r} (demographic parity and equalized odds compare the "
        "groups' rates of it; Hardt et al. 2016)."
        + (
            f" Counterfactual test skipped: {report['counterfactual']}."
            if report["flip_rate"] is None
            else ""
        )  # fmt: skip
    )
    card = {"fairness": fairness_figures(report), "fairness_note": note, "command_line": command_line}  # fmt: skip
    return save_finetuned(path, report["result"], task, enc, base_reference(None, base), config=config, card=card)  # fmt: skip


__all__ = ["save_fair", "save_robust"]
