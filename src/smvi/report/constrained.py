"""The report's section on constrained runs (λ learned toward a target: :mod:`smvi.core.constraint`), from result files
alone.

A run is constrained when its config sets ``train.constraint.target`` (:func:`smvi.report.aggregate.is_constrained`);
:mod:`smvi.report.aggregate` leaves such runs out of its per-λ aggregates (their ``train.lam`` is 0 but λ is not). Per
constrained run, as :func:`smvi.report.aggregate.collect_runs` read it through the run-directory layer: the eval and ssl
records (current ones only), and from ``metrics.jsonl`` (the epochs up to the checkpoint's) λ per epoch, and at the last
epoch the measure's moving average (``constraint_avg``, what the target bounds), the constraint's status, and the active
units and KL(q ‖ prior) on the monitor set. A run is flagged **collapsed** by the rule of :mod:`smvi.report.flags` (at
most :data:`~smvi.report.flags.COLLAPSE_UNITS` active units or a KL below :data:`~smvi.report.flags.COLLAPSE_KL` nats: a
posterior that carries no information meets any inference target trivially).

Writes ``constrained.csv`` (one row per run), one table, and three figures: achieved against target (log–log, with
y = x), λ's trajectory per run, and the (AIS log p(x), AIS gap) plane with the fixed-λ runs as a line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smvi.report.aggregate import Row, Run, is_constrained, last_kl, lookup, number
from smvi.report.figures import png
from smvi.report.flags import COLLAPSE_KL, COLLAPSE_UNITS, is_collapsed
from smvi.report.naming import RunNames
from smvi.report.placement import PointLabel, label_points

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COLLAPSE_UNITS",
    "COLLAPSE_KL",
    "ConstrainedRun",
    "is_constrained",
    "constrained_runs",
    "constrained_section",
    "Section",
    "CAPTIONS",
    "FILES",
]

MEASURE = {"dsm": "D_SM", "gap": "gap (IWAE_k − ELBO)"}
CAPTIONS = {
    "figc1_targets.png": "Constrained runs, achieved against target (log–log; dotted: y = x, the target met "
    "exactly). D_SM targets: the training D_SM's moving average at the last epoch and the test "
    "D_SM of the evaluation; gap targets: the training IWAE_k − ELBO estimate and the AIS test "
    "gap (the estimate is a lower bound of the gap).",
    "figc2_lambda.png": "Constrained runs: λ at the end of each epoch (log scale); grey lines: the sweep's fixed λ.",
    "figc3_plane.png": "Test AIS log p(x) against the test AIS gap: fixed-λ runs (line, labelled by λ; mean over "
    "seeds; a red × marks a collapsed λ) and constrained runs (points, labelled by target; "
    "× marks a collapsed run).",
}
FILES = {*CAPTIONS, "constrained.csv"}


@dataclass(frozen=True)
class ConstrainedRun:
    """One constrained run's numbers (None where a record or metric is missing)."""

    run: Run
    measure: str
    target: float
    achieved: float | None  # the measure's moving average at the last epoch
    status: str | None  # active, slack or unreachable, at the last epoch
    lam_end: float | None
    trajectory: tuple[tuple[int, float], ...]  # (epoch, λ at its end)
    active_units: float | None
    kl: float | None

    @property
    def collapsed(self) -> bool | None:
        return is_collapsed(self.active_units, self.kl)

    def eval(self, split: str, q: str, key: str = "mean") -> float | None:
        return number(lookup(self.run.eval, "splits", split, q, key))


def constrained_runs(runs: list[Run], notes: list[str]) -> list[ConstrainedRun]:
    """The constrained ``runs`` with their metrics (sorted by measure, target descending, seed); a run whose
    ``metrics.jsonl`` could not be read (noted by :func:`smvi.report.aggregate.collect_runs`) keeps its records."""
    out = []
    for r in (r for r in runs if is_constrained(r)):
        lines = r.metrics
        last = lines[-1] if lines else {}
        traj = tuple((m["epoch"], float(m["lam"])) for m in lines if number(m.get("lam")) is not None)
        status = last.get("constraint_status")
        out.append(
            ConstrainedRun(
                r,
                str(r.config.get("train.constraint.measure", "dsm")),
                float(r.config["train.constraint.target"]),
                number(last.get("constraint_avg")),
                status if isinstance(status, str) else None,
                number(last.get("lam")),
                traj,
                number(last.get("test_active_units")),
                last_kl(last)[0],
            )
        )
        if status == "unreachable":
            notes.append(f"{r.name}: the target was not reached with λ at its cap (constraint status unreachable)")
    keys = sorted(
        {k for c in out for k in c.run.config if k.startswith("train.constraint.")}
        - {"train.constraint.target", "train.constraint.measure"}
    )
    for k in keys:
        if len({repr(c.run.config.get(k)) for c in out}) > 1:
            notes.append(f"constrained runs differ in {k}: compare them with care")
    return sorted(out, key=lambda c: (c.measure, -c.target, c.run.seed, c.run.name))


