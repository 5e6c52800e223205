"""The model card written beside every model minift saves (Mitchell et al. 2019, "Model
Cards for Model Reporting"): what the model is, what it was trained on and how, how well
it does with how much certainty, for whom it was measured to be fair or robust (or that it
was not), what it should and should not be used for, and the command that makes it again.

    README.md   the card, markdown with a YAML front matter (library, tags, data set)

Why README.md and not MODEL_CARD.md: the Hugging Face Hub shows a model folder's README.md
as its model card (reading the front matter for search), GitHub and file browsers show it
when the folder is opened, and `minift export --hf` copies it, so an exported folder
uploads with its card. A card is rendered from a ModelCard (the facts, filled in by each
saving command: cards.py) and written atomically.

The metrics section sits between two markers and carries its evaluations as JSON in an
HTML comment. `minift eval --model DIR` adds an evaluation (or replaces the one on the
same data) through update_metrics, which rewrites that section alone: every byte outside
the markers stays as written. A metric that is a proportion of n examples (an accuracy,
an exact-match rate) gets a 95% Wilson score interval (minift.metrics.wilson_interval).
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

from minift.io import atomic_path
from minift.metrics import wilson_interval

CARD = "README.md"
BEGIN, END = "<!-- minift:metrics:begin -->", "<!-- minift:metrics:end -->"
DATA = "<!-- minift:evaluations "
# metrics that count the share of n examples right, so have a binomial interval
PROPORTIONS = ("accuracy", "exact_match", "preference_accuracy")


@dataclass
class ModelCard:
    title: str  # one line: what the model is
    kind: str  # the command that trained it: finetune, distill, rlhf, personalize, ...
    base: dict[str, Any]  # what it started from: source, size or path, fingerprint
    data: dict[str, Any]  # name, where it comes from, rows train / validation
    method: str  # how it was trained
    settings: dict[str, Any]  # every setting that changes the result
    evaluations: list[dict]  # evaluation(...) entries, training's own first
    command: str  # the command line that trains it again
    intended_use: list[str]
    limitations: list[str]
    fairness: dict[str, Any] | None = None  # measured figures; None: not measured
    fairness_note: str = ""  # how it was measured, or why not
    robustness: dict[str, Any] | None = None
    robustness_note: str = ""
    loading: str = ""  # how to load it back
    tags: list[str] = field(default_factory=list)


def is_proportion(name: str) -> bool:
    return any(name == p or name.endswith("_" + p) for p in PROPORTIONS)


def evaluation(data: str, metrics: dict[str, float], n: int | None, by: str) -> dict:
    """One evaluation: the metrics measured on ``data`` (``n`` examples) by ``by``, each
    proportion with its 95% Wilson interval."""
    out: dict[str, dict] = {}
    for name, value in metrics.items():
        entry: dict[str, Any] = {"value": float(value)}
        if n and is_proportion(name) and 0.0 <= value <= 1.0:
            est = wilson_interval(round(value * n), n)
            entry.update(low=est.low, high=est.high, interval="Wilson 95%")
        out[name] = entry
    return {"data": data, "n": n, "by": by, "metrics": out}


# ------------------------------------------------------------------ rendering
def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(_value, v)) or "(none)"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items()) or "(none)"
    return "none" if v is None else str(v)


def _table(rows: dict[str, Any], head: tuple[str, str] = ("", "value")) -> list[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    return lines + [f"| {k} | {_value(v).replace('|', '/')} |" for k, v in rows.items()]


def _metric_cell(m: dict) -> str:
    if "low" in m:
        return f"{m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"
    return f"{m['value']:.4f}"


def metrics_section(evaluations: list[dict]) -> str:
    """The text between (and with) the markers: the table and its data."""
    data = json.dumps(evaluations, sort_keys=True).replace("--", "-\\u002d")  # no "--" in a comment
    lines = [BEGIN, DATA + data + " -->", ""]
    lines += ["| evaluated on | n | by | metric | value [95% interval] |", "|---|---|---|---|---|"]
    for e in evaluations:
        for name, m in e["metrics"].items():
            n = "" if e["n"] is None else str(e["n"])
            lines.append(f"| {e['data']} | {n} | {e['by']} | {name} | {_metric_cell(m)} |")
    if not evaluations:
        lines.append("| (no metric was measured by this command) | | | | |")
    lines += [
        "",
        "Intervals: 95% Wilson score intervals for proportions of n examples (Wilson 1927); "
        "a loss or a mean of sampled scores is shown without one.",
        END,
    ]
    return "\n".join(lines)


def _measured(title: str, figures: dict | None, note: str, command: str) -> list[str]:
    out = [f"## {title}", ""]
    if figures is None:
        return out + [f"Not measured in this run. {note or f'`{command}` measures it.'}", ""]
    return out + ([note, ""] if note else []) + _table(figures, ("measure", "value")) + [""]


def render(card: ModelCard) -> str:
    front = ["---", "library_name: minift", "tags:"]
    front += [f"- {json.dumps(t)}" for t in ["minift", card.kind, *card.tags]]
    front += ["datasets:", f"- {json.dumps(str(card.data.get('name', 'unknown')))}", "---", ""]
    body = [f"# Model card: {card.title}", ""]
    body += ["## Model details", ""]
    body += _table({"trained by": f"`minift {card.kind}`", "method": card.method,
                    **{f"base {k}": v for k, v in card.base.items()}})  # fmt: skip
    body += ["", "## Intended use", ""] + [f"- {x}" for x in card.intended_use]
    body += ["", "## Training data", ""] + _table(card.data)
    body += ["", "## Training procedure", ""] + _table(card.settings, ("setting", "value"))
    body += ["", "## Metrics", "", metrics_section(card.evaluations), ""]
    body += _measured("Fairness", card.fairness, card.fairness_note, "minift fairness")
    body += _measured("Robustness", card.robustness, card.robustness_note, "minift robust")
    body += ["## Limitations", ""] + [f"- {x}" for x in card.limitations]
    body += ["", "## How to reproduce", "", "```", card.command, "```", ""]
    if card.loading:
        body += [card.loading, ""]
    return "\n".join(front + body)


# ------------------------------------------------------------------ files
def write_card(folder: str | os.PathLike, card: ModelCard) -> pathlib.Path:
    """README.md in ``folder``, written atomically."""
    path = pathlib.Path(folder) / CARD
    with atomic_path(path) as tmp:
        tmp.write_text(render(card), encoding="utf-8")
    return path


def _section(text: str, path: pathlib.Path) -> tuple[int, int]:
    begin, end = text.find(BEGIN), text.find(END)
    if text.count(BEGIN) != 1 or text.count(END) != 1 or end < begin:
        raise ValueError(
            f"{path} has no single minift metrics section ({BEGIN} ... {END}); it was left "
            "unchanged (a card minift writes has one)"
        )
    return begin, end + len(END)


def read_evaluations(folder: str | os.PathLike) -> list[dict]:
    """The evaluations recorded in a card's metrics section."""
    path = pathlib.Path(folder) / CARD
    text = path.read_text(encoding="utf-8")
    begin, end = _section(text, path)
    line = next((x for x in text[begin:end].split("\n") if x.startswith(DATA)), None)
    if line is None or not line.endswith(" -->"):
        raise ValueError(f"{path}: the metrics section holds no evaluation data; left unchanged")
    try:
        return json.loads(line[len(DATA) : -len(" -->")])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the metrics section's data is not valid JSON ({err})") from None


def update_metrics(folder: str | os.PathLike, new: dict) -> pathlib.Path | None:
    """Add the evaluation ``new`` to the card in ``folder`` (replacing one on the same
    data) and rewrite its metrics section alone; None when the folder has no card."""
    path = pathlib.Path(folder) / CARD
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    begin, end = _section(text, path)
    old = read_evaluations(folder)
    same = [i for i, e in enumerate(old) if e["data"] == new["data"]]
    evaluations = [new if i == same[0] else e for i, e in enumerate(old)] if same else old + [new]
    with atomic_path(path) as tmp:
        tmp.write_text(text[:begin] + metrics_section(evaluations) + text[end:], encoding="utf-8")
    return path


__all__ = [
    "BEGIN", "CARD", "END", "ModelCard", "evaluation", "is_proportion", "metrics_section",
    "read_evaluations", "render", "update_metrics", "write_card",
]  # fmt: skip
