"""Figures and tables of a λ sweep from its result files alone (no model is loaded, nothing is recomputed).

Every directory under ``sweep_dir`` with a ``config.toml`` is a run; the report reads its ``metrics.jsonl``,
``eval.json`` (per split: ELBO, AIS, gap as ``{"mean", "se"}``) and ``ssl.json`` (:func:`smvi.ssl.ssl_run`). A run
missing a file or key is left out of what needs it, with a note. Per λ: the mean over training seeds of each run's
mean, with SE = std/√n over runs if n ≥ 2, else the run's own SE (``se_over`` says which). The raw-pixel baseline
does not depend on the model, so identical results from several runs count once (SE over label subsets).

Writes atomically to ``out_dir`` (default ``sweep_dir/report``): ``fig1_gap.png``, ``fig2_ssl.png``, ``results.csv``
(every plotted number with its SE), ``results.md`` and a self-contained ``report.html`` (PNGs inlined as base64).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .checkpoint import atomic_write_bytes, atomic_write_text

__all__ = ["ReportError", "make_report", "collect_runs", "aggregate", "Run", "Row"]

SPLITS, EVAL_METRICS = ("test", "train"), ("gap", "ais", "elbo")
LABELS = {"gap": "ELBO gap", "ais": "log p(x) (AIS)", "elbo": "ELBO"}
COLORS = {"test": "C0", "train": "C1"}
IGNORED_KEYS = {"train.lam", "train.seed", "train.device", "data.data_dir"}  # may differ between runs of one sweep
REFERENCES = (
    "Kingma et al. 2014, M1 + transductive SVM: test accuracy 94.28 % (600 labels), 95.76 % (1000), 96.51 % (3000); "
    "an inductive SVM here, so close but not identical.",
    "Burda et al. 2016, VAE (50 latents, 2×200 tanh, dynamic binarization): test log p(x) ≈ −86.76 nats.",
    "Cremer et al. 2018, factorized Gaussian q, static binarization: inference gap ≈ 2.77 nats (order of magnitude).",
)


class ReportError(RuntimeError):
    """Nothing to report (no sweep, no runs, no results); one-line message."""


@dataclass(frozen=True)
class Run:
    name: str
    lam: float
    seed: int
    epochs: int | None
    planned: int | None
    config: dict[str, Any]
    eval: dict | None
    ssl: dict | None


@dataclass(frozen=True)
class Row:
    """One plotted number: ``quantity`` ∈ gap, ais, elbo, ssl_accuracy, ssl_raw_accuracy (``lam`` None)."""

    quantity: str
    split: str
    s: int | None
    lam: float | None
    mean: float
    se: float | None
    n_runs: int
    se_over: str
    unit: str
    values: tuple[float, ...] = ()  # per-run means, for the scatter


# ---- reading --------------------------------------------------------------------------------------------------------
def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _json(path: Path, notes: list[str], name: str) -> dict | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        notes.append(f"{name}: unreadable {path.name} ({e}); ignored")
        return None
    return obj if isinstance(obj, dict) else None


def _epochs(path: Path) -> int | None:
    """The last epoch in ``metrics.jsonl``; None if there is none."""
    epoch, lines = None, path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            epoch = int(json.loads(line)["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            break  # a torn last line
    return epoch


def collect_runs(sweep_dir: str | Path) -> tuple[list[Run], list[str]]:
    """Every run under ``sweep_dir`` (sorted by λ, seed) and notes on what is missing or inconsistent."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise ReportError(f"sweep directory {sweep} does not exist")
    runs, notes = [], []
    for cfg_path in sorted(sweep.rglob("config.toml")):
        d, name = cfg_path.parent, str(cfg_path.parent.relative_to(sweep)) or "."
        if any(p.startswith(".") for p in cfg_path.relative_to(sweep).parts):
            continue
        try:
            cfg = tomllib.loads(cfg_path.read_text())
            lam, seed = float(_get(cfg, "train", "lam") or 0.0), int(_get(cfg, "train", "seed") or 0)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError, ValueError) as e:
            notes.append(f"{name}: unreadable config.toml ({e}); run skipped")
            continue
        epochs, planned = _epochs(d / "metrics.jsonl"), _get(cfg, "train", "epochs")
        if epochs is None:
            notes.append(f"{name}: no metrics.jsonl (not trained yet?)")
        elif planned and epochs < planned:
            notes.append(f"{name}: unfinished, {epochs} of {planned} epochs")
        run = Run(name, lam, seed, epochs, planned, _flat(cfg), _json(d / "eval.json", notes, name),
                  _json(d / "ssl.json", notes, name))
        for what, obj in (("eval.json", run.eval), ("ssl.json", run.ssl)):
            if obj is None:
                notes.append(f"{name}: no {what}; left out of Figure {1 if what == 'eval.json' else 2}")
        runs.append(run)
    if not runs:
        raise ReportError(f"no runs under {sweep}: no config.toml found; train some runs into it first")
    if not any(r.eval or r.ssl for r in runs):
        raise ReportError(f"none of the {len(runs)} runs under {sweep} has eval.json or ssl.json: evaluate them first")
    for job in _get(_json(sweep / "sweep_status.json", notes, "sweep"), "runs") or []:
        if isinstance(job, dict) and job.get("status") not in (None, "ok"):
            notes.append(f"sweep_status.json: {job.get('name')} {job.get('status')} ({job.get('error', '?')})")
    keys = set().union(*(r.config for r in runs)) - IGNORED_KEYS
    for key in sorted(keys):
        vals = {json.dumps(r.config.get(key)) for r in runs}
        if len(vals) > 1:
            notes.append(f"runs differ in {key} ({', '.join(sorted(vals))}): aggregates mix them")
    return sorted(runs, key=lambda r: (r.lam, r.seed, r.name)), notes


