"""The report's figures against λ (torch-free; matplotlib is imported only when a figure is drawn).

Conventions every figure against λ shares, so that the axes show the differences that matter:

- **the λ axis** (:func:`lam_axis`): logarithmic with a tick at each λ of the grid, plain labels; λ = 0 sits one
  decade left of the smallest λ > 0, set apart by a break mark (``//``) on the axis -- no symlog, no shaded band.
- **collapsed runs do not set the y-range** (:func:`focus`): the limits come from the other points (means ± SE and
  the per-run values); a λ flagged as a posterior collapse (:mod:`smvi.report.flags`) is drawn with a red ×, and when it
  falls outside those limits, as a red triangle on the edge with its value written beside it. Its error-bar line
  leaves the frame toward it.
- y axes are linear with plain tick labels (no offset, no scientific notation).

:func:`figure_gap` (Figure 1) and :func:`figure_ssl` (Figure 2) draw :class:`smvi.report.aggregate.Row`\\ s;
:mod:`smvi.report.paired` draws Figure 3 with the same helpers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from smvi.report.aggregate import SPLITS, Row, row_lam
from smvi.report.naming import NumberFormat

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["lam_axis", "series", "focus", "png", "PNG_DPI", "figure_gap", "figure_ssl", "COLLAPSED_STYLE"]

COLORS = {"test": "C0", "train": "C1"}
COLLAPSED_STYLE = {"marker": "x", "s": 70, "color": "crimson", "linewidths": 2, "zorder": 5}
Off = tuple[float, float, str]  # (x, y, "λ=1") of a point that does not set the scale


PNG_DPI = 130


def png(fig: Figure) -> bytes:
    """PNG bytes rendered by Agg (a bare Figure: no pyplot state, the user's backend is left alone) at
    :data:`PNG_DPI`; each legend placed by :func:`collapsed_legend` is first moved just below its axes' tick and axis
    labels, and the point labels recorded by :func:`smvi.report.placement.label_points` are placed once the layout is
    done, which is then kept as it is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from smvi.report.placement import has_pending, place_pending

    below = [ax for ax in fig.axes if getattr(ax.get_legend(), "_smvi_below", False)]
    if below:
        fig.draw_without_rendering()
        for ax in below:
            legend, labels = ax.get_legend(), ax.xaxis.get_tightbbox()
            if legend is None or labels is None:
                continue
            y = ax.transAxes.inverted().transform((0, labels.y0))[1]
            legend.set_bbox_to_anchor((0.5, y - 0.02), transform=ax.transAxes)
    if has_pending(fig):
        canvas = FigureCanvasAgg(fig)
        fig.draw_without_rendering()  # the layout, with the legends where they end up
        place_pending(fig, canvas.get_renderer())
        fig.set_layout_engine("none")  # placed labels stay placed: nothing moves the axes after them
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, bbox_inches="tight")
    return buf.getvalue()


def lam_position(lams: Iterable[float]) -> Callable[[float], float]:
    """x position of each λ on the figures' axis: λ itself, and λ = 0 one decade below the smallest λ > 0 (at 0 when
    no λ is positive: a linear axis)."""
    positive = [x for x in lams if x > 0]
    zero = min(positive) / 10 if positive else 0.0
    return lambda lam: zero if lam == 0 else lam


