"""``smvi status``: what a sweep has done and what it has left, from its files alone.

Nothing is trained, evaluated or written, so it is safe beside the running sweep. Per run (the sweep's own plan, from
its saved ``sweep.toml``): epochs done of planned and when the last one finished, then each stage -- ``done`` (a
current record), ``to do``, or for an evaluation under way the points it has scored (``eval.partial.json``). The
decisions are :func:`smvi.studies.sweep.pending_work`'s, the ones the sweep makes when it resumes, and the time left is
:class:`smvi.progress.SweepETA`'s: per-unit times measured in this sweep's files (the last epochs' ``seconds`` in
``metrics.jsonl``, each record's ``seconds``) where there are any, the rough priors of
:func:`smvi.progress.stage_priors` otherwise. The columns are the stages of :data:`smvi.stages.registry.STAGES` after
training: the listed ones always, the others (convergence, gaps) when the sweep runs them or, run by hand (not in the
work left), once some run has their record: then ``done`` or ``stale`` per run. A run the sweep will leave as it is
(:func:`smvi.studies.sweep.slot_problem`: ``damaged``, or ``refused``, a run it did not make) says so in its row, and
a line below the table names the problem and the fix; it is outside the work left. A record whose content no longer
matches its digest (:func:`smvi.store.records.record_integrity`: edited by hand or damaged after it was written) shows
``edited`` instead of ``done``, with a line naming the fix; the report leaves such a record out of its results.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from smvi.progress import SweepETA, duration
from smvi.store.records import EvalPartial
from smvi.store.rundir import RunDir, RunError, sweep_paths
from smvi.studies.sweep import (
    AFTER_TRAINING,
    SweepConfig,
    measured_times,
    pending_work,
    plan,
    read_sweep,
    slot_problem,
    sweep_priors,
)

__all__ = ["RunProgress", "sweep_progress", "format_status", "status_text", "sweeps_in"]

STAGES = tuple(s.name for s in AFTER_TRAINING)


@dataclass(frozen=True)
class RunProgress:
    """One run of the sweep: ``epochs`` done of ``planned``, seconds since its last epoch (None before one), each
    stage's state (``done``, ``to do``, ``scoring: …``; for a stage the sweep does not run, the state of a record
    written outside the sweep, by hand or before its stages changed: ``done``, ``stale``, or None without one; a
    column not ``listed`` (:class:`~smvi.settings.stages.StageSpec`) is shown once some run has such a record) and
    ``work``, what it still needs as :func:`smvi.studies.sweep.pending_work` counts it."""

    name: str
    epochs: int
    planned: int
    since_epoch: float | None
    stages: dict[str, str | None]
    work: dict[str, int]
    problem: tuple[str, str] | None = None  # (damaged or refused, the line naming it and the fix): left as it is
    edited: tuple[str, ...] = ()  # records that no longer match their digest: the line naming each and its fix

    @property
    def gaps(self) -> str | None:
        """The gaps column's state (kept for old callers)."""
        return self.stages.get("gaps")

    @property
    def complete(self) -> bool:
        return self.problem is None and not any(self.work.values())


def _load(sweep_dir: Path) -> SweepConfig:
    path = sweep_paths(sweep_dir)[0]
    if not path.is_file():
        raise RunError(f"{sweep_dir} is not a sweep directory (no {path.name}): start it with smvi sweep")
    return read_sweep(sweep_dir)


def _age(path: Path, now: float) -> float | None:
    try:
        return max(0.0, now - path.stat().st_mtime)
    except OSError:
        return None


def _scoring(rd: RunDir, sweep: SweepConfig) -> str | None:
    """``scoring: …`` for an evaluation under way (a current ``eval.partial.json``), else None."""
    saved, _ = rd.read_partial("eval", sweep.eval)
    if not isinstance(saved, EvalPartial):
        return None
    subset = sum(len(s.ais) for s in saved.splits.values())
    text = f"scoring: {subset}/{sweep.eval.n_test + sweep.eval.n_train} points"
    if sweep.eval.iwae_full_test_k:
        text += f", {len(saved.full_test)} whole-test images"
    return text + f" ({duration(_age(rd.partial_path('eval'), time.time()))} ago)"


def _recorded(rd: RunDir, record: str) -> str | None:
    """``done`` (a ``record`` current for the run and its epochs, whatever its settings), ``stale``, or None."""
    if not rd.record_path(record).exists():
        return None
    try:
        return "done" if rd.current_record(record)[1] is None else "stale"
    except RunError:
        return "stale"


