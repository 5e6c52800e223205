"""Scatter labels: no two overlap, none covers a point, the same figure gets the same ones."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from minift.plot_labels import place_labels  # noqa: E402


def crowded(seed_shift: float = 0.0):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_xscale("log")
    ax.set_xlim(500, 2e6)
    ax.set_ylim(0, 1)
    # six methods on nearly one spot (the demo's LoRA, DoRA, hybrid), two apart
    xy = [(25_000, 0.875), (27_000, 0.875), (30_000, 0.858), (26_000, 0.86), (28_000, 0.87),
          (29_000, 0.865), (800, 0.8), (1.3e6, 0.917)]  # fmt: skip
    items = [(f"method{i}", (x, y + seed_shift), "C0", 0.02) for i, (x, y) in enumerate(xy)]
    for _, point, _, err in items:
        ax.errorbar(*point, yerr=err, fmt="o")
    fig.tight_layout()
    return fig, ax, items


def test_labels_overlap_neither_each_other_nor_the_points():
    fig, ax, items = crowded()
    taken = Bbox.from_extents(0, 0, 1, 1)  # something already there, far from the points
    boxes = place_labels(ax, items, avoid=[taken])
    assert len(boxes) == len(items)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
        for _, (x, y), _, _err in items:
            px, py = ax.transData.transform((x, y))
            assert not a.overlaps(Bbox.from_extents(px - 4, py - 4, px + 4, py + 4))
    # the labels that had to move got a line back to their point; the first sits beside it
    texts = [t for t in ax.texts if t.get_text().startswith("method")]
    assert texts[0].arrow_patch is None and any(t.arrow_patch is not None for t in texts)
    plt.close(fig)


def test_the_same_figure_gets_the_same_labels():
    places = []
    for _ in range(2):
        fig, ax, items = crowded()
        places.append([float(v) for b in place_labels(ax, items) for v in b.extents])
        plt.close(fig)
    assert places[0] == pytest.approx(places[1])
