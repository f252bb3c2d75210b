"""Figures and tables of a λ sweep from its result files alone (no model is loaded, nothing is recomputed).

The runs and the numbers per λ come from :mod:`smvi.aggregate` (which files are read, how means and SEs are formed).
Writes ``out_dir`` (default ``sweep_dir/report``) as one atomic set -- built in a temporary directory that replaces
the old one, so a killed report never leaves a mix of new and old files: ``fig1_gap.png``, ``fig2_ssl.png``,
``results.csv`` (every plotted number with its SE), ``results.md`` and a self-contained ``report.html`` (PNGs inlined
as base64). Run names and notes are escaped in Markdown as in HTML. Only current records are reported (stale and
damaged ones are listed in the notes); nothing here imports torch. The page opens with one sentence per claim of the
paper (:mod:`smvi.claims`) and adds the paired comparisons with λ = 0 (:mod:`smvi.paired`, ``fig3_paired.png``). When
some runs have a ``convergence.json``, the tables add one on AIS convergence: per such run and number of AIS steps, the
BDMC gap on simulated data and the AIS ladder's log p(x) on test points (mean ± SE), and whether the ladder converged.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .aggregate import EVAL_METRICS, RECORD_LABEL, SPLITS, ReportError, Row, Run, _get, _num, aggregate, collect_runs
from .atomic import atomic_write_dir
from .claims import decide_claims
from .paired import figure_paired, paired_rows, paired_tables
from .constrained_report import CAPTIONS as CONSTRAINED_CAPTIONS, FILES as CONSTRAINED_FILES
from .constrained_report import constrained_section, lam_cell
from .frontier_report import FRONTIER_CAPTIONS, frontier_section
from .pictures_report import pictures_section

__all__ = ["ReportError", "make_report", "collect_runs", "aggregate", "Run", "Row"]

LABELS = {"gap": "ELBO gap", "ais": "log p(x) (AIS)", "elbo": "ELBO", "iwae_full": "log p(x) (IWAE, whole set)"}
COLORS = {"test": "C0", "train": "C1"}
REFERENCES = (
    "Kingma et al. 2014, M1 + transductive SVM: test accuracy 94.28 % (600 labels), 95.76 % (1000), 96.51 % (3000); "
    "an inductive SVM here, so close but not identical.",
    "Burda et al. 2016, VAE (50 latents, 2×200 tanh, dynamic binarization): test log p(x) ≈ −86.76 nats.",
    "Cremer et al. 2018, factorized Gaussian q, static binarization: inference gap ≈ 2.77 nats (order of magnitude).",
)


# ---- figures --------------------------------------------------------------------------------------------------------
def _fmt_lam(lam: float) -> str:
    return "0" if lam == 0 else f"{lam:g}"


def _lam_axis(ax, lams: list[float]) -> None:
    """Log-scale λ axis that still shows λ = 0: symlog, linear below the smallest |λ| > 0, ticks at the λ grid."""
    nonzero, label = [abs(x) for x in lams if x != 0], "λ, weight of $D_{SM}$"
    if nonzero and min(lams) > 0:
        ax.set_xscale("log")
    elif nonzero:
        t = min(nonzero)
        ax.set_xscale("symlog", linthresh=t, linscale=0.6)
        ax.axvspan(-t if min(lams) < 0 else 0, t, color="0.92", zorder=0, lw=0)  # the linear segment around 0
        label += " (shaded: linear scale around 0)"
    ax.set_xticks(lams, [_fmt_lam(x) for x in lams], rotation=45 if len(lams) > 6 else 0)
    from matplotlib.ticker import NullLocator  # matplotlib is imported only when a report is drawn

    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _series(ax, rows: list[Row], color: str, label: str, **style) -> None:
    """Means with SE error bars, and the per-run values as faint dots when there are several runs."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: r.lam)
    x, y = [r.lam for r in rows], [r.mean for r in rows]
    yerr = [r.se if r.se is not None else 0.0 for r in rows]
    ax.errorbar(x, y, yerr=yerr, color=color, label=label, capsize=3, marker="o", ms=4, **style)
    for r in rows:
        if r.n_runs > 1:
            ax.scatter([r.lam] * r.n_runs, r.values, color=color, s=8, alpha=0.35, lw=0)


