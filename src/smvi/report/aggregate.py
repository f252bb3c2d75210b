"""Reading the result records of a λ sweep and aggregating them per λ: the numbers behind :mod:`smvi.report.page`.

Every directory under ``sweep_dir`` with a config is a run; :func:`collect_runs` reads it through the run-directory
layer (:mod:`smvi.store.rundir`): its config (a damaged one skips the run, with a note), its epochs, its
``metrics.jsonl`` lines up to them (an unreadable file is a note: no curves, KL or active units for that run), and its
eval, ssl, convergence and gaps records (:mod:`smvi.store.records`). A damaged record, or a stale one (another run's
fingerprint, another epoch), is left out with a note saying which and why; a run whose identity repeats another's (a
copied directory) is counted once. A subdirectory holding its own ``sweep.toml`` is another sweep (``results/paper``
inside ``results``) and is left to its own report. :func:`aggregate`, per λ: the mean over training seeds of each run's
mean, with SE = std/√n over runs if n ≥ 2 (beside it ``se_within``, the SE the runs' own per-image or per-subset SEs
give that mean), else the run's own SE (``se_over`` says which). The raw-pixel baseline does not depend on the model, so
identical results from several runs count once (SE over label subsets). ``ssl_gain`` rows: each λ's SSL accuracy minus λ
= 0's, paired by training seed and label subset (the same labeled examples and test set): accuracies differ far more
between label subsets than between nearby λ, so the pairing is what makes small differences readable. Their mean and SE
are over training seeds (each seed's mean difference over its subsets, the unit of the claims' test), the SE of all
pairs pooled beside it as ``se_within``; with one seed, over its label subsets. ``kl`` and ``active_units`` rows: the
last epoch's KL(q ‖ prior) and active units of ``metrics.jsonl`` (split ``test``: on the monitor set; ``train``: the
training mean, for metrics written before the monitor logged KL), mean over runs with SE over training seeds when there
are ≥ 2.

The λ axis is one method's (:func:`lam_series`): a sweep may also hold β-VAE or IWAE runs, or another variational
family (the frontier study), whose ``train.lam`` is 0 too; they are not λ = 0 and stay out of the per-λ rows, the
paired comparisons and the claims (the frontier section shows them), and so do runs with a learned λ.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smvi.settings.families import DEFAULT_FAMILY, FAMILIES
from smvi.settings.objectives import DEFAULT_OBJECTIVE, OBJECTIVES
from smvi.settings.run import ConstraintConfig, dotted_items
from smvi.store.records import RecordError
from smvi.store.rundir import RunDamaged, RunDir, RunError, config_files, read_bounded, sweep_paths
from smvi.store.stats import clustered_paired_t, mean_se

__all__ = [
    "ReportError",
    "collect_runs",
    "aggregate",
    "is_constrained",
    "method_of",
    "lam_series",
    "last_kl",
    "last_diagnostics",
    "Run",
    "Row",
    "SPLITS",
    "EVAL_METRICS",
    "lookup",
    "number",
    "ssl_by_seed",
    "accuracies",
    "row_lam",
]

SPLITS, EVAL_METRICS = ("test", "train"), ("gap", "ais", "elbo")
IGNORED_KEYS = {"train.lam", "train.seed", "train.device", "data.data_dir"}  # may differ between runs of one sweep
IGNORED_KEYS |= {f"train.constraint.{k}" for k in ConstraintConfig.model_fields}  # constrained_report checks these
RECORD_LABEL = {kind: RunDir.record_file(kind) for kind in RunDir.record_kinds()}


class ReportError(RuntimeError):
    """Nothing to report (no sweep, no runs, no results); one-line message."""


@dataclass(frozen=True)
class Run:
    """One run as the report sees it: its current records as JSON trees (``settings`` and ``epoch`` copied up from
    the header), None where a record is missing, damaged or stale."""

    name: str
    lam: float
    seed: int
    epochs: int | None
    planned: int | None
    config: dict[str, Any]
    eval: dict | None
    ssl: dict | None
    convergence: dict | None = None
    fingerprint: str = ""
    gaps: dict | None = None  # the gaps record (smvi gaps), drawn by smvi.report.frontier
    ssl_refined: dict | None = None  # the ssl_refined record (smvi ssl-refined), read by smvi.report.ssl_study
    metrics: tuple[dict[str, Any], ...] = ()  # metrics.jsonl's lines up to ``epochs``


def is_constrained(run: Run) -> bool:
    """Whether ``run`` learned λ toward a target (its config sets ``train.constraint.target``)."""
    return run.config.get("train.constraint.target") is not None


METHOD_KEYS = (
    {"train.objective", "model.posterior", "train.dsm_grad"}
    | {f"train.{o.knob}" for o in OBJECTIVES.values() if o.knob != "lam"}
    | {f"model.{k}" for spec in FAMILIES.values() for k in spec.settings}
)
"""The settings that tell methods apart (:func:`method_of`): runs of a study differ in them by design."""


def method_of(config: dict[str, Any]) -> tuple[str, str, float] | None:
    """``(method, knob name, knob value)`` of a run from its flat config (``train.objective`` …); None for a run with
    a learned λ (``train.constraint.target`` set) or without its knob. The method names the objective and, when it is
    not the diagonal Gaussian, the variational family, and when D_SM's gradient reaches one side only
    (``train.dsm_grad``), that side: ``"SMVI"``, ``"β-VAE"``, ``"SMVI, flow q"``, ``"SMVI, D_SM → encoder"``."""
    if config.get("train.constraint.target") is not None:
        return None
    spec = OBJECTIVES.get(config.get("train.objective", DEFAULT_OBJECTIVE))
    value = number(config.get(f"train.{spec.knob}")) if spec else None
    if spec is None or value is None:
        return None
    family = config.get("model.posterior", DEFAULT_FAMILY)
    label = getattr(FAMILIES.get(family), "label", None)
    name = spec.display if family == DEFAULT_FAMILY else f"{spec.display}, {family} q{label(config) if label else ''}"
    side = config.get("train.dsm_grad", "both")
    return (name if side == "both" else f"{name}, D_SM → {side}"), spec.knob_label, value


def lam_series(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """``(on the λ axis, the others)``: the λ axis is the fixed-λ SMVI runs of one variational family -- the diagonal
    Gaussian when the sweep has such runs, else the family with the most runs (then the first by name). β-VAE and IWAE
    runs, SMVI runs of other families and runs with a learned λ are the others, in their order."""
    methods = {r.name: m[0] for r in runs if (m := method_of(r.config)) is not None and m[1] == "λ"}
    counts: dict[str, int] = {}
    for m in methods.values():
        counts[m] = counts.get(m, 0) + 1
    axis = "SMVI" if "SMVI" in counts else min(counts, key=lambda m: (-counts[m], m), default=None)
    on = [r for r in runs if axis is not None and methods.get(r.name) == axis]
    return on, [r for r in runs if r not in on]


@dataclass(frozen=True)
class Row:
    """One number of the report: ``quantity`` ∈ gap, ais, elbo, iwae_full (the whole test set), ssl_accuracy,
    ssl_raw_accuracy (``lam`` None),
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
    se_within: float | None = None  # with ≥ 2 runs: the SE the runs' own SEs give the mean, √Σ se_r² / n


