"""The report's tables (torch-free): per-λ results, AIS convergence, runs, provenance and settings, each as
``(title, header, rows)`` of strings, with the flags of :mod:`smvi.report.flags` marked in the cells they concern.

Where each marker goes: the λ cell of a per-λ row carries ⚠C when a run at that λ collapsed (and so does the KL or
active-units cell that shows it), the ``runs`` cell ⚠U when one is unfinished, an AIS / gap / ELBO cell ⚠A when its
split's AIS acceptance is off target; in the runs table
the epochs, KL, active-unit and acceptance cells carry their own flags; in the convergence table the BDMC cell at the
largest number of steps carries ⚠B and the ``ladder converged`` cell ⚠L.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from smvi.report.aggregate import (
    EVAL_METRICS,
    RECORD_LABEL,
    SPLITS,
    Row,
    Run,
    is_constrained,
    last_diagnostics,
    lookup,
    number,
)
from smvi.report.flags import CLAIM_BLOCKING, Flag, mark
from smvi.report.naming import NumberFormat, RunNames
from smvi.store.provenance import provenance_rows

__all__ = [
    "Table",
    "result_tables",
    "convergence_table",
    "run_table",
    "provenance_table",
    "settings_tables",
    "results_csv",
    "SE_NOTE",
    "pm",
]

Table = tuple[str, list[str], list[list[str]]]
LABELS = {
    "gap": "ELBO gap",
    "ais": "log p(x) (AIS)",
    "elbo": "ELBO",
    "iwae_full": "log p(x) (IWAE, whole set)",
    "kl": "KL(q ‖ p(z))",
    "active_units": "active units",
}
METHOD_KNOB = "method and knob"  # the column naming a run's method and knob (smvi.report.naming.RunNames)
SE_NOTE = (
    "SE: over training seeds when a cell has ≥ 2 runs (for an SSL gain: ≥ 2 training seeds paired with "
    "λ = 0), with in parentheses the SE from within the runs (over images or label subsets; for a gain, over "
    "all seed × subset pairs pooled); † marks a cell from one run (or one pair of runs), whose SE is from "
    "within it: over test points for eval, over label subsets for SSL, its gains and the raw-pixel baseline; "
    "see se_over in results.csv."
)


def pm(mean: float | None, se: float | None) -> str:
    """``mean ± SE`` to two decimals; — without a mean."""
    if mean is None:
        return "—"
    if se is None:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± " + (f"{se:.2f}" if se >= 0.005 else "<0.01")


def _cell(r: Row | None, flags: str = "") -> str:
    """``mean ± SE``, with several runs ``(SE within runs)`` beside it; † marks an SE from within one run
    (see SE_NOTE); ``flags``: markers to append."""
    if r is None:
        return "—"
    if r.quantity in ("kl", "active_units"):  # one value per run: the mean, with its SE over seeds if any
        text = f"{r.mean:.3g}" + ("" if r.se is None else f" ± {format(r.se, '.2g')}")
        return text + flags
    within = "" if r.se_within is None else f" ({r.se_within:.2f})"
    return pm(r.mean, r.se) + within + ("" if r.se is None or r.se_over == "training seeds" else " †") + flags


def _table_rows(
    find: dict, keys: list[tuple], lams: list[float], flags: list[Flag], fmt: NumberFormat
) -> list[list[str]]:
    """One row per λ with a value: λ (written by ``fmt``), the most runs behind a cell, the cells of ``keys``
    (quantity, split, s), each with its flags (module docstring); a cell from fewer runs than that says how many."""
    body = []
    for lam in lams:
        cells = [find.get(k + (lam,)) for k in keys]
        if not any(cells):
            continue
        n = max(c.n_runs for c in cells if c)
        row = [
            fmt(lam) + mark(flags, lam=lam, kinds=["collapse"]),
            str(n) + mark(flags, lam=lam, kinds=["unfinished"]),
        ]
        for (q, split, _), c in zip(keys, cells, strict=True):
            fields = [f"ais_acceptance.{split}"] if q in EVAL_METRICS else [q] if q in ("kl", "active_units") else []
            fewer = f" ({c.n_runs} of {n} runs)" if c and c.n_runs < n else ""  # e.g. KL not logged by older runs
            row.append(_cell(c, fewer + (mark(flags, lam=lam, fields=fields) if fields and c else "")))
        body.append(row)
    return body


def result_tables(
    rows: list[Row], lams: list[float], flags: list[Flag], fmt: NumberFormat | None = None
) -> list[Table]:
    """The per-λ tables: Figure 1's numbers with the last epoch's KL and active units, Figure 2's SSL accuracies and
    the paired SSL gains; λ written by ``fmt`` (the report's, :mod:`smvi.report.naming`; else one separating
    ``lams``)."""
    find = {(r.quantity, r.split, r.s, r.lam): r for r in rows}
    fmt = fmt or NumberFormat.separating(lams)
    out = []
    keys = [(q, sp, None) for q in EVAL_METRICS for sp in SPLITS]
    keys += [("iwae_full", "test", None)] if any(r.quantity == "iwae_full" for r in rows) else []
    diag = [
        k
        for k in (("kl", "test", None), ("kl", "train", None), ("active_units", "test", None))
        if any((r.quantity, r.split) == k[:2] for r in rows)
    ]
    if any(r.quantity in EVAL_METRICS for r in rows):
        head = ["λ", "runs"] + [f"{LABELS[q]}, {sp}" for q, sp, _ in keys]
        head += [
            f"{LABELS[q]}, {'monitor set' if sp == 'test' else 'training mean'}, last epoch"
            if q == "kl"
            else f"{LABELS[q]}, last epoch"
            for q, sp, _ in diag
        ]
        out.append(
            (
                "Figure 1: ELBO gap and log-likelihood (nats, mean ± SE), with the last epoch's KL and active units",
                head,
                _table_rows(find, keys + diag, lams, flags, fmt),
            )
        )
    sizes = sorted({r.s for r in rows if r.s is not None})
    if sizes:
        body = _table_rows(find, [("ssl_accuracy", "test", s) for s in sizes], lams, flags, fmt)
        body.append(["raw pixels", "—"] + [_cell(find.get(("ssl_raw_accuracy", "test", s, None))) for s in sizes])
        out.append(("Figure 2: SSL test accuracy (%, mean ± SE)", ["λ", "runs"] + [f"s = {s}" for s in sizes], body))
        gains = _table_rows(find, [("ssl_gain", "test", s) for s in sizes], lams, flags, fmt)
        if gains:
            out.append(
                (
                    "SSL accuracy minus λ = 0, paired over the same label subsets (percentage points, "
                    "mean ± SE over "
                    "training seeds, the claims' unit)",
                    ["λ", "runs"] + [f"s = {s}" for s in sizes],
                    gains,
                )
            )
    return out


# ---- per run --------------------------------------------------------------------------------------------------------
def _list(tree: Any, *keys: str) -> list:
    x = lookup(tree, *keys)
    return x if isinstance(x, list) else []


def _convergence_cells(c: dict) -> tuple[dict[int, str], dict[int, str]]:
    """Of one ``convergence.json``: steps → BDMC ``gap ± SE``, and steps → AIS ladder ``log p(x) ± SE``."""
    bdmc = {
        e["steps"]: pm(number(e.get("gap")), number(e.get("gap_se")))
        for e in _list(c, "bdmc")
        if isinstance(e, dict) and isinstance(e.get("steps"), int)
    }
    # not strict: a damaged record's lists of unequal length are cut to the shortest, as before
    ladder = zip(*(_list(c, "ladder", k) for k in ("steps", "means", "sems")), strict=False)
    return bdmc, {s: pm(number(m), number(se)) for s, m, se in ladder if isinstance(s, int)}


def convergence_table(runs: list[Run], flags: list[Flag]) -> tuple[list[Table], list[str]]:
    """The AIS convergence table, one row per run with a usable ``convergence.json`` (no table when no run has one),
    and notes on malformed files. Not in results.csv: its rows are per run and per number of AIS steps, for which the
    CSV's per-λ aggregates (quantity, split, s, lam) have no column."""
    found, notes = [], []
    for r in runs:
        if r.convergence is None:
            continue
        bdmc, ladder = _convergence_cells(r.convergence)
        missing = [what for what, got in (("bdmc", bdmc), ("ladder", ladder)) if not got]
        if missing:
            notes.append(
                f"{r.name}: convergence.json has no {' and no '.join(missing)}"
                + ("; ignored" if len(missing) == 2 else "")
            )
        if len(missing) < 2:
            if bdmc:
                top = max(bdmc)
                bdmc[top] += mark(flags, run=r.name, kinds=["bdmc"])
            found.append((r, bdmc, ladder))
    if not found:
        return [], notes
    steps = sorted(set().union(*(set(bdmc) | set(ladder) for _, bdmc, ladder in found)))
    names = RunNames.of(runs)
    head = (
        [METHOD_KNOB, "run", "epoch", "points"]
        + [f"{what}, {s} steps" for s in steps for what in ("BDMC gap", "AIS ladder")]
        + ["ladder converged"]
    )
    text = lambda x: "—" if x is None else str(x)  # noqa: E731
    yes = lambda x: "yes" if x is True else "no" if x is False else "—"  # noqa: E731
    body = [
        [names.of_run(r), r.name, text(lookup(r.convergence, "epoch")), text(lookup(r.convergence, "n_points"))]
        + [cell for s in steps for cell in (bdmc.get(s, "—"), ladder.get(s, "—"))]
        + [yes(lookup(r.convergence, "ladder", "converged")) + mark(flags, run=r.name, kinds=["ladder"])]
        for r, bdmc, ladder in found
    ]
    title = (
        "AIS convergence (nats, mean ± SE over points): BDMC gap, upper − lower bound on data simulated from "
        "the model; AIS ladder, log p(x) on test points"
    )
    return [(title, head, body)], notes


