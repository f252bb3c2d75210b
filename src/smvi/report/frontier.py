"""The trade-off frontier in the report (torch-free): where each way of moving between learning and inference lands.

A *method* is what a run's config says it trains: the objective (``train.objective``: SMVI, β-VAE, IWAE) and the
variational family (``model.posterior``); its *knob* is λ, β or k. Runs whose λ is learned toward a target
(``train.constraint.target`` set) are not a point of a fixed-knob curve and are left out here (the report treats them
elsewhere). Everything comes from the runs' current records as :func:`smvi.report.aggregate.collect_runs` read them
through the run-directory layer (:mod:`smvi.store.rundir`); nothing is recomputed.

- :func:`frontier_points`: per method and knob value, the test AIS log p(x) and the test ELBO gap of the eval records
  (mean over training seeds with SE over seeds when there are ≥ 2 runs, else the run's own SE over test points -- the
  convention of :mod:`smvi.report.aggregate`), and the approximation and amortization gaps of the gaps records
  (:class:`~smvi.store.records.GapsRecord`, same convention).
- :func:`gap_bars`: per run with a current gaps record, its approximation and amortization gaps (mean ± SE over
  images).
- :func:`dominated_by`: which points beat a point on both axes beyond noise, paired over the same test images where
  the runs share them (the frontier table's last column).
- :func:`frontier_section`: for runs of several methods or with a gaps record, the figure ``fig4_frontier.png`` --
  (a) the plane log p(x) against the ELBO gap, one line per method, points labelled with their knob, SE error bars,
  methods that differ only in a setting in parentheses ("SMVI, rejection q (acceptance 0.5)") in shades of one
  colour (:func:`method_colours`), a point in posterior collapse a red × that does not set the y-range; (b) when some
  run has a gaps record, a stacked bar of approximation vs amortization gap per run -- and the frontier table of
  ``results.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smvi.report.aggregate import Run, lookup, method_of, number
from smvi.report.figures import COLLAPSED_STYLE, collapsed_legend, focus, png
from smvi.report.naming import NumberFormat, RunNames
from smvi.report.paired import per_image
from smvi.report.placement import PointLabel, label_points
from smvi.report.tables import pm
from smvi.store.stats import PairedDiff, clustered_paired_t, mean_se

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Estimate",
    "FrontierPoint",
    "GapBar",
    "method_of",
    "frontier_points",
    "gap_bars",
    "dominated_by",
    "frontier_section",
    "frontier_figure",
    "method_colours",
    "estimate",
    "estimate_cell",
    "method_groups",
    "FRONTIER_CAPTIONS",
    "DOMINANCE_Z",
]

FIGURE = "fig4_frontier.png"
FRONTIER_CAPTIONS = {
    FIGURE: "Figure 4: the trade-off frontier. (a) Test log p(x) by AIS against the test ELBO gap (AIS − ELBO), one "
    "line per method (objective and variational family; methods that differ only in a setting in parentheses, such as "
    "the rejection q's acceptance, in shades of one colour), points labelled with their knob (λ, β or k); mean "
    "± SE (over training seeds, or over test points for a single run). Up and to the left is better on both; a "
    "red × marks a point in posterior collapse (⚠C), which does not set the y-range (off scale: a red "
    "triangle on the edge with its value). (b), for runs with a gaps record: the ELBO gap split into the "
    "approximation gap (the family cannot represent the posterior) and the amortization gap (the encoder "
    "misses each image's best member), mean ± SE over the gaps record's test images. Runs with a learned λ "
    "(train.constraint.target) are not shown.",
}


@dataclass(frozen=True)
class Estimate:
    """A mean with its SE (None: undefined) and what the SE is over."""

    mean: float
    se: float | None
    n_runs: int
    se_over: str


@dataclass(frozen=True)
class FrontierPoint:
    """One method at one knob value: ``log_px`` and ``gap`` from the eval records (test split), ``approximation``
    and ``amortization`` from the gaps records (None where no run of the point has one)."""

    method: str
    knob: str
    value: float
    runs: tuple[str, ...]
    log_px: Estimate | None
    gap: Estimate | None
    approximation: Estimate | None = None
    amortization: Estimate | None = None
    shown: str | None = None  # the knob value as the report writes it (smvi.report.naming)

    @property
    def label(self) -> str:
        return f"{self.knob}={self.shown if self.shown is not None else NumberFormat()(self.value)}"


@dataclass(frozen=True)
class GapBar:
    """One run's gap split (nats): mean ± SE over the gaps record's images."""

    run: str
    method: str
    label: str
    approximation: tuple[float, float | None]
    amortization: tuple[float, float | None]


def estimate(per_run: list[tuple[float, float | None]], within: str) -> Estimate | None:
    """Mean over runs, SE over runs if ≥ 2 (else the one run's own SE, over ``within``)."""
    if not per_run:
        return None
    if len(per_run) >= 2:
        m = mean_se([v for v, _ in per_run])
        return Estimate(m.mean, m.se, len(per_run), "training seeds") if m.mean is not None else None
    return Estimate(per_run[0][0], per_run[0][1], 1, within)


def _pair(tree: Any, *keys: str) -> tuple[float, float | None] | None:
    m = number(lookup(tree, *keys, "mean"))
    return None if m is None else (m, number(lookup(tree, *keys, "se")))


def method_groups(runs: list[Run]) -> list[tuple[tuple[str, str, float], list[Run]]]:
    """``runs`` grouped by (method, knob name, knob value) (:func:`smvi.report.aggregate.method_of`; a learned λ is
    left out), sorted by method (SMVI's first) then knob."""
    groups: dict[tuple[str, str, float], list[Run]] = {}
    for r in runs:
        if (m := method_of(r.config)) is not None:
            groups.setdefault(m, []).append(r)
    return sorted(groups.items(), key=lambda kv: (not kv[0][0].startswith("SMVI"), kv[0]))


def frontier_points(runs: list[Run]) -> list[FrontierPoint]:
    """One point per (method, knob value) with a test eval or a gaps record, sorted by method (SMVI's first) then
    knob; the knob values written as the report writes them (:class:`smvi.report.naming.RunNames` of ``runs``)."""
    fmt = RunNames.of(runs).fmt
    points = []
    for (method, knob, value), rs in method_groups([r for r in runs if r.eval is not None or r.gaps is not None]):
        pick = lambda tree, *k, rs=rs: [p for r in rs if (p := _pair(getattr(r, tree), *k))]  # noqa: E731
        points.append(
            FrontierPoint(
                method,
                knob,
                value,
                tuple(r.name for r in rs),
                estimate(pick("eval", "splits", "test", "ais"), "test points"),
                estimate(pick("eval", "splits", "test", "gap"), "test points"),
                estimate(pick("gaps", "approximation"), "test images"),
                estimate(pick("gaps", "amortization"), "test images"),
                fmt(value),
            )
        )
    return points


def gap_bars(runs: list[Run]) -> list[GapBar]:
    """Every run with a current gaps record and a fixed knob, in the order of :func:`frontier_points`."""
    bars, fmt = [], RunNames.of(runs).fmt
    for r in runs:
        m = method_of(r.config)
        a, b = _pair(r.gaps, "approximation"), _pair(r.gaps, "amortization")
        if m is not None and a is not None and b is not None:
            bars.append((m, r.name, GapBar(r.name, m[0], f"{m[0]} {m[1]}={fmt(m[2])}", a, b)))
    return [bar for *_, bar in sorted(bars, key=lambda t: (not t[0][0].startswith("SMVI"), t[0], t[1]))]


DOMINANCE_Z = 2.0
"""How many standard errors of the difference a point must be beaten by on *both* axes to count as dominated."""


def dominated_by(points: list[FrontierPoint], runs: Sequence[Run] = ()) -> dict[FrontierPoint, list[FrontierPoint]]:
    """For each point with a test log p(x) and gap, the points that beat it on both: log p(x) higher and the ELBO gap
    lower, each by more than :data:`DOMINANCE_Z` standard errors of the difference. Points with none form the
    frontier, up to noise: a point beaten within noise stays on it.

    The difference is paired where it can be: when ``runs`` hold both points' runs and runs of the same training seed
    scored the same test images (per-image values in their eval records, matched by image index -- every run of a
    study scores the same fixed images), it is the mean per-image difference with the SE of
    :func:`smvi.store.stats.clustered_paired_t` (unit: the image with one seed, the seed with several; as in
    :mod:`smvi.report.paired`), which removes the spread of log p(x) across images that both runs share. Otherwise it is
    the difference of the means with the combined SE √(SE₁² + SE₂²) (a missing SE counts as 0)."""
    usable = [p for p in points if p.log_px and p.gap]
    by_name = {r.name: r for r in runs}

    def paired(q: FrontierPoint, p: FrontierPoint, quantity: str) -> PairedDiff | None:
        clusters: dict[int, list[float]] = {}
        for a, b in ((by_name.get(x), by_name.get(y)) for x in q.runs for y in p.runs):
            if a is not None and b is not None and a.seed == b.seed:
                va, vb = per_image(a, quantity, "test"), per_image(b, quantity, "test")
                clusters.setdefault(a.seed, []).extend(va[i] - vb[i] for i in sorted(va.keys() & vb.keys()))
        d = clustered_paired_t(clusters)
        return d if d is not None and d.se is not None else None

    def margin(q: FrontierPoint, p: FrontierPoint, quantity: str) -> tuple[float, float]:
        """(q − p, its SE) for ``quantity`` ("ais" or "gap")."""
        if (d := paired(q, p, quantity)) and d.se is not None:
            return d.mean, d.se
        eq, ep = (q.log_px, p.log_px) if quantity == "ais" else (q.gap, p.gap)
        assert eq and ep  # usable points have both
        return eq.mean - ep.mean, math.hypot(eq.se or 0.0, ep.se or 0.0)

    def beats(q: FrontierPoint, p: FrontierPoint) -> bool:
        (up, se_up), (down, se_down) = margin(q, p, "ais"), margin(q, p, "gap")
        return up > DOMINANCE_Z * se_up and -down > DOMINANCE_Z * se_down

    return {p: [q for q in usable if q is not p and beats(q, p)] for p in usable}


# ---- figure and table -----------------------------------------------------------------------------------------------
def method_colours(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """An RGB colour per method, in order: the matplotlib cycle's next colour per kin, where the methods of one kin
    differ only in a setting in parentheses ("SMVI, rejection q (acceptance 0.05)", "… (acceptance 0.5)"); a kin of
    several methods goes in shades of its colour, from lighter to darker in the given order."""
    from matplotlib.colors import to_rgb

    kin = {m: m.split(" (", 1)[0] for m in methods}
    out: dict[str, tuple[float, float, float]] = {}
    for i, k in enumerate(dict.fromkeys(kin.values())):
        members = [m for m in methods if kin[m] == k]
        base = to_rgb(f"C{i}")
        for j, m in enumerate(members):
            t = 0.0 if len(members) == 1 else 0.5 - 0.85 * j / (len(members) - 1)  # > 0: toward white; < 0: black
            r, g, b = (c + (1 - c) * t if t > 0 else c * (1 + t) for c in base)
            out[m] = (r, g, b)
    return out


def _plane(ax, points: list[FrontierPoint], collapsed: frozenset[str]) -> None:
    """One line per method; a point with a run in ``collapsed`` is a red × off its line that does not set the y-range
    (the convention of :mod:`smvi.report.figures`). Each point is labelled with its knob, placed where no label
    overprints another (:mod:`smvi.report.placement`)."""
    se = lambda e: e.se if e.se is not None else 0.0  # noqa: E731
    kept: list[float] = []
    away: list[tuple[float, float, str]] = []
    labels: list[PointLabel] = []
    colours = method_colours(list(dict.fromkeys(p.method for p in points)))
    for method, colour in colours.items():
        # (point, its log p(x), its gap) for the points of the method that have both
        ps = [(p, p.log_px, p.gap) for p in points if p.method == method and p.log_px and p.gap]
        on = [(p, lp, g) for p, lp, g in ps if not collapsed.intersection(p.runs)]
        if on:
            ax.errorbar(
                [g.mean for _, _, g in on],
                [lp.mean for _, lp, _ in on],
                xerr=[se(g) for _, _, g in on],
                yerr=[se(lp) for _, lp, _ in on],
                color=colour,
                marker="o",
                ms=4,
                capsize=3,
                label=method,
            )
        for p, lp, g in ps:
            if (p, lp, g) in on:
                kept += [lp.mean - se(lp), lp.mean + se(lp)]
            else:
                ax.scatter([g.mean], [lp.mean], **COLLAPSED_STYLE)
                away.append((g.mean, lp.mean, f"{method} {p.label}"))
            labels.append(PointLabel(g.mean, lp.mean, p.label, color=colour))
    label_points(ax, labels)
    if len(away) > 1:  # collapsed points crowd near a zero gap: one marker and one label for them all
        names = "; ".join(dict.fromkeys(name for *_, name in away))
        away = [(min(x for x, *_ in away), y, names) for _, y, _ in away]
    focus(ax, kept or [p.log_px.mean for p in points if p.log_px], away, unit=" nats")
    ax.set(
        title="(a) log-likelihood against inference gap (test)",
        xlabel="ELBO gap = log p(x) − ELBO (nats)",
        ylabel="log p(x) by AIS (nats)",
    )
    ax.grid(alpha=0.3)
    collapsed_legend(ax, bool(away), ncol=3)


def _bars(ax, bars: list[GapBar]) -> None:
    """Horizontal stacked bars, one per run, top to bottom in the table's order, each labelled on one line."""
    y = list(range(len(bars)))
    approx = [b.approximation[0] for b in bars]
    amort = [b.amortization[0] for b in bars]
    err = lambda v: [s if s is not None else 0.0 for s in v]  # noqa: E731
    ax.barh(y, approx, color="C0", label="approximation gap", xerr=err([b.approximation[1] for b in bars]), capsize=3)
    ax.barh(
        y,
        amort,
        left=approx,
        color="C1",
        label="amortization gap",
        capsize=3,
        xerr=err([b.amortization[1] for b in bars]),
    )
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(y, [b.label for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set(title="(b) the gap split per run (test images)", xlabel="nats per image")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)


def frontier_figure(points: list[FrontierPoint], bars: list[GapBar], collapsed: frozenset[str]) -> Figure:
    """Figure 4 (module docstring), its point labels recorded for :func:`smvi.report.figures.png` to place."""
    from matplotlib.figure import Figure  # matplotlib is imported only when a report is drawn

    fig = Figure(figsize=(14, 5.2) if bars else (7, 4.8), layout="tight")
    # the plane keeps its width beside the bars' one-line labels
    axes = fig.subplots(1, 2, width_ratios=(1.5, 1)) if bars else fig.subplots(1, 1, squeeze=False)[0]
    _plane(axes[0], points, collapsed)
    if bars:
        _bars(axes[1], bars)
    return fig


def estimate_cell(e: Estimate | None) -> str:
    """``mean ± SE`` (two decimals); † marks an SE from within one run; — without a value."""
    if e is None or not math.isfinite(e.mean):
        return "—"
    return pm(e.mean, e.se) + ("" if e.se is None or e.se_over == "training seeds" else " †")


def _beaten(by: list[FrontierPoint] | None) -> str:
    if by is None:
        return "—"
    return "none" if not by else "; ".join(f"{q.method} {q.label}" for q in by)


def frontier_section(
    runs: list[Run], collapsed: frozenset[str] = frozenset()
) -> tuple[dict[str, bytes], list[tuple[str, list[str], list[list[str]]]]]:
    """The frontier figure (``{file name: PNG}``) and the frontier table ``[(title, header, rows)]``. Both are empty
    when the runs are of one method and none has a gaps record (an SMVI λ sweep: Figure 1 already shows it, and its
    report stays as it was); the figure also when no method has a test log p(x) and gap. A point with a run named in
    ``collapsed`` (flagged as a posterior collapse, :mod:`smvi.report.flags`) is marked ⚠C in the table and drawn as a
    red × that does not set the figure's y-range."""
    points, bars = frontier_points(runs), gap_bars(runs)
    if len({p.method for p in points}) < 2 and not bars:
        return {}, []
    drawable = [p for p in points if p.log_px and p.gap]
    pngs = {FIGURE: png(frontier_figure(drawable, bars, collapsed))} if drawable else {}
    if not points:
        return pngs, []
    beaten = dominated_by(points, runs)
    head = [
        "method",
        "knob",
        "runs",
        "log p(x) (AIS), test",
        "ELBO gap, test",
        "approximation gap",
        "amortization gap",
        "dominated by",
    ]
    body = [
        [
            p.method,
            p.label + (" ⚠C" if collapsed.intersection(p.runs) else ""),
            str(len(p.runs)),
            estimate_cell(p.log_px),
            estimate_cell(p.gap),
            estimate_cell(p.approximation),
            estimate_cell(p.amortization),
            _beaten(beaten.get(p)),
        ]
        for p in points
    ]
    title = (
        "Figure 4: the trade-off frontier (nats, mean ± SE; the approximation and amortization gaps are the gaps "
        f"records', on their own test images). Dominated by: the points with a higher log p(x) and a smaller gap, "
        f"each by more than {DOMINANCE_Z:g} SEs of the difference (paired over the same test images and training "
        "seeds where the runs share them, else combined); none: on the frontier, up to noise"
    )
    return pngs, [(title, head, body)]