def lam_axis(ax: Axes, lams: list[float], fmt: NumberFormat | None = None) -> Callable[[float], float]:
    """Set up the λ axis of ``ax`` (module docstring), its tick labels written by ``fmt`` (the report's, else one
    separating ``lams``: :mod:`smvi.report.naming`), and return the λ → x position map to plot with."""
    from matplotlib.ticker import NullLocator

    fmt = fmt or NumberFormat.separating(lams)
    pos, positive = lam_position(lams), sorted(x for x in lams if x > 0)
    label = "λ, weight of $D_{SM}$"
    if positive:
        ax.set_xscale("log")
        ax.set_xlim(pos(min(lams)) / 2, max(positive) * 2)
        label += " (log scale)"
    ax.set_xticks([pos(x) for x in lams], [fmt(x) for x in lams], rotation=45 if len(lams) > 6 else 0)
    ax.xaxis.set_minor_locator(NullLocator())
    if positive and 0 in lams:  # the axis is broken between 0 and the smallest λ > 0
        ax.text(
            math.sqrt(pos(0) * positive[0]),
            0,
            "//",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="center",
            fontsize=10,
            color="0.3",
            clip_on=False,
            zorder=6,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
    return pos


def plain_y(ax: Axes, signed: bool = False) -> None:
    """Plain y tick labels: no offset or scientific notation (``signed``: +1, 0, −1)."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+g}" if signed and v else f"{v:g}"))


def series(
    ax: Axes,
    rows: list[Row],
    color: str,
    label: str,
    pos: Callable[[float], float],
    *,
    off: frozenset[float] = frozenset(),
    fmt: NumberFormat | None = None,
    **style,
) -> tuple[list[float], list[Off]]:
    """Means with SE error bars joined by a line, and the per-run values as faint dots when there are several runs;
    a λ in ``off`` (collapsed) is not joined to the others but drawn as a red ×. Returns the y values that set the
    scale (the λ not in ``off``) and the ``off`` points, named with ``fmt`` (else a format separating the series' λ).
    When every λ of the series is in ``off`` there is nothing else to set the scale: the series is drawn and scaled as
    usual, each point still marked."""
    rows = sorted(rows, key=row_lam)
    fmt = fmt or NumberFormat.separating(row_lam(r) for r in rows)
    if all(r.lam in off for r in rows):
        off = frozenset()
        for r in rows:
            ax.scatter([pos(row_lam(r))], [r.mean], **COLLAPSED_STYLE)
    on = [r for r in rows if r.lam not in off]
    if on:
        ax.errorbar(
            [pos(row_lam(r)) for r in on],
            [r.mean for r in on],
            yerr=[r.se or 0.0 for r in on],
            color=color,
            label=label,
            capsize=3,
            marker="o",
            ms=4,
            **style,
        )
    kept, away = [], []
    for r in rows:
        if r.n_runs > 1:
            ax.scatter([pos(row_lam(r))] * r.n_runs, r.values, color=color, s=8, alpha=0.35, lw=0)
        if r.lam in off:
            ax.scatter([pos(row_lam(r))], [r.mean], **COLLAPSED_STYLE)
            away.append((pos(row_lam(r)), r.mean, f"λ={fmt(row_lam(r))}"))
        else:
            kept += [r.mean - (r.se or 0.0), r.mean + (r.se or 0.0), *r.values]
    return kept, away


def focus(
    ax: Axes,
    kept: list[float],
    away: list[Off],
    *,
    pad: float = 0.12,
    include: Iterable[float] = (),
    reach: float = 0.5,
    unit: str = "",
) -> None:
    """y limits from ``kept`` (and ``include``, e.g. a zero line) with a margin. An ``away`` point within ``reach``
    times that range of it widens the limits to show it (it does not distort the scale); one further out is drawn on
    the edge as a red triangle, with the values (in ``unit``) of every point off scale at that x written beside it,
    on the side toward the middle of the axes.
    Nothing changes when nothing is kept (all points are away) or nothing is away."""
    values = [v for v in [*kept, *include] if math.isfinite(v)]
    if not values or not away:
        return
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    near = [y for _, y, _ in away if lo - reach * span <= y <= hi + reach * span]
    lo, hi = min([lo, *near]), max([hi, *near])
    span = hi - lo or span
    lo, hi = lo - pad * span, hi + pad * span
    ax.set_ylim(lo, hi)
    off: dict[tuple[float, bool, str], list[float]] = {}
    for x, y, name in away:
        if not lo <= y <= hi:
            off.setdefault((x, y < lo, name), []).append(y)
    for (x, below, name), ys in off.items():
        edge, marker, va, dy = (lo, "v", "bottom", 7) if below else (hi, "^", "top", -7)
        ax.plot([x], [edge], marker=marker, color="crimson", ms=9, clip_on=False, zorder=6, ls="none")
        values = ", ".join(dict.fromkeys(f"{y:.1f}" for y in sorted(ys)))
        frac = ax.transAxes.inverted().transform(ax.transData.transform((x, edge)))[0]  # of the width, any x scale
        inward = 1 if frac < 0.5 else -1  # the label reads toward the middle of the axes
        ax.annotate(
            f"{name} off scale: {values}{unit}",
            (x, edge),
            xytext=(6 * inward, dy),
            textcoords="offset points",
            ha="left" if inward > 0 else "right",
            va=va,
            fontsize=7,
            color="crimson",
            zorder=7,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
        )


def collapsed_legend(ax: Axes, marked: bool, handles_labels: tuple[list, list] | None = None, **kw) -> None:
    """The axis's legend, with an entry for the red × when ``marked`` (a collapsed λ is drawn)."""
    from matplotlib.lines import Line2D

    handles, labels = handles_labels or ax.get_legend_handles_labels()
    if marked:
        handles = [*handles, Line2D([], [], marker="x", color="crimson", ls="none", mew=2)]
        labels = [*labels, "⚠C posterior collapse: does not set the y-range"]
    legend = ax.legend(
        handles,
        labels,
        **{"fontsize": 8, "loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "ncol": 2, "frameon": False, **kw},
    )
    # png() puts it under the tick and axis labels once they are laid out (a marker matplotlib does not declare)
    legend._smvi_below = True  # pyright: ignore[reportAttributeAccessIssue]


def figure_gap(
    rows: list[Row], lams: list[float], collapsed: frozenset[float] = frozenset(), fmt: NumberFormat | None = None
) -> bytes:
    """Figure 1: (a) the ELBO gap, (b) log p(x) by AIS with the ELBO (and whole-test-set IWAE) against λ, the λ
    written by ``fmt`` (the report's; else one separating ``lams``)."""
    from matplotlib.figure import Figure

    fmt = fmt or NumberFormat.separating(lams)
    fig = Figure(figsize=(11, 4.4), layout="tight")
    a, b = fig.subplots(1, 2)
    pos = {ax: lam_axis(ax, lams, fmt) for ax in (a, b)}
    got = {a: ([], []), b: ([], [])}

    def add(ax, rows_, color, label, **style):
        k, w = series(ax, rows_, color, label, pos[ax], off=collapsed, fmt=fmt, **style)
        got[ax][0].extend(k)
        got[ax][1].extend(w)

    for split in SPLITS:
        pick = lambda q, split=split: [r for r in rows if r.quantity == q and r.split == split]  # noqa: E731
        add(a, pick("gap"), COLORS[split], split)
        add(b, pick("ais"), COLORS[split], f"{split}: log p(x) (AIS)")
        add(b, pick("elbo"), COLORS[split], f"{split}: ELBO", ls="--", alpha=0.6)
    add(b, [r for r in rows if r.quantity == "iwae_full"], "C2", "whole test set: log p(x) (IWAE)", ls=":")
    a.set(title="(a) ELBO gap = log p(x) − ELBO", ylabel="nats per image")
    b.set(title="(b) log-likelihood", ylabel="nats per image")
    for ax in (a, b):
        focus(ax, *got[ax])
        plain_y(ax)
        collapsed_legend(ax, bool(got[ax][1]))
    return png(fig)


def figure_ssl(
    rows: list[Row], lams: list[float], collapsed: frozenset[float] = frozenset(), fmt: NumberFormat | None = None
) -> bytes:
    """Figure 2: (a) SSL test accuracy against λ with the raw-pixel baseline; (b) when the sweep has λ = 0, each λ's
    accuracy minus λ = 0's on the same label subsets, ± its SE over training seeds (the claims' unit; over label
    subsets with one seed) (linear axis, plain ticks); the λ written by ``fmt`` (as in :func:`figure_gap`)."""
    from matplotlib.figure import Figure

    fmt = fmt or NumberFormat.separating(lams)
    sizes = sorted({r.s for r in rows if r.s is not None})
    gains = [r for r in rows if r.quantity == "ssl_gain"]
    fig = Figure(figsize=(12.5, 4.6) if gains else (7, 4.6), layout="tight")
    ax, *rest = fig.subplots(1, 2 if gains else 1, squeeze=False)[0]
    pos = lam_axis(ax, lams, fmt)
    kept, away = [], []
    for i, s in enumerate(sizes):
        color = f"C{i}"
        k, w = series(
            ax,
            [r for r in rows if r.quantity == "ssl_accuracy" and r.s == s],
            color,
            f"s = {s}: encoder μ",
            pos,
            off=collapsed,
            fmt=fmt,
        )
        kept, away = kept + k, away + w
        for r in (r for r in rows if r.quantity == "ssl_raw_accuracy" and r.s == s):
            ax.axhline(r.mean, color=color, ls=":", lw=1.2, label=f"s = {s}: raw pixels")
            if r.se:
                ax.axhspan(r.mean - r.se, r.mean + r.se, color=color, alpha=0.12, lw=0)
            kept.append(r.mean)
    ax.set(title=f"{'(a) ' if gains else ''}Semi-supervised SVM test accuracy", ylabel="test accuracy (%)")
    focus(ax, kept, away, unit=" %")
    plain_y(ax)
    # label -> handle; list each s's pair together
    handles = dict(zip(*ax.get_legend_handles_labels()[::-1], strict=True))
    order = [k for s in sizes for k in (f"s = {s}: encoder μ", f"s = {s}: raw pixels") if k in handles]
    collapsed_legend(ax, bool(away), ([handles[k] for k in order], order), ncol=len(sizes))
    for b in rest:  # the gains: λ = 0 is their zero line, not a point
        pos_b = lam_axis(b, [lam for lam in lams if lam != 0], fmt)
        kept, away = [], []
        for i, s in enumerate(sizes):
            k, w = series(b, [r for r in gains if r.s == s], f"C{i}", f"s = {s}", pos_b, off=collapsed, fmt=fmt)
            kept, away = kept + k, away + w
        b.axhline(0, color="0.3", lw=0.8, label="λ = 0")
        focus(b, kept, away, include=(0.0,), unit=" points")
        plain_y(b, signed=True)
        b.set(title="(b) accuracy minus λ = 0's, same label subsets (± SE over seeds)", ylabel="percentage points")
        collapsed_legend(b, bool(away), ncol=len(sizes) + 1)
    return png(fig)
