"""A task with a protected attribute that the training data ties to the label.

`doc-returns-people`: each doc-returns text is said by a person, "He notes: ..." or
"She notes: ...". The pronoun is the protected attribute (group 0 = he, 1 = she) and has
nothing to do with the answer, but in the training rows it agrees with the label in a
share ``bias`` of the rows (label 1 mostly "she", label 0 mostly "he"), so a model can
learn it as a shortcut. In the validation rows the pronoun is drawn independently of the
label, half and half: there a shortcut shows as unequal selection rates, unequal errors
and predictions that move when only the pronoun does. Each row carries its ``group``.
"""

from __future__ import annotations

import random

from minift.data.docstring_tasks import doc_returns_task
from minift.data.tasks import Task, register_task

PRONOUNS = ("He", "She")


def attach_people(rows: list[dict], bias: float, rng: random.Random) -> list[dict]:
    """Each row said by "he" or "she": the pronoun matches the label with probability
    ``bias`` (0.5: independent of it)."""
    out = []
    for r in rows:
        agree = rng.random() < bias
        group = int(r["label"]) if agree else 1 - int(r["label"])
        out.append({**r, "text": f"{PRONOUNS[group]} notes: {r['text']}", "group": group})
    return out


@register_task("doc-returns-people")
def doc_returns_people_task(seed: int = 0, bias: float = 0.9, per_class: int | None = None) -> Task:
    """doc-returns with a pronoun that agrees with the label in `bias` of the training
    rows and in half of the validation rows."""
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")
    base = doc_returns_task(seed=seed, per_class=per_class)
    rng = random.Random(seed + 7)
    return Task(
        name="doc-returns-people", kind="classification",
        train=attach_people(base.train, bias, rng), val=attach_people(base.val, 0.5, rng),
        labels=base.labels, template=base.template, verbalizer=base.verbalizer,
        description=f"{base.description}, said by he/she; the pronoun agrees with the "
        f"label in {bias:.0%} of the training rows",
    )  # fmt: skip
