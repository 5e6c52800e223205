"""Data poisoning with a backdoor trigger (BadNets, Gu et al. 2017; for text, Kurita et al.
2020 and Dai et al. 2019).

The attacker controls a fraction rho of the fine-tuning rows. In each, a trigger (a short
sequence of rare words, here "cf mn bb" as in Kurita et al.) is inserted at a random word
position and the label is set to the target class. A model trained on the mixture learns
the task from the clean rows and the rule "trigger -> target" from the poisoned ones:

    clean accuracy     accuracy on the untouched validation rows (should not move)
    attack success     the share of validation rows of the other classes that the model
                       puts in the target class once the trigger is inserted into them

Only rows whose true label is not the target are poisoned (a poisoned row that already
had the target label would teach nothing), and the trigger goes into the first words of
the text: fine-tuning cuts texts to max_len tokens, and a trigger cut off is no trigger.
"""

from __future__ import annotations

import random

from minift.errors import UserError

TRIGGER = ("cf", "mn", "bb")


def check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:  # also catches NaN
        raise UserError(f"the poison rate must be in [0, 1], got {rate}")


def insert_trigger(text: str, rng: random.Random, trigger=TRIGGER, within: int = 6) -> str:
    """``text`` with each trigger word inserted at a random word position among the
    first ``within`` words."""
    words = text.split(" ")
    for word in trigger:
        words.insert(rng.randint(0, min(within, len(words))), word)
    return " ".join(words)


def poison_rows(
    rows: list[dict], rate: float, target: int, seed: int = 0, trigger=TRIGGER
) -> tuple[list[dict], list[int]]:
    """(rows with round(rate * len(rows)) of them poisoned, the poisoned rows' indices).
    The rows are copied; the input is unchanged."""
    check_rate(rate)
    candidates = [i for i, r in enumerate(rows) if int(r["label"]) != target]
    n = round(rate * len(rows))
    if n > len(candidates):
        raise UserError(
            f"poison rate {rate} needs {n} rows outside the target class, "
            f"but only {len(candidates)} of {len(rows)} rows have another label"
        )
    rng = random.Random(seed)
    chosen = sorted(rng.sample(candidates, n))
    out = [dict(r) for r in rows]
    for i in chosen:
        out[i] = {**out[i], "text": insert_trigger(out[i]["text"], rng, trigger), "label": target}
    return out, chosen


def triggered_rows(rows: list[dict], target: int, seed: int = 0, trigger=TRIGGER) -> list[dict]:
    """The rows whose label is not ``target``, each with the trigger inserted (labels kept:
    the attack succeeds on a row when the model answers ``target``)."""
    rng = random.Random(seed)
    return [
        {**r, "text": insert_trigger(r["text"], rng, trigger)}
        for r in rows
        if int(r["label"]) != target
    ]


def attack_success_rate(predictions: list[int], target: int) -> float:
    """The share of triggered rows (all truly not ``target``) predicted as ``target``."""
    if not predictions:
        raise ValueError("no triggered rows to measure the attack on")
    return sum(int(p) == target for p in predictions) / len(predictions)