def run_table(runs: list[Run], flags: list[Flag]) -> Table:
    """One row per run: its method and knob (:class:`smvi.report.naming.RunNames`: ``λ = 0.1``, ``β-VAE, β = 2``,
    ``learned λ, D_SM ≤ 300``), seed, epochs done of planned, the last epoch's KL and active units, the AIS acceptance
    of its evaluation, and which records it has."""
    yes = lambda x: "yes" if x else "missing"  # noqa: E731
    names = RunNames.of(runs)
    body = []
    for r in runs:
        diag = last_diagnostics(r)
        kl = diag.get(("kl", "test"), diag.get(("kl", "train")))
        units = diag.get(("active_units", "test"))
        acc = [number(lookup(r.eval, "splits", sp, "ais_acceptance")) for sp in ("test", "train")]
        body.append(
            [
                r.name,
                names.of_run(r),
                str(r.seed),
                f"{r.epochs or 0}/{r.planned or '?'}" + mark(flags, run=r.name, kinds=["unfinished"]),
                ("—" if kl is None else f"{kl:.3g}") + mark(flags, run=r.name, fields=["kl"]),
                ("—" if units is None else f"{units:g}") + mark(flags, run=r.name, fields=["active_units"]),
                " / ".join("—" if a is None else f"{a:.2f}" for a in acc)
                + mark(flags, run=r.name, kinds=["acceptance"]),
                yes(r.eval),
                yes(r.ssl),
            ]
        )
    head = [
        "run",
        METHOD_KNOB,
        "seed",
        "epochs",
        "KL, last epoch (nats)",
        "active units",
        "AIS acceptance, test / train",
        RECORD_LABEL["eval"],
        RECORD_LABEL["ssl"],
    ]
    return "Runs", head, body