# ---- aggregating ----------------------------------------------------------------------------------------------------
def _get(tree: Any, *keys: str) -> Any:
    for k in keys:
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _row(quantity, split, s, lam, per_run: list[tuple[float, float | None]], within: str, unit: str) -> Row:
    means = [m for m, _ in per_run]
    if len(means) >= 2:
        se, over = float(np.std(means, ddof=1) / math.sqrt(len(means))), "training seeds"
    else:
        se, over = per_run[0][1], within
    return Row(quantity, split, s, lam, float(np.mean(means)), se, len(means), over, unit, tuple(means))


def _se_pct(values) -> float | None:
    """100 × the SE of the mean of ``values`` (fractions), over label subsets; None for one value."""
    return float(100 * np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None


def _accuracies(ssl: dict | None, kind: str, s: int) -> tuple[float, ...]:
    acc = _get(ssl, kind, "sizes", str(s), "accuracy")
    return tuple(float(a) for a in acc if _num(a) is not None) if isinstance(acc, list) else ()


def aggregate(runs: list[Run]) -> tuple[list[Row], list[str]]:
    """The rows of ``results.csv`` (see the module docstring) and notes on missing keys."""
    rows, notes, lams = [], [], sorted({r.lam for r in runs})
    for split, q, lam in itertools.product(SPLITS, EVAL_METRICS, lams):
        got = []
        for r in (r for r in runs if r.lam == lam and r.eval):
            m = _num(_get(r.eval, "splits", split, q, "mean"))
            if m is None:
                notes.append(f"{r.name}: eval.json has no {split} {q}")
            else:
                got.append((m, _num(_get(r.eval, "splits", split, q, "se"))))
        if got:
            rows.append(_row(q, split, None, lam, got, "data points", "nats"))
    sizes = sorted({int(s) for r in runs for s in (_get(r.ssl, "features", "sizes") or {}) if str(s).isdigit()})
    for s in sizes:
        for lam in lams:
            got = [(100 * float(np.mean(a)), _se_pct(a)) for r in runs if r.lam == lam
                   if (a := _accuracies(r.ssl, "features", s))]
            if got:
                rows.append(_row("ssl_accuracy", "test", s, lam, got, "label subsets", "percent"))
        raw = {_accuracies(r.ssl, "raw_pixels", s) for r in runs} - {()}
        if len(raw) > 1:
            notes.append(f"raw-pixel baselines for s={s} differ between runs (other ssl settings?); pooled")
        if raw:
            rows.append(_row("ssl_raw_accuracy", "test", s, None,
                             [(100 * float(np.mean(a)), _se_pct(a)) for a in sorted(raw)], "label subsets", "percent"))
    return rows, notes


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
    a.set(title="(a) ELBO gap = log p(x) − ELBO", ylabel="nats per image")
    b.set(title="(b) log-likelihood", ylabel="nats per image")
    for ax in (a, b):
        _lam_axis(ax, lams)
        ax.legend(fontsize=8)
    return _png(fig)


def _figure_ssl(rows: list[Row], lams: list[float]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="tight")
    ax = fig.subplots()
    sizes = sorted({r.s for r in rows if r.s is not None})
    for i, s in enumerate(sizes):
        color = f"C{i}"
        _series(ax, [r for r in rows if r.quantity == "ssl_accuracy" and r.s == s], color, f"s = {s}: encoder μ")
        for r in (r for r in rows if r.quantity == "ssl_raw_accuracy" and r.s == s):
            ax.axhline(r.mean, color=color, ls=":", lw=1.2, label=f"s = {s}: raw pixels")
            if r.se:
                ax.axhspan(r.mean - r.se, r.mean + r.se, color=color, alpha=0.12, lw=0)
    ax.set(title="Semi-supervised SVM test accuracy", ylabel="test accuracy (%)")
    _lam_axis(ax, lams)
    handles = dict(zip(*ax.get_legend_handles_labels()[::-1]))  # label -> handle; list each s's pair together
    order = [k for s in sizes for k in (f"s = {s}: encoder μ", f"s = {s}: raw pixels") if k in handles]
    ax.legend([handles[k] for k in order], order, fontsize=8, ncol=len(sizes), loc="best")
    return _png(fig)


# ---- tables and pages -----------------------------------------------------------------------------------------------
def _cell(r: Row | None) -> str:
    """``mean ± SE``; † marks an SE from within one run (see SE_NOTE)."""
    if r is None:
        return "—"
    if r.se is None:
        return f"{r.mean:.2f}"
    se = f"{r.se:.2f}" if r.se >= 0.005 else "<0.01"
    return f"{r.mean:.2f} ± {se}" + ("" if r.se_over == "training seeds" else " †")


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
    if any(r.quantity in EVAL_METRICS for r in rows):
        out.append(("Figure 1: ELBO gap and log-likelihood (nats, mean ± SE)",
                    ["λ", "runs"] + [f"{LABELS[q]}, {sp}" for q, sp, _ in keys], _table_rows(find, keys, lams)))
    sizes = sorted({r.s for r in rows if r.s is not None})
    if sizes:
        body = _table_rows(find, [("ssl_accuracy", "test", s) for s in sizes], lams)
        body.append(["raw pixels", "—"] + [_cell(find.get(("ssl_raw_accuracy", "test", s, None))) for s in sizes])
        out.append(("Figure 2: SSL test accuracy (%, mean ± SE)", ["λ", "runs"] + [f"s = {s}" for s in sizes], body))
    return out


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
                    "(dashed) against λ, on train and test images; mean ± SE over training seeds, dots are runs.",
    "fig2_ssl.png": "Figure 2: test accuracy of an RBF SVM on encoder means from s labeled examples against λ; "
                    "dotted lines and bands: the same SVM protocol on raw pixels (mean ± SE over label subsets).",
}
SE_NOTE = ("SE: over training seeds when a λ has ≥ 2 runs; † marks a λ with one run, whose own SE is shown (over "
           "test points for eval, over label subsets for SSL and the raw-pixel baseline); see se_over in results.csv.")