def sweep_progress(sweep_dir: str | Path) -> tuple[SweepConfig, list[RunProgress]]:
    """The sweep's saved settings and one :class:`RunProgress` per planned run, in the sweep's order."""
    sweep_dir = Path(sweep_dir)
    sweep = _load(sweep_dir)
    now, rows = time.time(), []
    for spec in plan(sweep):
        rd = RunDir(sweep_paths(sweep_dir)[2] / spec.name)
        work = pending_work(spec, sweep, rd.path)
        try:
            done = rd.epochs_done() if rd.path.is_dir() else 0
        except RunError:
            done = 0
        stages: dict[str, str | None] = {}
        edited: list[str] = []
        for stage in AFTER_TRAINING:
            name = stage.name
            if name not in sweep.stages:  # not this sweep's: the state of a record made outside it (by hand), if any
                stages[name] = _recorded(rd, stage.record) if stage.record else None
            elif not work[name]:
                stages[name] = "done"
            else:  # only evaluate keeps a partial record of the points it has scored
                stages[name] = (name == "evaluate" and not work["epochs"] and _scoring(rd, sweep)) or "to do"
            if stages[name] in ("done", "stale") and stage.record and (why := rd.edited(stage.record)):
                stages[name] = "edited"
                edited.append(why)
        problem = slot_problem(spec, sweep, rd.path)
        if problem:  # the row says so; its cells are blank (and make no column appear)
            stages, edited = dict.fromkeys(stages), []
        rows.append(
            RunProgress(
                spec.name,
                done,
                spec.config.train.epochs,
                _age(rd.metrics_path, now) if done else None,
                stages,
                work,
                problem,
                tuple(edited),
            )
        )
    return sweep, rows


def format_status(sweep_dir: str | Path, sweep: SweepConfig, rows: list[RunProgress], workers: int = 1) -> str:
    """The status as text: a line per run, then what is left and the time it should take with ``workers`` jobs side
    by side."""
    # a column per listed stage, and per other stage the sweep runs or some run has a record of (e.g. a gap split)
    shown = [
        s.name for s in AFTER_TRAINING if s.listed or s.name in sweep.stages or any(r.stages[s.name] for r in rows)
    ]
    head = ["run", "epochs", *shown]
    table = [head]
    for r in rows:
        epochs = f"{r.epochs}/{r.planned}"
        if r.epochs < r.planned and r.since_epoch is not None:
            epochs += f" (last {duration(r.since_epoch)} ago)"
        if r.problem:
            epochs = r.problem[0]
        table.append([r.name, epochs, *(r.stages[s] or "—" for s in shown)])
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    left = {k: sum(r.work.get(k, 0) for r in rows) for k in ("epochs", *STAGES)}
    todo = [r for r in rows if not r.complete and not r.problem]
    left_alone = [r for r in rows if r.problem]
    eta = SweepETA({r.name: r.work for r in todo}, sweep_priors(sweep), workers)
    measured_times(eta, [sweep_paths(sweep_dir)[2] / r.name for r in rows])
    done = len(rows) - len(todo) - len(left_alone)
    summary = f"{done} of {len(rows)} runs complete"
    if todo:
        parts = [f"{left['epochs']} epochs"] + [f"{left[s]} {s}" for s in STAGES if left[s]]
        summary += f"; left: {', '.join(parts)}; {eta.eta()} with {workers} worker{'s' * (workers > 1)}"
    if left_alone:
        summary += f"; {len(left_alone)} left as they are (fix them first)"
    problems = [f"{r.name}: {p[0]}: {p[1]}" for r in left_alone if (p := r.problem)]
    problems += [f"{r.name}: {why}" for r in rows for why in r.edited]
    return "\n".join([f"sweep {sweep_dir}", *lines, *problems, summary]) + "\n"


def recorded_workers(sweep_dir: str | Path) -> int:
    """The runs the sweep ran side by side when it last recorded a finished run (``sweep_status.json``); 1 if
    unknown."""
    try:
        n = json.loads(sweep_paths(sweep_dir)[1].read_text()).get("workers")
    except (OSError, ValueError, AttributeError):
        return 1
    return n if isinstance(n, int) and n >= 1 else 1


def sweeps_in(folder: str | Path) -> list[Path]:
    """``folder`` if it is a sweep, else the sweeps directly inside it (the frontier study's arms), sorted; a folder
    with neither, or whose ``sweep.toml`` is not a file, is a one-line :class:`~smvi.store.rundir.RunError`."""
    folder = Path(folder)
    settings = sweep_paths(folder)[0]
    if settings.is_file():
        return [folder]
    if settings.exists() or settings.is_symlink():  # a folder, a dangling link, a device: not the sweep's settings
        raise RunError(f"{settings} is not a file: restore the sweep's settings there (smvi sweep wrote them)")
    inner = sorted(d for d in folder.iterdir() if sweep_paths(d)[0].is_file()) if folder.is_dir() else []
    if not inner:
        raise RunError(
            f"{folder} is not a sweep directory (no {sweep_paths(folder)[0].name}, nor a folder of sweeps): "
            "start it with smvi sweep"
        )
    return inner


def status_text(sweep_dir: str | Path, workers: int | None = None) -> str:
    """:func:`format_status` of :func:`sweep_progress` (what ``smvi status`` prints) with ``workers`` jobs side by side
    (None: as many as the sweep last ran, :func:`recorded_workers`); a directory that is not a
    sweep, or a damaged ``sweep.toml``, is a one-line error (:class:`~smvi.store.rundir.RunError`,
    :class:`~smvi.settings.run.ConfigError`)."""
    sweep, rows = sweep_progress(sweep_dir)
    return format_status(sweep_dir, sweep, rows, workers or recorded_workers(sweep_dir))
