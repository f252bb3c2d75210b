"""The trade-off frontier study: every way of moving between learning and inference, at the cpu preset's settings.

    python scripts/frontier_study.py runs/frontier --lanes 2 --executor process --workers 1    # or: make frontier

One `smvi sweep` per arm (train → evaluate → ssl, the cpu preset: 30 epochs, the paper's model, AIS with 500 steps on
100 + 100 images), each in DIR/<arm>/, and `smvi gaps` on the runs whose gap is split once their arm is done. Every arm
trains in bf16 autocast (:data:`STUDY_SETS`; ``--set run.train.precision='fp32'`` for fp32): on these settings bf16
matched fp32 on test ELBO, AIS log p(x) and the gap within noise (results/bf16check) at 1.7–2.9x less CPU per step
(benchmarks/families.py --precision both), and every point of the frontier is then trained alike. Evaluation and the gap
split stay in fp32.

    smvi      the cpu preset's λ grid (diagonal q)          gaps at λ = 0, 0.01, 0.1
    beta0.5, beta2, beta4   β-VAE (λ = 0)
    iwae5, iwae50           IWAE training with k = 5, 50
    full, flow              full-covariance / flow q at λ = 0, 0.01, 0.1   gaps at λ = 0

``--lanes N`` runs N arms at once, the costliest first (:data:`COST`), each lane on its own share of the usable cores
(its sweeps see only those: ``--workers`` and the torch threads are per lane); a lane that has no arm left
takes the gap splits of the arms done, so no core idles while IWAE k = 50 trains.
Most arms are one run, and IWAE with k = 50 alone costs about as much as all the others, so on 2 cores
``--lanes 2 --workers 1`` keeps both busy where one arm at a time with two workers would leave one idle for hours.

Rerunning the same command resumes: sweeps skip finished work and a run with a current gaps record (its run, epoch and
the ``--gaps-set`` settings) is not redone; a stale one is recomputed. An arm that fails does not stop the others; the
command then exits non-zero naming it. ``--smvi-sweep PATH`` reuses an existing sweep of the SMVI grid (e.g. runs/cpu
from `make reproduce`, checkpoints needed) instead of training it again, linked as DIR/smvi; its run and evaluation
settings must be the study's (a `make reproduce` sweep is fp32: add ``--set run.train.precision='fp32'``), else one line
names the first difference. ``--set`` goes to every sweep (after the arm's own settings), ``--gaps-set`` to every `smvi
gaps`; ``--only ARM`` runs some arms. `smvi report DIR` collects DIR/*/runs/*/ and draws the frontier.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smvi.settings.run import ConfigError, build_config
from smvi.settings.stages import GapConfig
from smvi.store.rundir import RunDir, RunError, identity_change
from smvi.studies.presets import preset_base
from smvi.studies.sweep import SweepConfig, read_sweep, run_name

ARMS: dict[str, tuple[list[float] | None, list[str]]] = {  # name -> (λ grid, None: the preset's; sweep --set options)
    "smvi": (None, []),
    "beta0.5": ([0.0], ["run.train.objective='beta'", "run.train.beta=0.5"]),
    "beta2": ([0.0], ["run.train.objective='beta'", "run.train.beta=2.0"]),
    "beta4": ([0.0], ["run.train.objective='beta'", "run.train.beta=4.0"]),
    "iwae5": ([0.0], ["run.train.objective='iwae'", "run.train.iwae_k=5"]),
    "iwae50": ([0.0], ["run.train.objective='iwae'", "run.train.iwae_k=50"]),
    "full": ([0.0, 0.01, 0.1], ["run.model.posterior='full'"]),
    "flow": ([0.0, 0.01, 0.1], ["run.model.posterior='flow'"]),
}
PRESET = "cpu"
STUDY_SETS = ["run.train.precision='bf16'"]
"""Settings of every arm, before the arm's own and ``--set``: the study trains in bf16 (module docstring)."""
GAPS: dict[str, list[float]] = {"smvi": [0.0, 0.01, 0.1], "full": [0.0], "flow": [0.0]}
COST: dict[str, float] = {"smvi": 18, "beta0.5": 2, "beta2": 2, "beta4": 2, "iwae5": 4, "iwae50": 30, "full": 9,
                          "flow": 8}
