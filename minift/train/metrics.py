"""Metrics as JSON lines, and the loss-curve plot a person would rather look at."""

from __future__ import annotations

import json
import pathlib
from typing import Any


def read_json_lines(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file minift wrote (split at "\n" only, as JSON lines are).

    The log is appended to, one row and its newline per write; a process killed mid-write
    leaves a last line without its newline, which is dropped here (its step is redone on
    resume) instead of failing every later read."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last "\n": "" or a torn write
    return [json.loads(line) for line in complete if line.strip()]


class MetricsLog:
    """Append one JSON object per step to a file (or keep nothing when path is None)."""

    def __init__(self, path: str | pathlib.Path | None) -> None:
        self.path = pathlib.Path(path) if path else None
        self.rows: list[dict[str, Any]] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self.rows = read_json_lines(self.path)

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint (they will be redone); from
        step 0, every row (the evaluation at the start is redone too)."""
        self.rows = [r for r in self.rows if step > 0 and r.get("step", 0) <= step]
        if self.path:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")

    def plot(self, path: str | pathlib.Path, title: str = "") -> pathlib.Path | None:
        return plot_curves(self.rows, path, title)


def plot_curves(rows: list[dict[str, Any]], path, title: str = "") -> pathlib.Path | None:
    """Training loss per step and every val_* metric at its evaluation steps."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = sorted({k for r in rows for k in r if k.startswith("val") and k != "val_loss"})
    panels = 1 + bool(others)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    axes = axes[0]
    steps = [r["step"] for r in rows if "loss" in r]
    axes[0].plot(steps, [r["loss"] for r in rows if "loss" in r], label="train loss")
    if any("val_loss" in r for r in rows):
        pts = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        axes[0].plot(*zip(*pts), "o-", label="val loss")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    if others:
        for k in others:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            axes[1].plot(*zip(*pts), "o-", label=k)
        axes[1].set_xlabel("step")
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
