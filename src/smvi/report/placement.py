"""Labels beside points that never overprint one another (torch-free; matplotlib is imported only when a figure is
drawn).

A figure records its point labels with :func:`label_points`; :func:`smvi.report.figures.png` places them once the
figure is laid out (:func:`place_pending`) and then fixes the layout, so that nothing moves after. Placement is greedy,
in the order the labels were given: each label takes the first free spot among candidates around its point -- eight
directions at growing distances (:data:`RADII`, in points from the edge of its marker), the nearest first, above-right
first -- where it stays inside the axes and overlaps no label placed before it, no labelled point, no error bar and no
other text of the axes (an off-scale note, a legend); when no spot is free, the one that overlaps least. A label set
away from its point (past the second ring) is joined to it by a thin line of its colour. A label whose point lies
outside the axes' view is not drawn (an off-scale point is named by :func:`smvi.report.figures.focus`). Labels carry
the gid :data:`LABEL_GID`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure

__all__ = ["PointLabel", "label_points", "place_pending", "place_labels", "LABEL_GID", "RADII"]

LABEL_GID = "smvi-point-label"
RADII = (3.0, 7.0, 12.0, 19.0, 27.0, 36.0, 46.0, 58.0, 73.0, 90.0)  # points from the edge of the labelled marker
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (0, 1), (0, -1), (-1, 0))  # NE, SE, NW, SW, E, N, S, W
PAD = 1.5  # pixels kept free around a label

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in display pixels


@dataclass(frozen=True)
class PointLabel:
    """A label for the point (``x``, ``y``) in data coordinates, drawn with a marker of radius ``marker`` (points),
    which no label covers."""

    x: float
    y: float
    text: str
    color: Any = "0.3"
    fontsize: float = 7.0
    marker: float = 2.0


_PENDING: weakref.WeakKeyDictionary[Axes, list[PointLabel]] = weakref.WeakKeyDictionary()


def label_points(ax: Axes, labels: Iterable[PointLabel]) -> None:
    """Record ``labels`` for ``ax``: placed by :func:`place_pending` (from :func:`smvi.report.figures.png`)."""
    _PENDING.setdefault(ax, []).extend(labels)


def has_pending(fig: Figure) -> bool:
    return any(_PENDING.get(ax) for ax in fig.axes)


def place_pending(fig: Figure, renderer: RendererBase) -> None:
    """Place the labels recorded for each axes of ``fig`` (module docstring), its layout already done."""
    for ax in fig.axes:
        if labels := _PENDING.pop(ax, None):
            place_labels(ax, labels, renderer)


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: Box, frame: Box) -> float:
    """The area of ``box`` outside ``frame``."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    return area - _overlap(box, frame)


def _extent(artist, renderer) -> Box:
    b = artist.get_window_extent(renderer)
    return b.x0, b.y0, b.x1, b.y1


def _bars(ax: Axes) -> list[Box]:
    """The error bars of ``ax`` (its line collections' horizontal and vertical segments) as thin boxes in pixels."""
    from matplotlib.collections import LineCollection

    boxes = []
    for c in ax.collections:
        if not isinstance(c, LineCollection) or not c.get_visible():
            continue
        to_pixels = c.get_transform()
        for seg in c.get_segments():
            if len(seg) != 2:
                continue
            (x0, y0), (x1, y1) = to_pixels.transform(seg)
            if abs(x1 - x0) < 0.5 or abs(y1 - y0) < 0.5:  # vertical or horizontal
                boxes.append((min(x0, x1) - 1, min(y0, y1) - 1, max(x0, x1) + 1, max(y0, y1) + 1))
    return boxes


def _side(u: int) -> float:
    """Where the label's anchor sits along one side of its box: 0 (left/bottom), 1 (right/top) or 0.5."""
    return 0.0 if u > 0 else 1.0 if u < 0 else 0.5


def _best_spot(
    at: tuple[float, float], size: tuple[float, float], frame: Box, taken: list[Box], scale: float, marker: float
) -> tuple[float, int, int]:
    """(radius in points, direction x, direction y) of the first free candidate, else of the least overlapping;
    the radii start past the point's ``marker`` (points)."""
    (px, py), (w, h) = at, size
    radii = [marker + r for r in RADII]
    best, best_cost = (radii[0], *DIRECTIONS[0]), math.inf
    for r in radii:
        for ux, uy in DIRECTIONS:
            d = r * scale / (math.sqrt(2) if ux and uy else 1.0)
            x0, y0 = px + ux * d - w * _side(ux), py + uy * d - h * _side(uy)
            box = (x0 - PAD, y0 - PAD, x0 + w + PAD, y0 + h + PAD)
            cost = 10 * _outside(box, frame) + sum(_overlap(box, t) for t in taken)
            if cost == 0:
                return r, ux, uy
            if cost < best_cost:
                best, best_cost = (r, ux, uy), cost
    return best


def place_labels(ax: Axes, labels: list[PointLabel], renderer: RendererBase) -> None:
    """Annotate ``ax`` with ``labels``, each placed as the module docstring says; the axes' limits and layout must be
    final."""
    scale = ax.figure.dpi / 72  # pixels per point
    f = ax.get_window_extent(renderer)
    frame = (f.x0, f.y0, f.x1, f.y1)
    anchors = [tuple(ax.transData.transform((lab.x, lab.y))) for lab in labels]
    shown = [
        (lab, (float(x), float(y)))
        for lab, (x, y) in zip(labels, anchors, strict=True)
        if math.isfinite(x) and math.isfinite(y) and frame[0] <= x <= frame[2] and frame[1] <= y <= frame[3]
    ]
    taken = [_extent(t, renderer) for t in ax.texts if t.get_visible() and t.get_text()]
    if (legend := ax.get_legend()) is not None:
        taken.append(_extent(legend, renderer))
    taken += _bars(ax)
    taken += [(x - m, y - m, x + m, y + m) for lab, (x, y) in shown if (m := lab.marker * scale)]
    for lab, (x, y) in shown:
        probe = ax.text(0, 0, lab.text, fontsize=lab.fontsize)
        b = probe.get_window_extent(renderer)
        probe.remove()
        r, ux, uy = _best_spot((x, y), (b.width, b.height), frame, taken, scale, lab.marker)
        d = r / (math.sqrt(2) if ux and uy else 1.0)
        offset = (ux * d, uy * d)
        if r > lab.marker + RADII[1]:  # a thin line from the label's near edge to its point
            ax.annotate(
                "",
                (lab.x, lab.y),
                xytext=offset,
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": lab.color, "lw": 0.6, "shrinkA": 0, "shrinkB": 2},
                annotation_clip=False,
            ).set_in_layout(False)
        text = ax.annotate(
            lab.text,
            (lab.x, lab.y),
            xytext=offset,
            textcoords="offset points",
            ha={0.0: "left", 1.0: "right", 0.5: "center"}[_side(ux)],
            va={0.0: "bottom", 1.0: "top", 0.5: "center"}[_side(uy)],
            fontsize=lab.fontsize,
            color=lab.color,
            gid=LABEL_GID,
            annotation_clip=False,
        )
        text.set_in_layout(False)
        taken.append(_extent(text, renderer))