"""Rough one-core cost of each arm in 30-epoch VAE runs: its runs' training steps relative to the diagonal VAE's
(benchmarks/families_results.json: D_SM 1.6x, full q 1.8x, flow 1.3x, IWAE k = 5 2.8x, k = 50 29x) plus about one
per evaluation. Only the order matters: the costliest arms start first."""

_print_lock = threading.RLock()  # re-entrant: the signal handler prints, in whichever state the main thread is
_running: set[subprocess.Popen] = set()
_stop = threading.Event()


def _say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def _lane_cores(lanes: int) -> list[set[int] | None]:
    """The cores of each lane: the usable ones dealt out round-robin; None (no pinning) with fewer cores than lanes."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS): lanes share every core
        return [None] * lanes
    if lanes == 1 or len(cores) < lanes:
        return [None] * lanes
    return [set(cores[k::lanes]) for k in range(lanes)]


def _smvi(label: str, cores: set[int] | None, *args: str) -> bool:
    """Run `smvi ARGS` on ``cores``, its output prefixed with ``[label]``; True when it succeeded. The child has its
    own process group, so a terminal's Ctrl-C reaches it once, from :func:`_interrupt` (a group, not a session: a
    new session would get its own scheduler autogroup, outside the niceness the study was started with)."""
    _say(f"[{label}] + smvi " + " ".join(args))
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    with subprocess.Popen([sys.executable, "-m", "smvi", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1, preexec_fn=pin, process_group=0) as proc:
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
    what is finished); the command exits once they have."""
    _stop.set()
    _say("interrupted: stopping the running jobs; rerun this command to resume")
    with _print_lock:
        for proc in _running:
            proc.send_signal(signal.SIGINT)


@dataclass(frozen=True)
class Job:
    """One `smvi` command of the study. ``label`` names it in the output; ``args()``, called when a lane reaches it,
    gives its arguments, or None when nothing is left to do (a current gaps record). It starts once the job labelled
    ``after`` has succeeded, and is dropped if that one failed (its failure is reported already)."""
    label: str
    args: Callable[[], list[str] | None]
    after: str | None = None


