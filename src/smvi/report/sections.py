"""The report's sections as one list: each section is a function of the sweep's :class:`Inputs` returning one
:class:`Section` shape (figures, tables, notes, extra files, extra HTML), registered in :data:`SECTIONS` with the
captions of its figures and the names of the files it may write. :func:`smvi.report.page.make_report` iterates the
list in order: figures, tables and notes appear in the order of the sections that give them.

Adding a section: a module in ``smvi/report/`` with its function, and one :class:`ReportSection` line in
:data:`SECTIONS` (its figure captions and file names with it). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smvi.report.aggregate import EVAL_METRICS, Row, Run
from smvi.report.constrained import CAPTIONS as CONSTRAINED_CAPTIONS
from smvi.report.constrained import FILES as CONSTRAINED_FILES
from smvi.report.constrained import constrained_section
from smvi.report.curves import CAPTION as CURVES_CAPTION
from smvi.report.curves import FIGURE as CURVES
from smvi.report.curves import figure_curves
from smvi.report.figures import figure_gap, figure_ssl
from smvi.report.flags import Flag
from smvi.report.frontier import FRONTIER_CAPTIONS, frontier_section
from smvi.report.method_cost import method_cost_table
from smvi.report.method_ssl import method_ssl_table
from smvi.report.naming import RunNames
from smvi.report.paired import PAIRED_CSV, PairedRow, figure_paired, paired_csv, paired_tables
from smvi.report.pictures import pictures_section
from smvi.report.tables import Table, convergence_table, result_tables, results_csv, run_table

__all__ = ["Inputs", "Section", "ReportSection", "SECTIONS", "COLLAPSED_NOTE"]


@dataclass(frozen=True)
class Inputs:
    """What every section may read: the sweep directory, its runs (:func:`smvi.report.aggregate.collect_runs`), the
    per-λ ``rows`` and their ``lams``, the ``flags``, the fixed-λ SMVI runs on the λ ``axis`` and their ``paired``
    comparisons with λ = 0."""

    sweep_dir: Path
    runs: list[Run]
    rows: list[Row]
    lams: list[float]
    flags: list[Flag]
    axis: list[Run]
    paired: list[PairedRow]

    @property
    def names(self) -> RunNames:
        """How the report names its runs and writes their knob values (:mod:`smvi.report.naming`)."""
        return RunNames.of(self.runs)

    @property
    def collapsed(self) -> frozenset[float]:
        """The fixed λ with a run in posterior collapse: marked in the figures, never setting their scale."""
        return frozenset(f.lam for f in self.flags if f.kind == "collapse" and f.lam is not None)

    @property
    def collapsed_runs(self) -> frozenset[str]:
        """The runs in posterior collapse: a red × in the training curves and the frontier."""
        return frozenset(f.run for f in self.flags if f.kind == "collapse")


@dataclass(frozen=True)
class Section:
    """What a section adds to the report: ``figures`` (file name → PNG, with a caption in its
    :class:`ReportSection`), ``tables``, ``notes``, other ``files`` (name → bytes) and ``html`` placed after the
    tables (the HTML page only)."""

    figures: dict[str, bytes] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    html: str = ""


@dataclass(frozen=True)
class ReportSection:
    """A registered section: ``name``, ``build(inputs) -> Section``, the ``captions`` of the figures it may draw and
    the names of the other ``files`` it may write."""

    name: str
    build: Callable[[Inputs], Section]
    captions: Mapping[str, str] = field(default_factory=dict)
    files: frozenset[str] = frozenset()


COLLAPSED_NOTE = (
    "A red × marks a λ in posterior collapse (⚠C); it does not set the y-range, and off scale it is a "
    "red triangle on the edge with its value."
)
FIGURE_CAPTIONS = {
    "fig1_gap.png": "Figure 1: (a) ELBO gap, AIS log p(x) − ELBO, and (b) log p(x) by AIS (solid) with the ELBO "
    "(dashed) against λ, on train and test images (and, where computed, IWAE log p(x) on the whole "
    "test set, dotted); mean ± SE over training seeds, dots are runs. λ = 0 sits left of the axis "
    "break (//). " + COLLAPSED_NOTE,
    "fig2_ssl.png": "Figure 2: test accuracy of an RBF SVM on encoder means from s labeled examples against λ; "
    "dotted lines and bands: the same SVM protocol on raw pixels (mean ± SE over label subsets). "
    "(b), when the sweep has λ = 0: each λ's accuracy minus λ = 0's on the same label subsets "
    "(mean ± SE over training seeds, each seed's mean over its label subsets: the claims' unit; "
    "over the label subsets where a λ has one seed). " + COLLAPSED_NOTE,
    "fig3_paired.png": "Figure 3: each λ minus λ = 0, paired on the same images, label subsets and training seeds, "
    "with 95 % t intervals: (a) log p(x) (IWAE on the whole test set, AIS on the test subset) "
    "and the test gap, (b) SSL accuracy. " + COLLAPSED_NOTE,
    CURVES: CURVES_CAPTION,
}


def _figures(i: Inputs) -> Section:
    """Figures 1–3 of the runs on the λ axis, and the training curves of every run."""
    pngs, fmt = {}, i.names.fmt
    if any(r.quantity in EVAL_METRICS for r in i.rows):
        pngs["fig1_gap.png"] = figure_gap(i.rows, i.lams, i.collapsed, fmt)
    if any(r.quantity == "ssl_accuracy" for r in i.rows):
        pngs["fig2_ssl.png"] = figure_ssl(i.rows, i.lams, i.collapsed, fmt)
    if png := figure_paired(i.paired, i.lams, i.collapsed, fmt):
        pngs["fig3_paired.png"] = png
    if png := figure_curves(i.runs, i.collapsed_runs):
        pngs[CURVES] = png
    return Section(figures=pngs)


def _results(i: Inputs) -> Section:
    """The per-λ tables and the paired tables; ``results.csv`` and, when there are pairs, ``paired.csv``."""
    fmt = i.names.fmt
    tables = result_tables(i.rows, i.lams, i.flags, fmt) + paired_tables(
        i.paired, i.lams, any(r.eval for r in i.runs), i.flags, fmt
    )
    files = {"results.csv": results_csv(i.rows, i.flags).encode()}
    if i.paired:
        files[PAIRED_CSV] = paired_csv(i.paired).encode()
    return Section(tables=tables, files=files)


def _convergence(i: Inputs) -> Section:
    tables, notes = convergence_table(i.runs, i.flags)
    return Section(tables=tables, notes=notes)


def _frontier(i: Inputs) -> Section:
    """Figure 4 and the frontier table, and with them the SSL accuracy and training cost of every method and knob."""
    figures, tables = frontier_section(i.runs, i.collapsed_runs)
    if tables and (ssl := method_ssl_table(i.runs, i.collapsed_runs)):
        tables = [*tables, ssl]
    if tables and (cost := method_cost_table(i.runs)):
        tables = [*tables, cost]
    return Section(figures=figures, tables=tables)


def _constrained(i: Inputs) -> Section:
    c = constrained_section(i.runs, i.rows, i.collapsed)
    return Section(figures=c.figures, tables=c.tables, notes=c.notes, files=c.files)


def _runs(i: Inputs) -> Section:
    return Section(tables=[run_table(i.runs, i.flags)])


def _pictures(i: Inputs) -> Section:
    return Section(html=pictures_section(i.sweep_dir, i.runs))  # "" when no run has current pictures


SECTIONS: tuple[ReportSection, ...] = (
    ReportSection("figures", _figures, FIGURE_CAPTIONS),
    ReportSection("results", _results, files=frozenset({"results.csv", PAIRED_CSV})),
    ReportSection("convergence", _convergence),
    ReportSection("frontier", _frontier, FRONTIER_CAPTIONS),
    ReportSection(
        "constrained", _constrained, CONSTRAINED_CAPTIONS, frozenset(CONSTRAINED_FILES) - set(CONSTRAINED_CAPTIONS)
    ),
    ReportSection("runs", _runs),
    ReportSection("pictures", _pictures),
)
"""The report's sections in page order (the claims, flags, notes, provenance and settings frame them)."""