def _png(fig: Figure) -> bytes:
    """PNG bytes rendered by Agg (a bare Figure: no pyplot state, the user's backend is left alone)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    return buf.getvalue()


def _figure_gap(rows: list[Row], lams: list[float]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="tight")
    a, b = fig.subplots(1, 2)
    for split in SPLITS:
        pick = lambda q: [r for r in rows if r.quantity == q and r.split == split]  # noqa: E731
        _series(a, pick("gap"), COLORS[split], split)
        _series(b, pick("ais"), COLORS[split], f"{split}: log p(x) (AIS)")
        _series(b, pick("elbo"), COLORS[split], f"{split}: ELBO", ls="--", alpha=0.6)
    _series(b, [r for r in rows if r.quantity == "iwae_full"], "C2", "whole test set: log p(x) (IWAE)", ls=":")
    a.set(title="(a) ELBO gap = log p(x) − ELBO", ylabel="nats per image")
    b.set(title="(b) log-likelihood", ylabel="nats per image")
    for ax in (a, b):
        _lam_axis(ax, lams)
        ax.legend(fontsize=8)
    return _png(fig)


def _figure_ssl(rows: list[Row], lams: list[float]) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    sizes = sorted({r.s for r in rows if r.s is not None})
    gains = [r for r in rows if r.quantity == "ssl_gain"]
    fig = Figure(figsize=(12.5, 4.5) if gains else (7, 4.5), layout="tight")
    ax, *rest = fig.subplots(1, 2 if gains else 1, squeeze=False)[0]
    for i, s in enumerate(sizes):
        color = f"C{i}"
        _series(ax, [r for r in rows if r.quantity == "ssl_accuracy" and r.s == s], color, f"s = {s}: encoder μ")
        for r in (r for r in rows if r.quantity == "ssl_raw_accuracy" and r.s == s):
            ax.axhline(r.mean, color=color, ls=":", lw=1.2, label=f"s = {s}: raw pixels")
            if r.se:
                ax.axhspan(r.mean - r.se, r.mean + r.se, color=color, alpha=0.12, lw=0)
    ax.set(title=f"{'(a) ' if gains else ''}Semi-supervised SVM test accuracy", ylabel="test accuracy (%)")
    _lam_axis(ax, lams)
    handles = dict(zip(*ax.get_legend_handles_labels()[::-1]))  # label -> handle; list each s's pair together
    order = [k for s in sizes for k in (f"s = {s}: encoder μ", f"s = {s}: raw pixels") if k in handles]
    ax.legend([handles[k] for k in order], order, fontsize=8, ncol=len(sizes), loc="best")
    for b in rest:  # small differences and a collapse on one axis: linear within ±1 point, logarithmic beyond
        for i, s in enumerate(sizes):
            _series(b, [r for r in gains if r.s == s], f"C{i}", f"s = {s}")
        b.axhline(0, color="0.3", lw=0.8)
        b.set_yscale("symlog", linthresh=1)
        low, high = b.get_ylim()
        low, high = min(1.5 * low, -1.5), max(1.5 * high, 1.5)  # room around the extremes and the zero line
        b.set_ylim(low, high)
        ticks = [t for t in (-100, -30, -10, -3, -1, -0.5, 0, 0.5, 1, 3, 10, 30, 100) if low <= t <= high]
        b.set_yticks(ticks, [f"{t:+g}" if t else "0" for t in ticks])
        b.yaxis.set_minor_locator(NullLocator())
        b.set(title="(b) accuracy minus λ = 0's, on the same label subsets", ylabel="percentage points")
        _lam_axis(b, lams)
        b.legend(fontsize=8)
    return _png(fig)


# ---- tables and pages -----------------------------------------------------------------------------------------------
def _pm(mean: float | None, se: float | None) -> str:
    """``mean ± SE`` to two decimals; — without a mean."""
    if mean is None:
        return "—"
    if se is None:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± " + (f"{se:.2f}" if se >= 0.005 else "<0.01")


def _cell(r: Row | None) -> str:
    """``mean ± SE``, with several runs ``(SE within runs)`` beside it; † marks an SE from within one run
    (see SE_NOTE)."""
    if r is None:
        return "—"
    within = "" if r.se_within is None else f" ({r.se_within:.2f})"
    return _pm(r.mean, r.se) + within + ("" if r.se is None or r.se_over == "training seeds" else " †")


def _table_rows(find: dict, keys: list[tuple], lams: list[float]) -> list[list[str]]:
    """One row per λ with a value: λ, the most runs behind a cell, the cells of ``keys`` (quantity, split, s)."""
    body = []
    for lam in lams:
        cells = [find.get(k + (lam,)) for k in keys]
        if any(cells):
            body.append([_fmt_lam(lam), str(max(c.n_runs for c in cells if c))] + [_cell(c) for c in cells])
    return body


def _tables(rows: list[Row], lams: list[float]) -> list[tuple[str, list[str], list[list[str]]]]:
    find = {(r.quantity, r.split, r.s, r.lam): r for r in rows}
    out = []
    keys = [(q, sp, None) for q in EVAL_METRICS for sp in SPLITS]
    keys += [("iwae_full", "test", None)] if any(r.quantity == "iwae_full" for r in rows) else []
    if any(r.quantity in EVAL_METRICS for r in rows):
        out.append(("Figure 1: ELBO gap and log-likelihood (nats, mean ± SE)",
                    ["λ", "runs"] + [f"{LABELS[q]}, {sp}" for q, sp, _ in keys], _table_rows(find, keys, lams)))
    sizes = sorted({r.s for r in rows if r.s is not None})
    if sizes:
        body = _table_rows(find, [("ssl_accuracy", "test", s) for s in sizes], lams)
        body.append(["raw pixels", "—"] + [_cell(find.get(("ssl_raw_accuracy", "test", s, None))) for s in sizes])
        out.append(("Figure 2: SSL test accuracy (%, mean ± SE)", ["λ", "runs"] + [f"s = {s}" for s in sizes], body))
        gains = _table_rows(find, [("ssl_gain", "test", s) for s in sizes], lams)
        if gains:
            out.append(("SSL accuracy minus λ = 0, paired over the same label subsets (percentage points, mean ± SE)",
                        ["λ", "runs"] + [f"s = {s}" for s in sizes], gains))
    return out


def _list(tree: Any, *keys: str) -> list:
    x = _get(tree, *keys)
    return x if isinstance(x, list) else []


def _convergence_cells(c: dict) -> tuple[dict[int, str], dict[int, str]]:
    """Of one ``convergence.json``: steps → BDMC ``gap ± SE``, and steps → AIS ladder ``log p(x) ± SE``."""
    bdmc = {e["steps"]: _pm(_num(e.get("gap")), _num(e.get("gap_se"))) for e in _list(c, "bdmc")
            if isinstance(e, dict) and isinstance(e.get("steps"), int)}
    ladder = zip(*(_list(c, "ladder", k) for k in ("steps", "means", "sems")))
    return bdmc, {s: _pm(_num(m), _num(se)) for s, m, se in ladder if isinstance(s, int)}


def _convergence_table(runs: list[Run]) -> tuple[list[tuple[str, list[str], list[list[str]]]], list[str]]:
    """The AIS convergence table, one row per run with a usable ``convergence.json`` (no table when no run has one),
    and notes on malformed files. Not in results.csv: its rows are per run and per number of AIS steps, for which the
    CSV's per-λ aggregates (quantity, split, s, lam) have no column."""
    found, notes = [], []
    for r in (r for r in runs if r.convergence is not None):
        bdmc, ladder = _convergence_cells(r.convergence)
        missing = [what for what, got in (("bdmc", bdmc), ("ladder", ladder)) if not got]
        if missing:
            notes.append(f"{r.name}: convergence.json has no {' and no '.join(missing)}"
                         + ("; ignored" if len(missing) == 2 else ""))
        if len(missing) < 2:
            found.append((r, bdmc, ladder))
    if not found:
        return [], notes
    steps = sorted(set().union(*(set(bdmc) | set(ladder) for _, bdmc, ladder in found)))
    head = (["λ", "run", "epoch", "points"]
            + [f"{what}, {s} steps" for s in steps for what in ("BDMC gap", "AIS ladder")] + ["ladder converged"])
    text = lambda x: "—" if x is None else str(x)  # noqa: E731
    yes = lambda x: "yes" if x is True else "no" if x is False else "—"  # noqa: E731
    body = [[_fmt_lam(r.lam), r.name, text(_get(r.convergence, "epoch")), text(_get(r.convergence, "n_points"))]
            + [cell for s in steps for cell in (bdmc.get(s, "—"), ladder.get(s, "—"))]
            + [yes(_get(r.convergence, "ladder", "converged"))] for r, bdmc, ladder in found]
    title = ("AIS convergence (nats, mean ± SE over points): BDMC gap, upper − lower bound on data simulated from "
             "the model; AIS ladder, log p(x) on test points")
    return [(title, head, body)], notes


