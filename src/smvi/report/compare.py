"""Two trained runs side by side, paired (torch-free; ``smvi compare A B``).

For each quantity both runs scored on the same items, the differences A − B item by item and
:func:`smvi.store.stats.paired_t` over them (mean ± SE, the 95 % t interval, the two-sided p):

- the eval records (``eval.json``), matched by image index: ELBO, AIS log p(x) and the ELBO gap on the test and
  training subsets, and IWAE log p(x) on the whole test set;
- the gap splits (``gaps.json``), matched by image index: the approximation and amortization gaps;
- the SSL records (``ssl.json``), matched by label subset: the encoder features' accuracy at each s, in percentage
  points.

Each run is one trained model, so an interval is over those images or label subsets: it says how sure the difference
between *these two models* is, not how a method would fare over training seeds (for that, compare sweeps of several
seeds: the report's paired tables take the seed as the unit). The records are read as the report reads them
(:func:`smvi.report.aggregate.collect_runs`: current ones only; a stale, edited or damaged record is left out with a
note).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smvi.report.aggregate import ReportError, Run, collect_runs, lookup, method_of, ssl_by_seed
from smvi.report.naming import RunNames
from smvi.report.paired import per_image
from smvi.store.stats import PairedDiff, paired_t

__all__ = ["Comparison", "load_run", "compare_runs", "compare_text", "compare_paths"]


@dataclass(frozen=True)
class Comparison:
    """A − B for one quantity over the ``diff.n`` items both runs scored (``unit``: nats or percentage points)."""

    quantity: str
    split: str
    unit: str
    diff: PairedDiff


def load_run(path: str | Path) -> tuple[Run, list[str]]:
    """The one run in the run directory ``path`` with the report's notes on its records (less those on the report's
    figures); a one-line :class:`~smvi.report.aggregate.ReportError` for a folder that is not a single run."""
    if not Path(path).is_dir():
        raise ReportError(f"run directory {path} does not exist")
    runs, notes = collect_runs(path)
    if len(runs) > 1:
        raise ReportError(f"{path} holds {len(runs)} runs, not one: name a run directory, e.g. {path}/runs/<run>")
    if runs[0].name != ".":
        raise ReportError(f"{path} is not a run directory: name the run in it, {Path(path) / runs[0].name}")
    return runs[0], [n.removeprefix(".: ") for n in notes if "left out of Figure" not in n]


def _gaps(quantity: str) -> Callable[[Run], dict[int, float]]:
    def values(run: Run) -> dict[int, float]:
        idx, vals = lookup(run.gaps, "indices"), lookup(run.gaps, "per_image", quantity)
        if not (isinstance(idx, list) and isinstance(vals, list) and len(idx) == len(vals)):
            return {}
        return {int(i): float(v) for i, v in zip(idx, vals, strict=True) if isinstance(v, (int, float))}

    return values


def _ssl(s: int) -> Callable[[Run], dict]:
    return lambda run: {k: 100 * v for k, v in ssl_by_seed(run.ssl, s).items()}


def _sizes(run: Run) -> set[int]:
    sizes = lookup(run.ssl, "features", "sizes")
    return {int(s) for s in sizes} if isinstance(sizes, dict) else set()


def _quantities(a: Run, b: Run) -> list[tuple[str, str, str, Callable[[Run], dict]]]:
    """(label, split, unit, item → value) of every quantity a comparison may have, in the order printed."""
    out: list[tuple[str, str, str, Callable[[Run], dict]]] = []
    for split in ("test", "train"):
        for q, label in (("ais", "log p(x), AIS"), ("gap", "ELBO gap"), ("elbo", "ELBO")):
            out.append((label, split, "nats", lambda r, q=q, split=split: per_image(r, q, split)))
    out.append(("log p(x), IWAE", "whole test set", "nats", lambda r: per_image(r, "iwae_full", "test")))
    for q in ("approximation", "amortization"):
        out.append((f"{q} gap", "gap split", "nats", _gaps(q)))
    for s in sorted(_sizes(a) & _sizes(b)):
        out.append((f"SSL accuracy, s = {s}", "label subsets", "points", _ssl(s)))
    return out


def compare_runs(a: Run, b: Run) -> list[Comparison]:
    """A − B, paired, for each quantity both runs scored on at least two common items (module docstring)."""
    out = []
    for label, split, unit, values in _quantities(a, b):
        va, vb = values(a), values(b)
        common = sorted(set(va) & set(vb), key=str)
        if len(common) >= 2 and (d := paired_t([va[k] - vb[k] for k in common], unit=split)) is not None:
            out.append(Comparison(label, split, unit, d))
    return out


def _describe(run: Run, names: RunNames) -> str:
    method = method_of(run.config)
    return f"{method[0] + ', ' if method else ''}{names.knob(run)}; seed {run.seed}; {run.epochs} epochs"


def _p(p: float | None) -> str:
    return "—" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def compare_text(paths: tuple[str | Path, str | Path], a: Run, b: Run, comparisons: list[Comparison]) -> str:
    """The comparison as ``smvi compare`` prints it: the two runs, then a row per quantity."""
    names = RunNames.of([a, b])
    head = ["quantity", "scored on", "n", "A − B", "95 % interval", "p"]
    rows = [head]
    for c in comparisons:
        d, unit = c.diff, "pp" if c.unit == "points" else "nats"
        interval = f"[{d.low:+.2f}, {d.high:+.2f}]" if d.low is not None and d.high is not None else "—"
        se = f" ± {d.se:.2f}" if d.se is not None else ""
        rows.append([c.quantity, c.split, str(d.n), f"{d.mean:+.2f}{se} {unit}", interval, _p(d.p)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(
        [
            f"A: {paths[0]} ({_describe(a, names)})",
            f"B: {paths[1]} ({_describe(b, names)})",
            "A − B, paired over the items both scored (mean ± SE, t interval). One trained model each: the intervals "
            "are over those images or label subsets, not over training seeds.",
            *table,
        ]
    )


def compare_paths(path_a: str | Path, path_b: str | Path) -> tuple[str, list[str]]:
    """``smvi compare``: the comparison of two run directories as text, and the notes on their records (each
    prefixed with its run's path); a one-line :class:`~smvi.report.aggregate.ReportError` when they share nothing."""
    (a, notes_a), (b, notes_b) = load_run(path_a), load_run(path_b)
    notes = [f"{path}: {n}" for path, ns in ((path_a, notes_a), (path_b, notes_b)) for n in ns]
    comparisons = compare_runs(a, b)
    if not comparisons:
        why = f" (left out: {notes[0]}{' …' if len(notes) > 1 else ''})" if notes else ""
        raise ReportError(
            f"{path_a} and {path_b} share no scored images or label subsets{why}: evaluate both on the same images "
            "(eval.n_test and data.eval_seed) or score both with smvi ssl"
        )
    return compare_text((path_a, path_b), a, b, comparisons), notes