def _settings(runs: list[Run]) -> dict[str, Any]:
    common = {k: v for k, v in runs[0].config.items() if all(r.config.get(k) == v for r in runs)}
    first = lambda f: next((f(r) for r in runs if f(r)), None)  # noqa: E731
    return {"runs": len(runs), "lambdas": sorted({r.lam for r in runs}), "seeds": sorted({r.seed for r in runs}),
            "common config": common, "eval settings (first run)": first(lambda r: _get(r.eval, "settings")),
            "ssl settings (first run)": first(lambda r: _get(r.ssl, "settings"))}


def _run_table(runs: list[Run]) -> tuple[str, list[str], list[list[str]]]:
    yes = lambda x: "yes" if x else "missing"  # noqa: E731
    body = [[r.name, _fmt_lam(r.lam), str(r.seed), f"{r.epochs}/{r.planned}", yes(r.eval), yes(r.ssl)] for r in runs]
    return "Runs", ["run", "λ", "seed", "epochs", "eval.json", "ssl.json"], body


def _markdown(tables, notes: list[str], settings: dict, figures: list[str]) -> str:
    parts = ["# SMVI sweep report\n"] + [f"![{f}]({f})\n\n{CAPTIONS[f]}\n" for f in figures]
    for title, head, body in tables:
        parts.append(f"## {title}\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
                     + "".join("| " + " | ".join(row) + " |\n" for row in body))
    parts.append(SE_NOTE + "\n\n## Reference points (other settings)\n\n" + "".join(f"- {x}\n" for x in REFERENCES))
    parts.append("\n## Notes\n\n" + ("".join(f"- {n}\n" for n in notes) or "none\n"))
    parts.append("\n## Settings\n\n```json\n" + json.dumps(settings, indent=2, ensure_ascii=False) + "\n```\n")
    return "\n".join(parts)


def _html(tables, notes: list[str], settings: dict, pngs: dict[str, bytes]) -> str:
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
            f"</head><body><h1>SMVI sweep report</h1>{imgs}{tabs}<p>{e(SE_NOTE)}</p>"
            f"<h2>Reference points (other settings)</h2>{lis(REFERENCES)}<h2>Notes</h2>{lis(notes or ['none'])}"
            f"<h2>Settings</h2><pre>{e(json.dumps(settings, indent=2, ensure_ascii=False))}</pre></body></html>\n")


def make_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the figures, tables and page of the sweep in ``sweep_dir`` (see the module docstring); returns the path
    of ``report.html``. Raises :class:`ReportError` when there is no run or no result to report."""
    runs, notes = collect_runs(sweep_dir)
    rows, more = aggregate(runs)
    notes += more
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the report directory {out} ({e.strerror}); choose another one") from None
    lams = sorted({r.lam for r in rows if r.lam is not None})
    pngs = {}
    if any(r.quantity in EVAL_METRICS for r in rows):
        pngs["fig1_gap.png"] = _figure_gap(rows, lams)
    if any(r.quantity == "ssl_accuracy" for r in rows):
        pngs["fig2_ssl.png"] = _figure_ssl(rows, lams)
    tables = _tables(rows, lams) + [_run_table(runs)]
    settings = _settings(runs)
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "results.csv", _csv(rows))
    atomic_write_text(out / "results.md", _markdown(tables, notes, settings, list(pngs)))
    atomic_write_text(out / "report.html", _html(tables, notes, settings, pngs))
    return out / "report.html"