# ---- tables ---------------------------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def _sizes(cruns: list[ConstrainedRun]) -> list[int]:
    return sorted({int(s) for c in cruns for s in (lookup(c.run.ssl, "features", "sizes") or {}) if str(s).isdigit()})


def _ssl(c: ConstrainedRun, s: int) -> float | None:
    acc = [a for a in (lookup(c.run.ssl, "features", "sizes", str(s), "accuracy") or []) if number(a) is not None]
    return 100 * sum(acc) / len(acc) if acc else None


def _columns(cruns: list[ConstrainedRun], names: RunNames) -> list[tuple[str, Any]]:
    """(header, cell function) of every column of the table, the targets written by ``names``."""
    yes = lambda x: "—" if x is None else "yes" if x else "no"  # noqa: E731
    cols = [
        ("run", lambda c: c.run.name),
        ("measure", lambda c: c.measure),
        ("target", lambda c: names.fmt(c.target)),
        ("seed", lambda c: str(c.run.seed)),
        ("epochs", lambda c: f"{c.run.epochs or 0}/{c.run.planned or '?'}"),
        ("achieved (training, last epoch)", lambda c: _g(c.achieved)),
        ("status", lambda c: c.status or "—"),
        ("test D_SM", lambda c: _g(c.eval("test", "d_sm"))),
        ("AIS gap, test", lambda c: _f(c.eval("test", "gap"))),
        ("AIS gap, train", lambda c: _f(c.eval("train", "gap"))),
        ("AIS log p(x), test", lambda c: _f(c.eval("test", "ais"))),
        ("λ at the end", lambda c: _g(c.lam_end)),
        ("active units", lambda c: "—" if c.active_units is None else f"{c.active_units:g}"),
        ("KL (nats)", lambda c: _f(c.kl)),
    ]
    cols += [(f"SSL %, s = {s}", lambda c, s=s: _f(_ssl(c, s))) for s in _sizes(cruns)]
    return cols + [("collapsed", lambda c: yes(c.collapsed))]


def _table(cruns: list[ConstrainedRun], names: RunNames) -> tuple[str, list[str], list[list[str]]]:
    cols = _columns(cruns, names)
    title = (
        f"Constrained runs: λ learned toward a target (collapsed: ≤ {COLLAPSE_UNITS} active units or KL < "
        f"{COLLAPSE_KL} nats)"
    )
    return title, [h for h, _ in cols], [[f(c) for _, f in cols] for c in cruns]


def _csv(cruns: list[ConstrainedRun]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "run",
            "measure",
            "target",
            "seed",
            "epochs",
            "achieved",
            "status",
            "test_d_sm",
            "test_gap",
            "train_gap",
            "test_ais",
            "lam_end",
            "active_units",
            "kl",
            "collapsed",
        ]
    )
    val = lambda x: "" if x is None else repr(x)  # noqa: E731
    for c in cruns:
        w.writerow(
            [
                c.run.name,
                c.measure,
                repr(c.target),
                c.run.seed,
                val(c.run.epochs),
                val(c.achieved),
                c.status or "",
                val(c.eval("test", "d_sm")),
                val(c.eval("test", "gap")),
                val(c.eval("train", "gap")),
                val(c.eval("test", "ais")),
                val(c.lam_end),
                val(c.active_units),
                val(c.kl),
                "" if c.collapsed is None else c.collapsed,
            ]
        )
    return buf.getvalue()


# ---- figures --------------------------------------------------------------------------------------------------------
def _label(c: ConstrainedRun, names: RunNames) -> str:
    return names.target(c.measure, c.target) + (f", seed {c.run.seed}" if c.run.seed else "")


def _figure_targets(cruns: list[ConstrainedRun]) -> bytes | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    panels = []
    for measure, test_q, test_label in (("dsm", "d_sm", "test D_SM (eval)"), ("gap", "gap", "AIS gap, test")):
        pts = [c for c in cruns if c.measure == measure]
        train = [(c.target, c.achieved) for c in pts if c.achieved is not None and c.achieved > 0]
        test = [(c.target, v) for c in pts if (v := c.eval("test", test_q)) is not None and v > 0]
        if train or test:
            panels.append((measure, train, test, test_label))
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 4.5), layout="tight")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (measure, train, test, test_label) in zip(axes, panels, strict=True):
        for pts, style, label in ((train, "o", f"training {MEASURE[measure]}, last epoch"), (test, "s", test_label)):
            if pts:
                ax.scatter(*zip(*pts, strict=True), marker=style, label=label, zorder=3)
        values = [v for p in train + test for v in p]
        lo, hi = min(values) / 1.5, max(values) * 1.5
        ax.plot([lo, hi], [lo, hi], ":", color="0.4", label="y = x")
        ax.set(
            xscale="log",
            yscale="log",
            xlim=(lo, hi),
            ylim=(lo, hi),
            xlabel=f"target ε ({MEASURE[measure]})",
            ylabel="achieved",
            title=f"{MEASURE[measure]} targets",
        )
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return png(fig)


