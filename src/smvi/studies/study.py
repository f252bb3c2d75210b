"""``smvi study DIR --config NAME``: several sweeps run as one study, driven by a
:class:`~smvi.settings.study.StudyConfig` (the frontier study: ``smvi/studies/frontier.toml``).

One ``smvi sweep`` per arm in ``DIR/<arm>/`` (the study's preset, the study's ``sets``, the arm's λ grid and ``sets``,
then the command's ``--set``), and the arm's per-run stages (e.g. ``smvi gaps``) on the runs it names once the arm is
done. ``lanes`` arms run at once, the costliest first (``cost``), each lane on its own share of the usable cores (its
sweeps see only those: ``workers`` and the torch threads are per lane); a lane with no arm left takes the per-run
stages of the arms done, so no core idles while the longest arm trains.

Rerunning the same command resumes: sweeps skip finished work, and a per-run stage whose record is current (its run,
epoch and settings: :meth:`smvi.store.rundir.RunDir.current_record`) is not redone; a stale one is recomputed. An arm
that fails does not stop the others; :func:`run_study` then names it. Ctrl-C or SIGTERM: no new job starts, each
running one gets SIGINT (a sweep stops its workers and keeps what is finished), and the study returns once they have.
``reuse`` links an existing sweep (checkpoints needed) as an arm instead of training it again; its run and evaluation
settings must be the arm's, else one line names the first difference.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from smvi.settings.run import ConfigError, build_config
from smvi.settings.stages import STAGES
from smvi.settings.study import StudyConfig
from smvi.store.rundir import RunDir, RunError, identity_change
from smvi.studies.presets import preset_base
from smvi.studies.sweep import SweepConfig, read_sweep, run_name

__all__ = ["Job", "StudyError", "arm_sweep_config", "in_lanes", "lane_cores", "run_study", "study_jobs"]

_print_lock = threading.RLock()  # re-entrant: the signal handler prints, in whichever state the main thread is
_running: set[subprocess.Popen] = set()
_stop = threading.Event()


class StudyError(ConfigError):
    """A study that cannot start (a bad reused sweep, a folder in the way) or whose jobs failed; one line."""


def _say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def lane_cores(lanes: int) -> list[set[int] | None]:
    """The cores of each lane: the usable ones dealt out round-robin; None (no pinning) with fewer cores than lanes."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS): lanes share every core
        return [None] * lanes
    if lanes == 1 or len(cores) < lanes:
        return [None] * lanes
    return [set(cores[k::lanes]) for k in range(lanes)]


