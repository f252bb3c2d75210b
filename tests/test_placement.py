"""Point labels never overprint (smvi.report.placement): in the rendered frontier figure (fig4_frontier.png) and the
constrained plane (figc3_plane.png), on synthetic runs whose points nearly coincide, no two labels' boxes overlap,
none covers a labelled point and each stays inside its axes."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.figure import Figure

from smvi.report.aggregate import Row, collect_runs
from smvi.report.constrained import constrained_runs, plane_figure
from smvi.report.figures import PNG_DPI, png
from smvi.report.frontier import frontier_figure, frontier_points, gap_bars
from smvi.report.naming import RunNames
from smvi.report.placement import LABEL_GID, PointLabel, label_points
from test_frontier_report import write_run
from test_report_constrained import write_constrained

CLOSE = (0.0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02)  # λ whose points land within a fraction of a nat


def rendered_labels(fig: Figure) -> list[tuple[object, object, list]]:
    """Per axes with point labels: (axes box, the labels' boxes, the labelled points), at the PNG's resolution after
    ``png`` placed them."""
    png(fig)
    fig.set_dpi(PNG_DPI)
    renderer = fig.canvas.get_renderer()  # pyright: ignore[reportAttributeAccessIssue]
    fig.draw(renderer)
    out = []
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == LABEL_GID]
        if labels:
            points = [ax.transData.transform(t.xy) for t in labels]
            out.append((ax.get_window_extent(renderer), [t.get_window_extent(renderer) for t in labels], points))
    return out


def assert_apart(fig: Figure, at_least: int) -> None:
    found = rendered_labels(fig)
    assert sum(len(boxes) for _, boxes, _ in found) >= at_least
    for frame, boxes, points in found:
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (a, b)
        for box in boxes:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, box
            assert not any(box.contains(x, y) for x, y in points), box


def test_crowded_labels_on_bare_axes_are_set_apart():
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.set(xlim=(0, 10), ylim=(0, 10))
    ax.plot([5, 5.01, 5.02], [5, 5.01, 4.99], "o")
    label_points(ax, [PointLabel(5 + 0.01 * (i % 3), 5 + 0.01 * (i % 2), f"label {i}") for i in range(12)])
    assert_apart(fig, at_least=12)


def test_frontier_labels_do_not_overprint(tmp_path):
    """Seven SMVI λ, three flow λ and two β on nearly the same spot of the plane, with a gap split for the bars."""
    for i, lam in enumerate(CLOSE):
        gaps = (1.0, 3.0) if lam == 0 else None
        write_run(
            tmp_path / "smvi" / f"lam{lam:g}_seed0", {"lam": lam}, ais=-86.0 - 0.05 * i, gap=5.0 - 0.02 * i, gaps=gaps
        )
    for i, lam in enumerate(CLOSE[:3]):
        flow = {"posterior": "flow"}
        write_run(tmp_path / "flow" / f"lam{lam:g}_seed0", {"lam": lam}, flow, ais=-86.1 - 0.05 * i, gap=5.0 - 0.01 * i)
    for beta in (0.9, 1.1):
        write_run(tmp_path / f"beta{beta}" / "lam0_seed0", {"objective": "beta", "beta": beta}, ais=-86.05, gap=5.01)
    runs, _ = collect_runs(tmp_path)
    points = [p for p in frontier_points(runs) if p.log_px and p.gap]
    assert_apart(frontier_figure(points, gap_bars(runs), frozenset()), at_least=len(points))


def test_constrained_plane_labels_do_not_overprint(tmp_path):
    """The fixed-λ line and four targets within a fraction of a nat of it, as in the committed constrained study."""
    for target in (300.0, 100.0, 30.0, 10.0):
        write_constrained(
            tmp_path / f"dsm{target:g}_seed0",
            "dsm",
            target,
            (1e-3, 2e-3, 3e-3),
            (400.0, 350.0, target),
            20,
            25.0,
            target,
            4.0 + target / 1000,
        )
    runs, _ = collect_runs(tmp_path)
    rows = [
        Row(q, "test", None, lam, mean, 0.1, 1, "data points", "nats")
        for i, lam in enumerate(CLOSE)
        for q, mean in (("ais", -86.0 - 0.05 * i), ("gap", 4.3 - 0.02 * i))
    ]
    cruns = constrained_runs(runs, [])
    fig = plane_figure(cruns, rows, RunNames.of(runs))
    assert fig is not None
    assert_apart(fig, at_least=len(CLOSE) + len(cruns))


@pytest.mark.parametrize("crowd", [1, 30])
def test_every_label_whose_point_is_in_view_is_drawn(crowd):
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.set(xlim=(0, 1), ylim=(0, 1))
    labels = [PointLabel(0.5, 0.5, f"p{i}") for i in range(crowd)] + [PointLabel(2.0, 0.5, "off the view")]
    label_points(ax, labels)
    png(fig)
    drawn = [t.get_text() for t in ax.texts if t.get_gid() == LABEL_GID]
    assert drawn == [f"p{i}" for i in range(crowd)]