def _csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["quantity", "split", "s", "lam", "mean", "se", "n_runs", "se_over", "unit"])
    for r in rows:
        w.writerow([r.quantity, r.split, "" if r.s is None else r.s, "" if r.lam is None else repr(r.lam),
                    repr(r.mean), "" if r.se is None else repr(r.se), r.n_runs, r.se_over, r.unit])
    return buf.getvalue()


CAPTIONS = {
    "fig1_gap.png": "Figure 1: (a) ELBO gap, AIS log p(x) − ELBO, and (b) log p(x) by AIS (solid) with the ELBO "
                    "(dashed) against λ, on train and test images (and, where computed, IWAE log p(x) on the whole "
                    "test set, dotted); mean ± SE over training seeds, dots are runs.",
    "fig2_ssl.png": "Figure 2: test accuracy of an RBF SVM on encoder means from s labeled examples against λ; "
                    "dotted lines and bands: the same SVM protocol on raw pixels (mean ± SE over label subsets). "
                    "(b), when the sweep has λ = 0: each λ's accuracy minus λ = 0's on the same label subsets "
                    "(mean ± SE over the pairs; y linear within ±1 point, logarithmic beyond).",
    "fig3_paired.png": "Figure 3: each λ minus λ = 0, paired on the same images, label subsets and training seeds, "
                       "with 95 % t intervals: (a) log p(x) (IWAE on the whole test set, AIS on the test subset) "
                       "and the test gap, (b) SSL accuracy.",
    **CONSTRAINED_CAPTIONS,
}
CAPTIONS.update(FRONTIER_CAPTIONS)  # fig4_frontier.png: smvi.frontier_report
SE_NOTE = ("SE: over training seeds when a λ has ≥ 2 runs, with in parentheses the SE from within the runs (over "
           "images or label subsets); † marks a λ with one run, whose own SE is shown (over "
           "test points for eval, over label subsets for SSL and the raw-pixel baseline); see se_over in results.csv.")