# ---- reading --------------------------------------------------------------------------------------------------------
def _record(rd: RunDir, kind: str, fp: str, epochs: int | None, notes: list[str], name: str) -> dict | None:
    """The record ``kind`` as a JSON tree if it is current for the run, else None (with a note unless missing)."""
    from smvi.store.records import staleness

    try:
        rec = rd.read_record(kind)
    except RecordError as e:
        notes.append(f"{name}: unreadable {RECORD_LABEL[kind]} ({e}); ignored")
        return None
    if rec is None:
        return None
    why = staleness(rec, fp, epochs if epochs is not None else -1)
    if why:
        notes.append(f"{name}: stale {RECORD_LABEL[kind]} ({why}); left out")
        return None
    if problem := untrusted(rd, kind, rec):
        notes.append(f"{name}: {problem}; left out")
        return None
    tree = {**rec.model_dump(mode="json", by_alias=True), "settings": rec.header.settings, "epoch": rec.header.epoch}
    if kind == "convergence":
        tree.update(n_points=rec.header.settings.get("n_points"), tol=rec.header.settings.get("tol"))
    return tree


def untrusted(rd: RunDir, kind: str, rec) -> str | None:
    """Why a current record must not be reported as the run's result, or None: its content no longer matches its
    digest (edited by hand or damaged after writing; records written before digests are taken as they are), or it
    scored other data than the run was trained on (``--other-data``)."""
    if edited := rd.edited(kind):
        return edited
    if rec.header.data is not None:
        return f"{RECORD_LABEL[kind]} scored {rec.header.data.describe()}, not the data the run was trained on"
    return None


