"""The PPO dashboard: what to watch while a policy learns from a reward model.

- score (and the hidden truth, when known): should rise; the score rising while the
  truth does not is reward hacking;
- KL to the reference: the price paid for the score; unbounded growth means the
  penalty is too weak;
- entropy: falls as the policy grows sure of itself; a collapse to ~0 is mode collapse;
- clip fraction and approximate KL between successive policies: how far each update
  moves; large values mean the learning rate or the number of epochs is too high;
- value loss and explained variance: whether the critic is learning to predict returns.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

PANELS = (
    ("reward", ("score", "truth", "reward")),
    ("KL to reference (nats)", ("kl", "kl_k3")),
    ("entropy (nats/token)", ("entropy",)),
    ("update size", ("clipfrac", "approx_kl", "vf_clipfrac")),
    ("value loss", ("value_loss",)),
    ("explained variance", ("explained_variance",)),
    ("response length (tokens)", ("length",)),
    ("end-token rate, KL coefficient", ("eos_rate", "kl_coef")),
)


def plot_ppo(
    history: Sequence[dict] | dict[str, Sequence[dict]], path, title: str = ""
) -> pathlib.Path:
    """Draw the dashboard; ``history`` is one run's rows or {label: rows} for several runs
    (each run then gets its own line style, each metric its own colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = history if isinstance(history, dict) else {"": history}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7))
    for ax, (name, keys) in zip(axes.flat, PANELS):
        for s, (label, rows) in enumerate(runs.items()):
            for c, key in enumerate(keys):
                pts = [(r["iteration"], r[key]) for r in rows if key in r]
                if pts:
                    tag = f"{label} {key}".strip()
                    ax.plot(*zip(*pts), styles[s % 4], color=f"C{c}", label=tag)
        ax.set_title(name)
        ax.set_xlabel("PPO iteration")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
