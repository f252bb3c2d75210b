"""Reading the result files of a λ sweep and aggregating them per λ: the numbers behind :mod:`smvi.report`.

Every directory under ``sweep_dir`` with a ``config.toml`` is a run; :func:`collect_runs` reads its ``metrics.jsonl``,
``eval.json`` (per split: ELBO, AIS, gap as ``{"mean", "se"}``), ``ssl.json`` (:func:`smvi.ssl.ssl_run`) and
``convergence.json`` (:func:`smvi.convergence.check_convergence`). A run missing a file or key is left out of what
needs it, with a note. :func:`aggregate`, per λ: the mean over training seeds of each run's mean, with SE = std/√n
over runs if n ≥ 2, else the run's own SE (``se_over`` says which). The raw-pixel baseline does not depend on the
model, so identical results from several runs count once (SE over label subsets). ``ssl_gain`` rows: each λ's SSL
accuracy minus λ = 0's, paired by training seed and label subset (the same labeled examples and test set), mean ± SE
over those pairs: accuracies differ far more between label subsets than between nearby λ, so the pairing is what makes
small differences readable.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ReportError", "collect_runs", "aggregate", "Run", "Row", "SPLITS", "EVAL_METRICS"]

SPLITS, EVAL_METRICS = ("test", "train"), ("gap", "ais", "elbo")
IGNORED_KEYS = {"train.lam", "train.seed", "train.device", "data.data_dir"}  # may differ between runs of one sweep


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
    convergence: dict | None = None


@dataclass(frozen=True)
class Row:
    """One number of the report: ``quantity`` ∈ gap, ais, elbo, ssl_accuracy, ssl_raw_accuracy (``lam`` None),
    ssl_gain (paired with λ = 0; ``n_runs`` counts run pairs and ``values`` holds each pair's mean difference)."""

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
    if not isinstance(obj, dict):
        notes.append(f"{name}: unreadable {path.name} (not a JSON object); ignored")
        return None
    return obj


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
                  _json(d / "ssl.json", notes, name), _json(d / "convergence.json", notes, name))
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


def _by_seed(ssl: dict | None, s: int) -> dict[Any, float]:
    """Label-subset seed → encoder-feature SSL accuracy at size ``s``, from one ``ssl.json``."""
    seeds, acc = _get(ssl, "features", "seeds"), _get(ssl, "features", "sizes", str(s), "accuracy")
    if not (isinstance(seeds, list) and isinstance(acc, list) and len(seeds) == len(acc)):
        return {}
    return {k: float(a) for k, a in zip(seeds, acc) if _num(a) is not None}


def _gain(runs: list[Run], s: int, lam: float) -> Row | None:
    """SSL accuracy at ``lam`` minus at λ = 0, in percentage points, paired (see the module docstring)."""
    diffs, per_pair = [], []
    for r in (r for r in runs if r.lam == lam):
        for r0 in (r0 for r0 in runs if r0.lam == 0 and r0.seed == r.seed):
            a, a0 = _by_seed(r.ssl, s), _by_seed(r0.ssl, s)
            if common := [100 * (a[k] - a0[k]) for k in set(a) & set(a0)]:
                diffs += common
                per_pair.append(float(np.mean(common)))
    if not diffs:
        return None
    se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None
    return Row("ssl_gain", "test", s, lam, float(np.mean(diffs)), se, len(per_pair), "label subsets, paired with λ = 0",
               "percentage points", tuple(per_pair))


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
            if lam != 0 and (gain := _gain(runs, s, lam)):
                rows.append(gain)
        raw = {_accuracies(r.ssl, "raw_pixels", s) for r in runs} - {()}
        if len(raw) > 1:
            notes.append(f"raw-pixel baselines for s={s} differ between runs (other ssl settings?); pooled")
        if raw:
            rows.append(_row("ssl_raw_accuracy", "test", s, None,
                             [(100 * float(np.mean(a)), _se_pct(a)) for a in sorted(raw)], "label subsets", "percent"))
    return rows, notes