def _metrics(rd: RunDir, epochs: int | None, notes: list[str], name: str) -> tuple[dict[str, Any], ...]:
    """``metrics.jsonl``'s lines of the epochs up to ``epochs`` (a line past the checkpoint is not the model's);
    an unreadable file is a note and no lines."""
    try:
        lines = rd.read_metrics()
    except RunError as e:
        notes.append(f"{name}: metrics unreadable ({e}); no curves, KL or active units")
        return ()
    return tuple(m for m in lines if epochs is None or m["epoch"] <= epochs)


def _status_notes(sweep: Path, notes: list[str]) -> None:
    try:
        status = json.loads(read_bounded(sweep_paths(sweep)[1]).decode())
    except FileNotFoundError:
        return
    except (RunError, OSError, UnicodeDecodeError, ValueError) as e:
        notes.append(f"sweep: unreadable {sweep_paths(sweep)[1].name} ({e}); ignored")
        return
    for job in lookup(status, "runs") or []:
        if isinstance(job, dict) and job.get("status") not in (None, "ok"):
            notes.append(
                f"{sweep_paths(sweep)[1].name}: {job.get('name')} {job.get('status')} ({job.get('error', '?')})"
            )


def _utf8(text: str) -> bool:
    """Whether ``text`` (a path's name, undecodable bytes kept as surrogates) is valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def collect_runs(sweep_dir: str | Path) -> tuple[list[Run], list[str]]:
    """Every run under ``sweep_dir`` (sorted by λ, seed) and notes on what is missing, stale or inconsistent. A sweep
    nested inside (a folder below with its own ``sweep.toml``) is left to its own report when ``sweep_dir`` has runs
    of its own; a folder of sweeps alone (the frontier study's arms) is reported as one."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise ReportError(f"sweep directory {sweep} does not exist")
    runs, notes, seen = [], [], {}
    found = [
        p
        for p in config_files(sweep)
        if not (
            any(part.startswith(".") for part in p.relative_to(sweep).parts)
            or p.relative_to(sweep).parts[0] == "report"
        )
    ]
    nested = {p for p in found if any(sweep_paths(d)[0].is_file() for d in p.parents if sweep in d.parents)}
    if len(nested) < len(found):  # the folder has runs of its own: a sweep inside it has its own report
        found = [p for p in found if p not in nested]
    for cfg_path in found:
        rd = RunDir(cfg_path.parent)
        name = str(rd.path.relative_to(sweep)) or "."
        if not _utf8(name):  # the report's files are UTF-8 text: the name cannot be written in them
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            notes.append(f"{shown}: run skipped (its folder name is not valid UTF-8; rename it)")
            continue
        try:
            cfg = rd.read_config()
            fp = rd.fingerprint()
            epochs = rd.epochs_done() or rd.metrics_epochs()
        except RunDamaged as e:  # named as damaged; what fixes it depends on how the run was made
            notes.append(
                f"{name}: run skipped: damaged ({e.problem}); restore the file, or remove the run and retrain it"
            )
            continue
        except RunError as e:
            notes.append(f"{name}: run skipped ({e})")
            continue
        if fp in seen:
            notes.append(f"{name}: the same run as {seen[fp]} (fingerprint {fp[:16]}), a copy: counted once")
            continue
        seen[fp] = name
        planned = cfg.train.epochs
        if epochs is None:
            notes.append(f"{name}: no metrics.jsonl (not trained yet?)")
        got = {kind: _record(rd, kind, fp, epochs, notes, name) for kind in RECORD_LABEL}
        flat = dotted_items(cfg.model_dump(mode="json", exclude_none=True))
        run = Run(
            name,
            cfg.train.lam,
            cfg.train.seed,
            epochs,
            planned,
            flat,
            got["eval"],
            got["ssl"],
            got["convergence"],
            fp,
            gaps=got["gaps"],
            ssl_refined=got["ssl_refined"],
            metrics=_metrics(rd, epochs, notes, name),
        )
        for kind, fig in (("eval", 1), ("ssl", 2)):
            if got[kind] is None and not rd.record_path(kind).exists():  # damaged or stale ones have their note
                notes.append(f"{name}: no {RECORD_LABEL[kind]}; left out of Figure {fig}")
        runs.append(run)
    if not runs:
        raise ReportError(f"no usable runs under {sweep}: no readable config.toml found; train some runs into it first")
    if not any(r.eval or r.ssl for r in runs):
        raise ReportError(
            f"none of the {len(runs)} runs under {sweep} has a current eval.json or ssl.json: evaluate them first"
        )
    _status_notes(sweep, notes)
    keys = set().union(*(r.config for r in runs)) - IGNORED_KEYS
    axis = lam_series(runs)[0]  # the runs pooled per λ; other methods differ from them by design (their keys)
    for group, group_keys in ((runs, keys - METHOD_KEYS), (axis, keys & METHOD_KEYS)):
        for key in sorted(group_keys):
            vals = {json.dumps(r.config.get(key)) for r in group}
            if len(vals) > 1:
                notes.append(f"runs differ in {key} ({', '.join(sorted(vals))}): aggregates mix them")
    return sorted(runs, key=lambda r: (r.lam, r.seed, r.name)), notes


# ---- aggregating ----------------------------------------------------------------------------------------------------
def row_lam(row: Row) -> float:
    """λ of a per-λ row (a sort key, an x position); the λ-less rows (``ssl_raw_accuracy``) have none to give."""
    if row.lam is None:
        raise ValueError(f"the {row.quantity} row has no λ")
    return row.lam


def lookup(tree: Any, *keys: str) -> Any:
    """``tree[k1][k2]...`` through nested dicts (a record or config read from JSON); None where a key is missing or a
    level is not a dict."""
    for k in keys:
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree


def number(x: Any) -> float | None:
    """``x`` as a float when it is a finite int or float (a value read from JSON), else None."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _row(quantity, split, s, lam, per_run: list[tuple[float, float | None]], within: str, unit: str) -> Row:
    means = [m for m, _ in per_run]
    within_se = None
    if len(means) >= 2:
        se, over = mean_se(means).se, "training seeds"
        ses = [e for _, e in per_run if e is not None]
        if len(ses) == len(per_run):
            within_se = math.sqrt(math.fsum(e * e for e in ses)) / len(per_run)
    else:
        se, over = per_run[0][1], within
    return Row(quantity, split, s, lam, float(np.mean(means)), se, len(means), over, unit, tuple(means), within_se)


def _se_pct(values) -> float | None:
    """100 × the SE of the mean of ``values`` (fractions), over label subsets; None for one value."""
    se = mean_se(values).se
    return None if se is None else 100 * se


def accuracies(ssl: dict | None, kind: str, s: int) -> tuple[float, ...]:
    """The SSL accuracies (fractions) of one ``ssl.json`` at size ``s``, one per label subset: of the encoder
    features (``kind`` = ``features``) or of the raw pixels (``raw_pixels``)."""
    acc = lookup(ssl, kind, "sizes", str(s), "accuracy")
    return tuple(float(a) for a in acc if number(a) is not None) if isinstance(acc, list) else ()


def ssl_by_seed(ssl: dict | None, s: int) -> dict[Any, float]:
    """Label-subset seed → encoder-feature SSL accuracy at size ``s``, from one ``ssl.json``."""
    seeds, acc = lookup(ssl, "features", "seeds"), lookup(ssl, "features", "sizes", str(s), "accuracy")
    if not (isinstance(seeds, list) and isinstance(acc, list) and len(seeds) == len(acc)):
        return {}
    return {k: float(a) for k, a in zip(seeds, acc, strict=True) if number(a) is not None}


def _gain(runs: list[Run], s: int, lam: float) -> Row | None:
    """SSL accuracy at ``lam`` minus at λ = 0, in percentage points, paired (see the module docstring): the claims'
    unit and test (:func:`smvi.store.stats.clustered_paired_t`): mean and SE over training seeds of each seed's mean
    difference, with the SE of all (seed, subset) differences pooled as ``se_within``; one seed: over its subsets."""
    clusters: dict[int, list[float]] = {}
    for r in (r for r in runs if r.lam == lam):
        for r0 in (r0 for r0 in runs if r0.lam == 0 and r0.seed == r.seed):
            a, a0 = ssl_by_seed(r.ssl, s), ssl_by_seed(r0.ssl, s)
            if common := [100 * (a[k] - a0[k]) for k in sorted(set(a) & set(a0))]:
                clusters.setdefault(r.seed, []).extend(common)
    d = clustered_paired_t(clusters, value_unit="label subsets")
    if d is None:
        return None
    per_pair = tuple(float(np.mean(v)) for v in clusters.values())
    if len(clusters) >= 2:
        return Row(
            "ssl_gain",
            "test",
            s,
            lam,
            d.mean,
            d.se,
            len(clusters),
            "training seeds",
            "percentage points",
            per_pair,
            d.se_pooled,
        )
    return Row(
        "ssl_gain", "test", s, lam, d.mean, d.se, 1, "label subsets, paired with λ = 0", "percentage points", per_pair
    )


def last_kl(last: dict) -> tuple[float | None, str]:
    """KL(q ‖ prior) of a metrics line and where it comes from: ``test`` (the monitor set) if logged, else ``train``
    (the training mean of the epoch)."""
    if (kl := number(last.get("test_kl"))) is not None:
        return kl, "test"
    return number(last.get("kl")), "train"


def last_diagnostics(run: Run) -> dict[tuple[str, str], float]:
    """(quantity, split) → value of the run's last metrics line: ``kl`` (``test`` on the monitor set, else ``train``,
    the training mean) and ``active_units`` (``test``); absent where not logged."""
    last = run.metrics[-1] if run.metrics else {}
    kl, where = last_kl(last)
    out = {} if kl is None else {("kl", where): kl}
    if (units := number(last.get("test_active_units"))) is not None:
        out[("active_units", "test")] = units
    return out


def _diagnostics(runs: list[Run], lams: list[float]) -> list[Row]:
    """The ``kl`` and ``active_units`` rows per λ (module docstring)."""
    rows = []
    for (q, split), lam in itertools.product((("kl", "test"), ("kl", "train"), ("active_units", "test")), lams):
        got: list[tuple[float, float | None]] = [
            (v, None) for r in runs if r.lam == lam if (v := last_diagnostics(r).get((q, split))) is not None
        ]
        if got:
            rows.append(_row(q, split, None, lam, got, "one value per run", "nats" if q == "kl" else "units"))
    return rows


def aggregate(runs: list[Run]) -> tuple[list[Row], list[str]]:
    """The rows of ``results.csv`` (see the module docstring) and notes on missing keys, for the runs on the λ axis
    (:func:`lam_series`; learned λ: :mod:`smvi.report.constrained`, other methods: :mod:`smvi.report.frontier`)."""
    runs, other = lam_series(runs)
    rows, notes, lams = [], [], sorted({r.lam for r in runs})
    if others := [r.name for r in other if not is_constrained(r)]:
        notes.append(
            f"{len(others)} runs of other methods (β-VAE, IWAE or another variational family) are not on "
            "the λ axis and are left out of the per-λ tables, Figures 1–3 and the claims (the frontier "
            f"section shows them): {', '.join(others)}"
        )
    for split, q, lam in itertools.product(SPLITS, EVAL_METRICS, lams):
        got = []
        for r in (r for r in runs if r.lam == lam and r.eval):
            m = number(lookup(r.eval, "splits", split, q, "mean"))
            if m is None:
                notes.append(f"{r.name}: eval.json has no {split} {q}")
            else:
                got.append((m, number(lookup(r.eval, "splits", split, q, "se"))))
        if got:
            rows.append(_row(q, split, None, lam, got, "data points", "nats"))
    for lam in lams:  # IWAE on the whole test set, where the eval records have it
        got = [
            (m, number(lookup(r.eval, "full_test", "iwae", "se")))
            for r in runs
            if r.lam == lam and r.eval
            if (m := number(lookup(r.eval, "full_test", "iwae", "mean"))) is not None
        ]
        if got:
            rows.append(_row("iwae_full", "test", None, lam, got, "data points", "nats"))
    rows += _diagnostics(runs, lams)
    sizes = sorted({int(s) for r in runs for s in (lookup(r.ssl, "features", "sizes") or {}) if str(s).isdigit()})
    for s in sizes:
        for lam in lams:
            got = [
                (100 * float(np.mean(a)), _se_pct(a))
                for r in runs
                if r.lam == lam
                if (a := accuracies(r.ssl, "features", s))
            ]
            if got:
                rows.append(_row("ssl_accuracy", "test", s, lam, got, "label subsets", "percent"))
            if lam != 0 and (gain := _gain(runs, s, lam)):
                rows.append(gain)
        raw = {accuracies(r.ssl, "raw_pixels", s) for r in runs} - {()}
        if len(raw) > 1:
            notes.append(f"raw-pixel baselines for s={s} differ between runs (other ssl settings?); pooled")
        if raw:
            rows.append(
                _row(
                    "ssl_raw_accuracy",
                    "test",
                    s,
                    None,
                    [(100 * float(np.mean(a)), _se_pct(a)) for a in sorted(raw)],
                    "label subsets",
                    "percent",
                )
            )
    return rows, notes