def _in_lanes(jobs: list[Job], lanes: int, run: Callable[..., bool] | None = None) -> list[str]:
    """Run ``jobs`` ``lanes`` at a time, each lane on its own cores (:func:`_lane_cores`) and taking the first job
    whose predecessor is done, so no lane idles while there is work it may start; the labels of those that failed
    (or, once stopped, were not started). ``run(label, cores, *args)`` runs one (default :func:`_smvi`)."""
    run = run or _smvi
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

    threads = [threading.Thread(target=lane, args=(cores,)) for cores in _lane_cores(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed + [job.label for job in pending]  # jobs left in pending were never started: stopped


def _gaps_args(rd: RunDir, cfg: GapConfig, sets: list[str]) -> list[str] | None:
    """`smvi gaps` arguments for the run ``rd``; None when its gaps record is current (its run, epoch and ``cfg``)."""
    try:
        record, stale = rd.current_record("gaps", cfg)
    except RunError:  # not a usable run: `smvi gaps` says why in one line
        record, stale = None, "no run"
    if record is not None and stale is None:
        return None
    return ["gaps", str(rd.path), *sets, "--no-progress", *(["--overwrite"] if rd.record_path("gaps").exists() else [])]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="study directory (one sweep per arm inside)")
    ap.add_argument("--only", action="append", choices=sorted(ARMS), help="run only this arm (repeatable)")
    ap.add_argument("--smvi-sweep", type=Path, default=None, help="an existing sweep of the SMVI λ grid to reuse")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="sweep override for every arm")
    ap.add_argument("--gaps-set", action="append", default=[], help="`smvi gaps` override, e.g. steps=5000")
    ap.add_argument("--lanes", type=int, default=1, help="arms (and gap splits) run at once, each on its share "
                    "of the cores [1]")
    ap.add_argument("--executor", default="inprocess", help="sweep executor [inprocess]")
    ap.add_argument("--workers", type=int, default=1, help="sweep workers per lane [1]")
    ap.add_argument("--no-gaps", action="store_true", help="only the sweeps")
    args = ap.parse_args(argv)
    if args.lanes < 1 or args.workers < 1:
        sys.exit("error: --lanes and --workers take a whole number of at least 1")
    try:
        gaps_cfg = build_config(GapConfig, sets=tuple(args.gaps_set))
    except ConfigError as e:
        sys.exit(f"error: --gaps-set: {e}")
    try:  # the study's settings, as its SMVI arm would run them: a bad --set is refused before anything starts
        study = build_config(SweepConfig, preset_base(PRESET), sets=STUDY_SETS + args.sets)
    except ConfigError as e:
        sys.exit(f"error: --set: {e}")
    arms = args.only or list(ARMS)
    dirs = {arm: args.out / arm for arm in arms}
    if args.smvi_sweep is not None and "smvi" in dirs:
        if not (args.smvi_sweep / "runs").is_dir():
            sys.exit(f"error: {args.smvi_sweep} is not a sweep directory (no runs/): check --smvi-sweep")
        try:
            reused = read_sweep(args.smvi_sweep)
        except (ConfigError, OSError) as e:
            sys.exit(f"error: --smvi-sweep {args.smvi_sweep}: {e}")
        differs = (identity_change(reused.run, study.run)
                   or (reused.run.train.epochs != study.run.train.epochs
                       and f"train.epochs is {study.run.train.epochs} but the sweep trains {reused.run.train.epochs}")
                   or (reused.eval != study.eval and "its eval settings differ"))
        if differs:
            sys.exit(f"error: --smvi-sweep {args.smvi_sweep} does not have the study's settings: {differs}; "
                     "match them with --set (e.g. run.train.precision='fp32') or drop --smvi-sweep")
        link = args.out / "smvi"  # so that `smvi report DIR` finds the SMVI arm with the others
        if not (link.exists() or link.is_symlink()):
            args.out.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(args.smvi_sweep.resolve(), args.out.resolve()), target_is_directory=True)
        elif link.resolve() != args.smvi_sweep.resolve():
            sys.exit(f"error: {link} exists and is not --smvi-sweep {args.smvi_sweep}: remove it or drop --smvi-sweep")
        dirs["smvi"] = args.smvi_sweep
    jobs = []
    for arm in sorted(arms, key=lambda a: -COST[a]):
        if arm == "smvi" and args.smvi_sweep is not None:
            continue
        lams, own = ARMS[arm]
        grid = [] if lams is None else [f"lams=[{', '.join(f'{v:g}' for v in lams)}]"]
        opts = [a for s in STUDY_SETS + grid + own + args.sets for a in ("--set", s)]
        sweep = ["sweep", str(dirs[arm]), "--preset", PRESET, *opts, "--executor", args.executor, "--workers",
                 str(args.workers), "--no-report", "--no-progress"]
        jobs.append(Job(arm, lambda sweep=sweep: sweep))
    if not args.no_gaps:  # each after its arm, in whichever lane is free first
        gaps_sets = [a for s in args.gaps_set for a in ("--set", s)]
        for arm in arms:
            for lam in GAPS.get(arm, []):
                rd = RunDir(dirs[arm] / "runs" / run_name(lam, 0))
                jobs.append(Job(f"{arm} gaps {rd.path.name}", lambda rd=rd: _gaps_args(rd, gaps_cfg, gaps_sets),
                                after=arm))
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    failed = _in_lanes(jobs, args.lanes)
    if failed:
        what = "interrupted" if _stop.is_set() else f"{', '.join(failed)} failed (see above)"
        sys.exit(f"error: {what}; rerun this command to resume")


if __name__ == "__main__":
    main()
