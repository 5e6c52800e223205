"""Labels for a scatter plot's points that do not overlap each other or the points.

Methods with similar parameter counts and metrics land on nearly the same spot of a plot,
and a label drawn at a fixed offset from each point then covers its neighbour's. Here each
label tries offsets in rings of growing distance around its point, in the order given, and
keeps the first whose box (in display pixels, as drawn) meets no box placed so far, no
marker and nothing in ``avoid``; a label that had to move away from its point gets a thin
line back to it. Greedy and deterministic: the same figure gets the same labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Offsets in points (right/up positive): beside the point first, then ever further away.
_RINGS = (
    (5, 3), (5, -11), (-5, 3), (-5, -11),
    *((dx, dy) for r in (1, 2, 3, 4, 5) for dy in (12 * r + 3, -12 * r - 11) for dx in (5, -5)),
)  # fmt: skip
_MARKER_PX = 5  # half the side of the box kept free around each point


def place_labels(
    ax, items: Sequence[tuple[str, tuple[float, float], Any, float]], avoid=()
) -> list:
    """Annotate ``ax`` with (text, (x, y) in data coordinates, color, yerr) items, yerr the
    point's error bar (data units, 0 for none), kept free like the marker. The text is
    black (pale colours are hard to read); a leader line takes the point's colour.
    Returns the labels' boxes in display pixels. ``avoid``: boxes already taken."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    taken = list(avoid)
    for _, (x, y), _, yerr in items:
        px, low = ax.transData.transform((x, y - yerr))
        high = ax.transData.transform((x, y + yerr))[1]
        taken.append(Bbox.from_extents(px - _MARKER_PX, min(low, high) - _MARKER_PX, px + _MARKER_PX, max(low, high) + _MARKER_PX))  # fmt: skip
    boxes = []
    for text, point, color, _ in items:
        label = None
        for dx, dy in _RINGS:
            if label is not None:
                label.remove()
            near = abs(dy) < 12
            label = ax.annotate(
                text, point, textcoords="offset points", xytext=(dx, dy), fontsize=8,
                ha="left" if dx > 0 else "right",
                arrowprops=None if near else dict(arrowstyle="-", lw=0.5, color=color),
            )  # fmt: skip
            box = Text.get_window_extent(label, renderer)  # the text's box, not its line
            if not any(box.overlaps(t) for t in taken):
                break
        taken.append(box)
        boxes.append(box)
    return boxes