def _settings(runs: list[Run]) -> dict[str, Any]:
    common = {k: v for k, v in runs[0].config.items() if all(r.config.get(k) == v for r in runs)}
    first = lambda f: next((f(r) for r in runs if f(r)), None)  # noqa: E731
    out = {"runs": len(runs), "lambdas": sorted({r.lam for r in runs}), "seeds": sorted({r.seed for r in runs}),
           "common config": common, "eval settings (first run)": first(lambda r: _get(r.eval, "settings")),
           "ssl settings (first run)": first(lambda r: _get(r.ssl, "settings"))}
    if conv := first(lambda r: r.convergence and {k: r.convergence.get(k) for k in ("settings", "tol")}):
        out["convergence settings (first run)"] = conv
    return out


def _run_table(runs: list[Run]) -> tuple[str, list[str], list[list[str]]]:
    yes = lambda x: "yes" if x else "missing"  # noqa: E731
    body = [[r.name, lam_cell(r), str(r.seed), f"{r.epochs or 0}/{r.planned or '?'}", yes(r.eval), yes(r.ssl)]
            for r in runs]
    return "Runs", ["run", "λ", "seed", "epochs", RECORD_LABEL["eval"], RECORD_LABEL["ssl"]], body


_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what could open an HTML tag or comment ("<0.01" stays as it is)
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")  # what could read as an entity