def _figure_lambda(cruns: list[ConstrainedRun], fixed_lams: list[float], names: RunNames) -> bytes | None:
    from matplotlib.figure import Figure

    runs = [c for c in cruns if c.trajectory]
    if not runs:
        return None
    fig = Figure(figsize=(7.5, 4.5), layout="tight")
    ax = fig.subplots()
    for lam in (x for x in fixed_lams if x > 0):
        ax.axhline(lam, color="0.75", lw=0.8, zorder=0)
        ax.annotate(names.lam(lam), (0, lam), xycoords=("axes fraction", "data"), fontsize=7, color="0.5")
    for i, c in enumerate(runs):
        ax.plot(*zip(*c.trajectory, strict=True), marker="o", ms=3, color=f"C{i % 10}", label=_label(c, names))
    ax.set(yscale="log", xlabel="epoch", ylabel="λ (end of epoch)", title="Learned λ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return png(fig)


def plane_figure(
    cruns: list[ConstrainedRun], rows: list[Row], names: RunNames, collapsed: frozenset[float] = frozenset()
) -> Figure | None:
    """The (log p(x), gap) plane: the fixed-λ line of ``rows`` and the constrained runs, each point labelled (λ by
    ``names``' format, a target by :meth:`~smvi.report.naming.RunNames.target`) where no label overprints another
    (:mod:`smvi.report.placement`: placed by :func:`smvi.report.figures.png`); None without a point."""
    from matplotlib.figure import Figure

    find = {(r.quantity, r.lam): r.mean for r in rows if r.split == "test" and r.s is None and r.lam is not None}
    line = sorted(
        (lam, find[("ais", lam)], find[("gap", lam)]) for q, lam in find if q == "ais" and ("gap", lam) in find
    )
    pts = [
        (c, a, g)
        for c in cruns
        if (a := c.eval("test", "ais")) is not None and (g := c.eval("test", "gap")) is not None
    ]
    if not (line or pts):
        return None
    fig = Figure(figsize=(7.5, 5), layout="tight")
    ax = fig.subplots()
    labels: list[PointLabel] = []
    if line:
        ok = [p for p in line if p[0] not in collapsed]
        ax.plot([a for _, a, _ in ok], [g for _, _, g in ok], "-o", color="0.35", ms=4, label="fixed λ")
        ax.plot(
            [a for _, a, _ in line],
            [g for _, _, g in line],
            ":",
            color="0.35",
            lw=1,
            zorder=0,
            label="to a collapsed fixed λ" if len(ok) < len(line) else None,
        )
        for lam, a, g in line:
            labels.append(
                PointLabel(
                    a,
                    g,
                    f"λ={names.fmt(lam)}" + (" ⚠C collapsed" if lam in collapsed else ""),
                    color="crimson" if lam in collapsed else "0.3",
                )
            )
            if lam in collapsed:
                ax.scatter([a], [g], marker="x", s=60, color="crimson", zorder=4)
    for i, (c, a, g) in enumerate(pts):
        text = _label(c, names)
        ax.scatter([a], [g], marker="X" if c.collapsed else "o", s=45, color=f"C{i % 10}", zorder=3, label=text)
        labels.append(PointLabel(a, g, text, color=f"C{i % 10}", marker=4.0))
    label_points(ax, labels)
    gaps = [g for *_, g in line] + [g for *_, g in pts]
    if min(gaps) > 0:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=0.1)
    ax.set(
        xlabel="test log p(x), AIS (nats)",
        ylabel="test gap, AIS − ELBO (nats)",
        title="Learning–inference plane: higher log p(x) is better, lower gap is better",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # beside: labels fill the plane
    return fig


# ---- the section ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """What the report adds for constrained runs: figures (name → PNG), tables, extra files and notes."""

    figures: dict[str, bytes]
    tables: list[tuple[str, list[str], list[list[str]]]]
    files: dict[str, bytes]
    notes: list[str]


def constrained_section(runs: list[Run], rows: list[Row], collapsed: frozenset[float] = frozenset()) -> Section:
    """The constrained section of the report on ``runs`` (all of the sweep's), with the fixed-λ aggregates ``rows``
    for the plane (a fixed λ in ``collapsed`` marked there); empty when no run is constrained."""
    notes: list[str] = []
    cruns = constrained_runs(runs, notes)
    if not cruns:
        return Section({}, [], {}, notes)
    fixed = sorted({r.lam for r in runs if not is_constrained(r)})
    names = RunNames.of(runs)
    plane = plane_figure(cruns, rows, names, collapsed)
    drawn = {
        "figc1_targets.png": _figure_targets(cruns),
        "figc2_lambda.png": _figure_lambda(cruns, fixed, names),
        "figc3_plane.png": None if plane is None else png(plane),
    }
    return Section(
        {k: v for k, v in drawn.items() if v is not None},
        [_table(cruns, names)],
        {"constrained.csv": _csv(cruns).encode()},
        notes,
    )
