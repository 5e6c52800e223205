"""Zero- and few-shot classification by prompting, with no weight changed.

:func:`classify` builds one prompt per validation row (k demonstrations chosen by
minift.prompting.selection, then the query), scores the label words
(minift.prompting.scoring), optionally divides out the prompt's own bias (contextual
calibration, minift.prompting.calibration), and predicts the most probable class.

:func:`max_shots` says how many demonstrations fit the model's context: with a context of
B tokens, demonstrations of a median d tokens and queries of at most q, k = (B - q) / d.
(q: the 90th-percentile query). A 128-token context holds few docstring summaries; GPT-3's 2048 tokens held 10 to 100
examples (Brown et al. 2020), which is where in-context learning was shown to work.

:func:`order_accuracies` measures the sensitivity to the order of the same k
demonstrations (Lu et al., "Fantastically ordered prompts and where to find them", ACL
2022, found the spread over permutations can run from chance to near the state of the
art at GPT-3's scale; Zhao et al. 2021 the same for template wording).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from minift.errors import UserError
from minift.prompting.calibration import CONTENT_FREE, calibrate
from minift.prompting.scoring import label_probs
from minift.prompting.selection import Selector, check_shots
from minift.prompting.templates import Template, label_token_ids, task_template


@dataclass
class PromptResult:
    probs: torch.Tensor  # (n, K) class probabilities (calibrated when asked)
    labels: list[int]
    shots: int
    select: str
    calibrated: bool
    truncated: int  # prompts cut to fit the context (earliest demonstrations dropped)

    @property
    def predictions(self) -> list[int]:
        return self.probs.argmax(dim=-1).tolist()

    @property
    def correct(self) -> list[float]:
        return [float(p == y) for p, y in zip(self.predictions, self.labels)]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)


def _check_task(task) -> None:
    if task.kind != "classification":
        raise UserError(f"prompting here classifies; task {task.name!r} is {task.kind!r}")


def _demos(task, train: list[dict], chosen: Sequence[int]) -> list[tuple[str, str]]:
    return [(train[j]["text"], task.verbalizer[int(train[j]["label"])]) for j in chosen]


def classify(
    model,
    enc,
    task,
    shots: int = 0,
    select: str = "random",
    *,
    calibrated: bool = False,
    template: Template | None = None,
    train: list[dict] | None = None,
    rows: list[dict] | None = None,
    seed: int = 0,
    block_size: int | None = None,
) -> PromptResult:
    """Classify ``rows`` (default: the task's validation rows) with k-shot prompts whose
    demonstrations come from ``train`` (default: the task's training rows)."""
    _check_task(task)
    template = template or task_template(task)
    train = task.train if train is None else train
    rows = task.val if rows is None else rows
    ids = label_token_ids(enc, task.verbalizer)
    selector = Selector(train, shots, select, seed)
    prompts, free = [], []
    for i, row in enumerate(rows):
        demos = _demos(task, train, selector.select(row["text"], i))
        prompts.append(template.prompt(row["text"], demos))
        if calibrated:
            free.append([template.prompt(cf, demos) for cf in CONTENT_FREE])
    probs, truncated = label_probs(model, enc, prompts, ids, block_size)
    if calibrated:
        flat = [p for group in free for p in group]
        p_free, _ = label_probs(model, enc, flat, ids, block_size)
        p_cf = p_free.view(len(rows), len(CONTENT_FREE), -1).mean(dim=1)
        probs = calibrate(probs, p_cf)
    labels = [int(r["label"]) for r in rows]
    return PromptResult(probs, labels, shots, select, calibrated, truncated)


@dataclass(frozen=True)
class ShotBudget:
    max_shots: int
    context: int
    median_demo: int  # tokens of a median demonstration (with its separator)
    long_query: int  # tokens of the 90th-percentile query (longer ones are cut)

    def __str__(self) -> str:
        return (
            f"largest k that fits: {self.max_shots} (context {self.context} tokens, "
            f"median demonstration {self.median_demo}, 90th-percentile query {self.long_query})"
        )


def max_shots(enc, task, block_size: int, template: Template | None = None) -> ShotBudget:
    """The largest k for which k median-length demonstrations and a 90th-percentile query
    fit in ``block_size`` tokens (the longest tenth of the queries are cut anyway)."""
    _check_task(task)
    template = template or task_template(task)
    sep = len(enc.encode_ordinary(template.separator))
    demo_lengths = [
        len(enc.encode_ordinary(template.demonstration(r["text"], task.verbalizer[int(r["label"])])))
        + sep
        for r in task.train
    ]  # fmt: skip
    queries = sorted(len(enc.encode_ordinary(template.fill(r["text"]))) for r in task.val)
    long_query = queries[min(len(queries) - 1, int(0.9 * len(queries)))]
    median = int(statistics.median(demo_lengths))
    k = max(0, (block_size - long_query) // max(1, median))
    return ShotBudget(min(k, len(task.train)), block_size, median, long_query)


def order_accuracies(
    model,
    enc,
    task,
    demos: Sequence[int],
    n_orders: int = 8,
    *,
    template: Template | None = None,
    rows: list[dict] | None = None,
    calibrated: bool = False,
    seed: int = 0,
    block_size: int | None = None,
) -> list[float]:
    """The accuracy of the same demonstrations (indices into task.train) in ``n_orders``
    random orders (the first is the order given), one prompt prefix for every query."""
    _check_task(task)
    check_shots(len(demos), len(task.train))
    if n_orders < 1:
        raise UserError(f"n_orders must be >= 1, got {n_orders}")
    rng = random.Random(seed)
    rows = task.val if rows is None else rows
    orders = [list(demos)] + [rng.sample(list(demos), len(demos)) for _ in range(n_orders - 1)]
    out = []
    for order in orders:
        fixed = [task.train[j] for j in order]
        result = _classify_fixed(model, enc, task, fixed, rows, template, calibrated, block_size)
        out.append(result.accuracy)
    return out


def _classify_fixed(model, enc, task, demos_rows, rows, template, calibrated, block_size):
    """classify() with one list of demonstrations, in the order given, for every row."""
    template = template or task_template(task)
    ids = label_token_ids(enc, task.verbalizer)
    demos = _demos(task, demos_rows, range(len(demos_rows)))
    probs, truncated = label_probs(model, enc, [template.prompt(r["text"], demos) for r in rows], ids, block_size)  # fmt: skip
    if calibrated:
        p_free, _ = label_probs(model, enc, [template.prompt(cf, demos) for cf in CONTENT_FREE], ids, block_size)  # fmt: skip
        probs = calibrate(probs, p_free.mean(dim=0))
    labels = [int(r["label"]) for r in rows]
    return PromptResult(probs, labels, len(demos), "fixed", calibrated, truncated)