def run_smvi(label: str, cores: set[int] | None, *args: str) -> bool:
    """Run `smvi ARGS` on ``cores``, its output prefixed with ``[label]``; True when it succeeded. The child has its
    own process group, so a terminal's Ctrl-C reaches it once, from :func:`_interrupt` (a group, not a session: a
    new session would get its own scheduler autogroup, outside the niceness the study was started with)."""
    _say(f"[{label}] + smvi " + " ".join(args))
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    with subprocess.Popen(
        [sys.executable, "-m", "smvi", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=pin,
        process_group=0,
    ) as proc:  # noqa: PLW1509
        # (pin only calls sched_setaffinity, a plain system call: safe between fork and exec with threads about)
        assert proc.stdout is not None  # stdout=PIPE
        with _print_lock:
            _running.add(proc)
            if _stop.is_set():  # started as the signal came
                proc.send_signal(signal.SIGINT)
        for line in proc.stdout:
            _say(f"[{label}] {line.rstrip()}")
    with _print_lock:
        _running.discard(proc)
    return proc.returncode == 0


def _interrupt(signum, frame) -> None:
    """Ctrl-C or SIGTERM: no new job starts, and each running one gets SIGINT (a sweep stops its workers and keeps
    what is finished); the study returns once they have."""
    _stop.set()
    _say("interrupted: stopping the running jobs; rerun this command to resume")
    with _print_lock:
        for proc in _running:
            proc.send_signal(signal.SIGINT)


@dataclass(frozen=True)
class Job:
    """One `smvi` command of the study. ``label`` names it in the output; ``args()``, called when a lane reaches it,
    gives its arguments, or None when nothing is left to do (a current record). It starts once the job labelled
    ``after`` has succeeded, and is dropped if that one failed (its failure is reported already)."""

    label: str
    args: Callable[[], list[str] | None]
    after: str | None = None


def in_lanes(jobs: list[Job], lanes: int, run: Callable[..., bool] | None = None, *, pin: bool = True) -> list[str]:
    """Run ``jobs`` ``lanes`` at a time, each lane on its own cores (:func:`lane_cores`; every core unless ``pin``)
    and taking the first job whose predecessor is done, so no lane idles while there is work it may start; the labels
    of those that failed (or, once stopped, were not started). ``run(label, cores, *args)`` runs one (default
    :func:`run_smvi`)."""
    run = run or run_smvi
    pending = list(jobs)
    known = {job.label for job in jobs}
    outcome: dict[str, bool] = {}
    failed: list[str] = []
    cond = threading.Condition()

    def next_job() -> Job | None:
        with cond:
            while pending and not _stop.is_set():
                for job in list(pending):
                    if job.after in known and outcome.get(job.after) is False:
                        pending.remove(job)
                        outcome[job.label] = False
                    elif job.after not in known or outcome.get(job.after):
                        pending.remove(job)
                        return job
                if pending:  # what is left waits for a job running in another lane
                    cond.wait()
            return None

    def lane(cores: set[int] | None) -> None:
        while (job := next_job()) is not None:
            args = job.args()
            ok = args is None or run(job.label, cores, *args)
            with cond:
                outcome[job.label] = ok
                if not ok:
                    failed.append(job.label)
                cond.notify_all()

    threads = [threading.Thread(target=lane, args=(cores,)) for cores in (lane_cores(lanes) if pin else [None] * lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed + [job.label for job in pending]  # jobs left in pending were never started: stopped


def _stage_args(stage: str, rd: RunDir, cfg: BaseModel, sets: list[str]) -> list[str] | None:
    """`smvi STAGE` arguments for the run ``rd``; None when its record is current (its run, epoch and ``cfg``)."""
    record_name = STAGES[stage].record
    assert record_name is not None  # a per-run stage writes a record (smvi.settings.study)
    try:
        record, stale = rd.current_record(record_name, cfg)
    except RunError:  # not a usable run: `smvi STAGE` says why in one line
        record, stale = None, "no run"
    if record is not None and stale is None:
        return None
    overwrite = ["--overwrite"] if rd.record_path(record_name).exists() else []
    return [stage, str(rd.path), *(a for s in sets for a in ("--set", s)), "--no-progress", *overwrite]


def _grid_sets(lams: tuple[float, ...] | None) -> list[str]:
    return [] if lams is None else [f"lams=[{', '.join(f'{v:g}' for v in lams)}]"]


def arm_sweep_config(study: StudyConfig, arm: str, sets: tuple[str, ...] | list[str] = ()) -> SweepConfig:
    """The sweep settings of ``arm``: the preset, the study's ``sets``, the arm's grid and ``sets``, then ``sets``;
    ConfigError (one line) if they are bad."""
    spec = study.arms[arm]
    return build_config(
        SweepConfig, preset_base(study.preset), sets=[*study.sets, *_grid_sets(spec.lams), *spec.sets, *sets]
    )


def _link_reused(arm: str, dest: Path, reused: Path, wanted: SweepConfig) -> None:
    """Check that the sweep ``reused`` has ``wanted``'s settings and link it as ``dest`` (StudyError, one line)."""
    if not (reused / "runs").is_dir():
        raise StudyError(f"{reused} is not a sweep directory (no runs/): check the sweep reused for {arm}")
    try:
        found = read_sweep(reused)
    except (ConfigError, OSError) as e:
        raise StudyError(f"the sweep reused for {arm}, {reused}: {e}") from None
    differs = (
        identity_change(found.run, wanted.run)
        or (
            found.run.train.epochs != wanted.run.train.epochs
            and f"train.epochs is {wanted.run.train.epochs} but the sweep trains {found.run.train.epochs}"
        )
        or (found.eval != wanted.eval and "its eval settings differ")
    )
    if differs:
        raise StudyError(
            f"the sweep reused for {arm}, {reused}, does not have the study's settings: {differs}; "
            "match them with --set (e.g. run.train.precision='fp32') or do not reuse it"
        )
    if not (dest.exists() or dest.is_symlink()):  # so that `smvi report DIR` finds the arm with the others
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(os.path.relpath(reused.resolve(), dest.parent.resolve()), target_is_directory=True)
    elif dest.resolve() != reused.resolve():
        raise StudyError(f"{dest} exists and is not the sweep reused for {arm}, {reused}: remove it or do not reuse it")


def study_jobs(
    study: StudyConfig,
    out: Path,
    *,
    only: list[str] | None = None,
    sets: tuple[str, ...] = (),
    stage_sets: dict[str, list[str]] | None = None,
    reuse: dict[str, Path] | None = None,
    per_run: bool = True,
) -> list[Job]:
    """The jobs of the study in ``out``: one sweep per arm of ``only`` (default all), the costliest first, then each
    arm's per-run stages (after it, unless not ``per_run``). ``sets`` go to every sweep after the arm's own,
    ``stage_sets`` (stage -> --set options) to each per-run stage after the study's; ``reuse`` (arm -> sweep folder)
    links an existing sweep instead of running one. Checks every setting first: ConfigError / StudyError (one line)
    before anything is written."""
    stage_sets = stage_sets or {}
    arms = list(dict.fromkeys(only or study.arms))
    unknown = [a for a in arms + list(reuse or {}) if a not in study.arms]
    if unknown:
        raise StudyError(f"no arm {unknown[0]!r} in the study: use one of {sorted(study.arms)}")
    for stage in stage_sets:
        if stage not in STAGES or STAGES[stage].record is None:
            raise StudyError(
                f"{stage!r} is not a per-run stage: use one of {[s.name for s in STAGES.values() if s.record]}"
            )
    stage_cfgs = {}
    for stage in {s for a in arms for s in study.arms[a].stages} | set(stage_sets):
        try:
            stage_cfgs[stage] = study.stage_config(stage, stage_sets.get(stage, ()))
        except ConfigError as e:
            raise ConfigError(f"{stage} settings: {e}") from None
    wanted = {}
    for arm in arms:  # a bad --set is refused before anything starts
        try:
            wanted[arm] = arm_sweep_config(study, arm, sets)
        except ConfigError as e:
            raise ConfigError(f"--set: arm {arm}: {e}") from None
    dirs = {arm: Path(os.path.normpath(out / (study.arms[arm].dir or arm))) for arm in arms}
    reused = {a: Path(p) for a, p in (reuse or {}).items() if a in dirs}
    for arm, path in reused.items():
        _link_reused(arm, dirs[arm], path, wanted[arm])
        dirs[arm] = path
    jobs = []
    for arm in sorted(arms, key=lambda a: -study.arms[a].cost):
        if arm in reused:
            continue
        spec = study.arms[arm]
        opts = [a for s in [*study.sets, *_grid_sets(spec.lams), *spec.sets, *sets] for a in ("--set", s)]
        sweep = [
            "sweep",
            str(dirs[arm]),
            "--preset",
            study.preset,
            *opts,
            "--executor",
            study.executor,
            "--workers",
            str(study.workers),
            *(["--overwrite"] if study.overwrite else []),
            "--no-report",
            "--no-progress",
        ]
        jobs.append(Job(arm, lambda sweep=sweep: sweep))
    if per_run:  # each after its arm, in whichever lane is free first
        for arm in arms:
            for stage, lams in study.arms[arm].stages.items():
                all_sets = [*study.stage_sets.get(stage, ()), *stage_sets.get(stage, ())]
                for lam in lams:
                    rd = RunDir(dirs[arm] / "runs" / run_name(lam, 0))
                    jobs.append(
                        Job(
                            f"{arm} {stage} {rd.path.name}",
                            lambda stage=stage, rd=rd, s=all_sets: _stage_args(stage, rd, stage_cfgs[stage], s),
                            after=arm,
                        )
                    )
    return jobs


def run_study(
    study: StudyConfig,
    out: str | Path,
    *,
    only: list[str] | None = None,
    sets: tuple[str, ...] = (),
    stage_sets: dict[str, list[str]] | None = None,
    reuse: dict[str, Path] | None = None,
    per_run: bool = True,
    lanes: int | None = None,
) -> None:
    """Run the study in ``out`` (module docstring; arguments as :func:`study_jobs`, ``lanes`` overriding the
    study's). Ctrl-C and SIGTERM stop it as the module docstring says (handlers installed while it runs, in the main
    thread). Raises StudyError (one line) naming the arms that failed, or that it was interrupted."""
    jobs = study_jobs(study, Path(out), only=only, sets=sets, stage_sets=stage_sets, reuse=reuse, per_run=per_run)
    main = threading.current_thread() is threading.main_thread()
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) if main else None
    _stop.clear()
    if main:
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        failed = in_lanes(jobs, lanes or study.lanes, pin=study.pin)
    finally:
        if before:
            signal.signal(signal.SIGINT, before[0])
            signal.signal(signal.SIGTERM, before[1])
    if failed:
        what = "interrupted" if _stop.is_set() else f"{', '.join(failed)} failed (see above)"
        raise StudyError(f"{what}; rerun this command to resume")