def provenance_table(runs: list[Run]) -> Table:
    """Wall time per stage, versions and machine per run (:func:`smvi.store.provenance.provenance_rows`)."""
    head, body = provenance_rows(runs)
    return (
        "Provenance: wall time per stage (training: the sum of its epochs; a stage: its record's seconds), "
        "versions and machine per run",
        head,
        body,
    )


# ---- settings -------------------------------------------------------------------------------------------------------
def _value(v: Any) -> str:
    """A setting as plain text: lists comma-separated, numbers as written, null as —."""
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) if v else "(none)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(tree, dict):
        return [(prefix or "(value)", tree)]
    out = []
    for k, v in tree.items():
        out += _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [(f"{prefix}{k}", v)]
    return [(k.rstrip("."), v) for k, v in out]


def settings_tables(runs: list[Run]) -> list[Table]:
    """The sweep's settings as key/value tables: the grid, the config every run shares, and the evaluation, SSL and
    convergence settings of the first run that has each record. With learned-λ runs, ``train.lam`` (unused by them)
    is not listed as shared, and the λ row lists only fixed λ (none: no row)."""
    learned = sum(is_constrained(r) for r in runs)
    common = {
        k: v
        for k, v in runs[0].config.items()
        if all(r.config.get(k) == v for r in runs) and not (learned and k == "train.lam")
    }  # a learned λ starts at train.constraint.lam_init instead
    first = lambda f: next((f(r) for r in runs if f(r)), None)  # noqa: E731
    fixed = sorted({r.lam for r in runs if not is_constrained(r)})
    fmt = RunNames.of(runs).fmt
    grid = {
        "runs": len(runs),
        **({"λ": [fmt(lam) for lam in fixed]} if fixed else {}),
        "learned-λ runs": learned,
        "training seeds": sorted({r.seed for r in runs}),
    }
    groups = [
        ("Sweep", grid),
        ("Run config shared by every run", common),
        ("Evaluation (first run with an eval.json)", first(lambda r: lookup(r.eval, "settings"))),
        ("SSL (first run with an ssl.json)", first(lambda r: lookup(r.ssl, "settings"))),
        ("AIS convergence (first run with a convergence.json)", first(lambda r: lookup(r.convergence, "settings"))),
    ]
    return [
        (title, ["setting", "value"], [[k, _value(v)] for k, v in _flatten(tree)]) for title, tree in groups if tree
    ]


def results_csv(rows: list[Row], flags: Sequence[Flag] = ()) -> str:
    """``results.csv``: one line per :class:`~smvi.report.aggregate.Row`; ``flags``: the markers of the flags that keep
    the row's λ out of the claims (:data:`smvi.report.flags.CLAIM_BLOCKING`: ⚠C collapse, ⚠U unfinished), "" when
    none."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["quantity", "split", "s", "lam", "mean", "se", "n_runs", "se_over", "unit", "flags"])
    for r in rows:
        marks = "" if r.lam is None else mark(flags, lam=r.lam, kinds=CLAIM_BLOCKING).strip()
        w.writerow(
            [
                r.quantity,
                r.split,
                "" if r.s is None else r.s,
                "" if r.lam is None else repr(r.lam),
                repr(r.mean),
                "" if r.se is None else repr(r.se),
                r.n_runs,
                r.se_over,
                r.unit,
                marks,
            ]
        )
    return buf.getvalue()