def md_escape(text: str) -> str:
    """``text`` as literal Markdown inline text: HTML characters as entities, Markdown syntax backslash-escaped, line
    breaks as spaces (a run name cannot break a table, start a link or inject HTML)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    text = _MD_TAG.sub("&lt;", _MD_ENTITY.sub("&amp;", text))
    return _MD_SPECIAL.sub(r"\\\1", text)


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _markdown(tables, notes: list[str], settings: dict, figures: list[str], claims: list[str]) -> str:
    e = md_escape
    parts = ["# SMVI sweep report\n", "## Claims\n\n" + "".join(f"- {e(c)}\n" for c in claims)]
    parts += [f"![{f}]({f})\n\n{CAPTIONS[f]}\n" for f in figures]
    for title, head, body in tables:
        parts.append(f"## {title}\n\n| " + " | ".join(map(e, head)) + " |\n|" + "---|" * len(head) + "\n"
                     + "".join("| " + " | ".join(map(e, row)) + " |\n" for row in body))
    parts.append(SE_NOTE + "\n\n## Reference points (other settings)\n\n" + "".join(f"- {x}\n" for x in REFERENCES))
    parts.append("\n## Notes\n\n" + ("".join(f"- {e(n)}\n" for n in notes) or "none\n"))
    text = json.dumps(settings, indent=2, ensure_ascii=False)
    parts.append(f"\n## Settings\n\n{_fence(text)}json\n{text}\n{_fence(text)}\n")
    return "\n".join(parts)


def _html(tables, notes: list[str], settings: dict, pngs: dict[str, bytes], claims: list[str],
          pictures: str = "") -> str:
    e = html.escape
    imgs = "".join(f'<figure><img alt="{e(n)}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
                   f"<figcaption>{e(CAPTIONS[n])}</figcaption></figure>" for n, b in pngs.items())
    tabs = "".join(f"<h2>{e(t)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
                   + "</table>" for t, head, body in tables)
    lis = lambda xs: "<ul>" + "".join(f"<li>{e(x)}</li>" for x in xs) + "</ul>"  # noqa: E731
    style = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}img{max-width:100%}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SMVI sweep report</title><style>{style}</style>"
            f"</head><body><h1>SMVI sweep report</h1><h2>Claims</h2>{lis(claims)}{imgs}{tabs}<p>{e(SE_NOTE)}</p>"
            f"{pictures}"  # smvi.pictures_report: each run's samples, reconstructions and latent picture
            f"<h2>Reference points (other settings)</h2>{lis(REFERENCES)}<h2>Notes</h2>{lis(notes or ['none'])}"
            f"<h2>Settings</h2><pre>{e(json.dumps(settings, indent=2, ensure_ascii=False))}</pre></body></html>\n")


def make_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the figures, tables and page of the sweep in ``sweep_dir`` (see the module docstring); returns the path
    of ``report.html``. Raises :class:`ReportError` when there is no run or no result to report."""
    runs, notes = collect_runs(sweep_dir)
    rows, more = aggregate(runs)
    notes += more
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "report"
    if out.exists() and not (out.is_dir() and all(p.name in REPORT_FILES for p in out.iterdir())):
        raise ReportError(f"{out} holds other files than a report; choose a new or empty --out")
    lams = sorted({r.lam for r in rows if r.lam is not None})
    pngs = {}
    if any(r.quantity in EVAL_METRICS for r in rows):
        pngs["fig1_gap.png"] = _figure_gap(rows, lams)
    if any(r.quantity == "ssl_accuracy" for r in rows):
        pngs["fig2_ssl.png"] = _figure_ssl(rows, lams)
    paired = paired_rows(runs)
    if png := figure_paired(paired, lams):
        pngs["fig3_paired.png"] = png
    claims = [c.sentence for c in decide_claims(paired, rows)]
    convergence, more = _convergence_table(runs)
    constrained = constrained_section(runs, rows, sweep_dir)
    pngs.update(constrained.figures)
    notes += more + constrained.notes
    frontier_pngs, frontier_tables = frontier_section(runs)
    pngs.update(frontier_pngs)
    tables = (_tables(rows, lams) + paired_tables(paired, lams, any(r.eval for r in runs)) + convergence
              + frontier_tables + constrained.tables + [_run_table(runs)])
    settings = _settings(runs)
    pictures = pictures_section(sweep_dir, runs)  # "" when no run has current pictures
    files = {**pngs, **constrained.files, "results.csv": _csv(rows).encode(),
             "results.md": _markdown(tables, notes, settings, list(pngs), claims).encode(),
             "report.html": _html(tables, notes, settings, pngs, claims, pictures).encode()}
    try:
        atomic_write_dir(out, files)
    except OSError as e:
        raise ReportError(f"cannot write the report in {out} ({e.strerror or e}); the previous report is intact: "
                          "free space or fix permissions") from None
    return out / "report.html"


REPORT_FILES = ({"fig1_gap.png", "fig2_ssl.png", "fig3_paired.png", "results.csv", "results.md", "report.html"}
                | CONSTRAINED_FILES | set(FRONTIER_CAPTIONS))
