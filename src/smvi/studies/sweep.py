"""``smvi sweep``: train and the other stages (:data:`smvi.stages.registry.STAGES`: evaluate, ssl, pictures,
convergence, gaps) over a grid of λ values and seeds, idempotently and resumably.

A sweep directory holds ``sweep.toml`` (the resolved :class:`SweepConfig`), one run directory per (λ, seed) and per
(target, seed) under ``runs/``, and ``sweep_status.json`` (every run's state and, for failures, its error). Each run
is a job of stages — train (resumed from its checkpoint if interrupted), then those of ``stages`` after it, each with
the sweep's section of its name (skipped when the run's record is current: :func:`smvi.store.records.staleness`, the
one freshness rule) — so running the same sweep again does only what is missing, and a failing run is recorded while
the others go on. Executors: ``inprocess`` (default), ``process`` (a local pool whose workers end with it) and ``ray``
(``pip install -e '.[ray]'`` from the source tree; optionally an existing cluster's ``address``, which must answer
within :data:`RAY_CONNECT_TIMEOUT`).

**A sweep never deletes what it did not make.** A run directory holding a run of another identity is retrained from
scratch only when ``--overwrite`` was given *and* the sweep's saved settings (its ``sweep.toml`` as found, before
``--overwrite`` replaces it) plan exactly that run in that slot; any other run there (a sweep without ``sweep.toml``,
a run copied or trained by hand into the slot) is left byte for byte as it is, and the job is recorded as
``refused`` with one line naming the folder and the fix. A damaged run (truncated checkpoint, damaged config) is left
as it is too, recorded as ``damaged``; a run another process holds is ``busy``. The sweep itself holds the lock of
its directory (``SWEEP_DIR/.lock``), so a second sweep on it is refused in one line before anything is written.

A ``sweep.toml`` written before the AIS settings took ais()'s names (``eval.ais_steps``, ...) is read with the keys
renamed (:func:`smvi.settings.stages.upgrade_eval_settings`).
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from smvi.progress import SweepETA, duration, note, stage_priors, sweep_note
from smvi.settings.run import (
    LAM_PLANNED,
    ConfigError,
    ConstraintConfig,
    Distinct,
    NoRepeats,
    RunConfig,
    build_config,
    config_to_toml,
    one_of,
    read_toml,
)
from smvi.settings.stages import (
    ConvergenceConfig,
    EvalConfig,
    GapConfig,
    PicturesConfig,
    RefinedSSLConfig,
    SSLConfig,
    upgrade_eval_settings,
    with_saved_precision,
)
from smvi.stages.registry import STAGES
from smvi.stages.train import train
from smvi.store.atomic import atomic_write_json, atomic_write_text
from smvi.store.records import RecordError
from smvi.store.rundir import (
    RunBusy,
    RunDamaged,
    RunDir,
    RunError,
    fingerprint,
    hold_lock,
    identity_change,
    path_text,
    sweep_paths,
)

__all__ = [
    "SweepConfig",
    "DualSettings",
    "RunSpec",
    "plan",
    "run_job",
    "run_sweep",
    "run_name",
    "target_run_name",
    "load_sweep_tree",
]

StageName = Annotated[str, one_of(STAGES, "stage")]
"""A stage a sweep can run: a name of :data:`smvi.stages.registry.STAGES`."""
AFTER_TRAINING = tuple(s for s in STAGES.values() if s.record is not None)
"""The stages after training, in the order a run does them."""


_SHARED = [k for k in ConstraintConfig.model_fields if k not in ("target", "measure")]
# the learned λ's settings (ConstraintConfig's, less target and measure), one owner. A model built at run time: type
# checkers cannot follow create_model's field definitions, nor use the result as a type (the ignores below).
DualSettings = create_model(  # pyright: ignore[reportCallIssue]
    "DualSettings",
    __config__=ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False),
    __doc__="The learned λ's settings shared by a sweep's target runs: ConstraintConfig's keys but target and measure.",
    **{k: (ConstraintConfig.model_fields[k].annotation, ConstraintConfig.model_fields[k]) for k in _SHARED},  # pyright: ignore[reportArgumentType]
)


class SweepConfig(BaseModel):
    """A grid of (λ and targets) × seed over one base run config, and what to do with each run.

    ``lams`` are fixed-λ runs; ``dsm_targets`` and ``gap_targets`` are constrained runs (λ learned so that the
    training D_SM, or the IWAE_k − ELBO gap estimate, meets the target: ``train.constraint``), with the learned λ's
    settings from ``constraint``. Any of the three may be empty, not all."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lams: Annotated[tuple[NonNegativeFloat, ...], NoRepeats] = Field(default=(0.0, 0.01, 0.1), description="λ values")
    dsm_targets: Annotated[tuple[PositiveFloat, ...], NoRepeats] = Field(
        default=(), description="D_SM targets ε: one constrained run each (train.constraint.measure = 'dsm')"
    )
    gap_targets: Annotated[tuple[PositiveFloat, ...], NoRepeats] = Field(
        default=(), description="ELBO-gap targets in nats (IWAE_k − ELBO per batch): one constrained run each"
    )
    constraint: DualSettings = Field(  # pyright: ignore[reportInvalidTypeForm]
        default=DualSettings(), description="the learned λ's settings of the target runs"
    )
    seeds: Annotated[tuple[NonNegativeInt, ...], Distinct] = Field(default=(0,), description="training seeds")
    stages: Annotated[tuple[StageName, ...], Distinct] = Field(
        default=("train", "evaluate", "ssl"), description="what each run does, each stage with the section of its name"
    )
    run: RunConfig = RunConfig()
    eval: EvalConfig = EvalConfig()
    ssl: SSLConfig = SSLConfig()
    pictures: PicturesConfig = PicturesConfig()
    convergence: ConvergenceConfig = Field(default=ConvergenceConfig(), description="settings of the convergence stage")
    gaps: GapConfig = Field(default=GapConfig(), description="settings of the gaps stage")
    ssl_refined: RefinedSSLConfig = Field(default=RefinedSSLConfig(), description="settings of the ssl-refined stage")

    @field_validator("run", mode="before")
    @classmethod
    def _base_run(cls, run: Any) -> Any:
        """The base run, whose λ no run keeps (each has one of ``lams``, or a target): checked but for what needs its
        λ (:data:`~smvi.settings.run.LAM_PLANNED`), which ``_coherent`` checks on every planned run."""
        return RunConfig.model_validate(run, context={LAM_PLANNED: True}) if isinstance(run, dict) else run

    @model_validator(mode="after")
    def _coherent(self) -> SweepConfig:
        targets, base = self.dsm_targets + self.gap_targets, self.run.train
        if not (self.lams or targets):
            raise ValueError("lams, dsm_targets and gap_targets are all empty: give at least one λ or target")
        if base.constraint.target is not None and (targets or any(self.lams)):
            raise ValueError(
                "run.train.constraint.target is set, which would make every run learn λ: drop it and "
                "list the targets in dsm_targets / gap_targets (their λ settings go in [constraint])"
            )
        if targets and base.lam_warmup_epochs:
            raise ValueError(
                "run.train.lam_warmup_epochs is set and the sweep has targets: a learned λ has no "
                "warm-up; drop the warm-up or run the targets in another sweep"
            )
        changed = [k for k in _SHARED if getattr(self.constraint, k) != ConstraintConfig.model_fields[k].default]
        if changed and not targets:
            raise ValueError(
                f"constraint.{changed[0]} is set but dsm_targets and gap_targets are empty: add targets or drop it"
            )
        if "gap_k" in changed and not self.gap_targets:
            raise ValueError("constraint.gap_k is set but gap_targets is empty: it only serves gap targets")
        if targets:  # lam_min <= lam_init <= lam_max
            try:
                ConstraintConfig(target=1.0, **self.constraint.model_dump())
            except ValidationError as e:
                raise ValueError(f"constraint: {e.errors()[0]['msg']}") from None
        for name, update in _grid(self, self.seeds[0]):  # each run as planned: what needs λ, with the run's own
            try:
                RunConfig.model_validate({**self.run.model_dump(), "train": {**base.model_dump(), **update}})
            except ValidationError as e:
                err = e.errors()[0]
                where = f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else ""
                raise ValueError(f"run {name}: {where}{err['msg'].removeprefix('Value error, ')}") from None
        return self


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its directory name, config and SSL settings, and ``made``: the fingerprint of the run the
    sweep's saved settings planned in this slot when ``--overwrite`` lets it replace that run (else None)."""

    name: str
    config: RunConfig
    ssl: SSLConfig
    made: str | None = None


def _exact(x: float) -> str:
    """``{x:g}`` when it reads back as exactly x (0.01, 1e-05), else ``repr(x)`` (0.1000001)."""
    short = f"{x:g}"
    return short if math.isfinite(x) and float(short) == x else repr(x)


def run_name(lam: float, seed: int) -> str:
    """``lam{λ}_seed{seed}``, λ written by the shortest form that reads back exactly (``lam0.01_seed0``,
    ``lam0.1000001_seed0``): distinct λ never share a directory, and the names of existing sweeps are unchanged."""
    return f"lam{_exact(lam)}_seed{seed}"


def target_run_name(measure: str, target: float, seed: int) -> str:
    """A constrained run's name, ``{measure}{ε}_seed{seed}`` (``dsm300_seed0``, ``gap1_seed0``), ε written as λ is
    in :func:`run_name`: never the name of a fixed-λ run, nor of another target."""
    return f"{measure}{_exact(target)}_seed{seed}"


def load_sweep_tree(tree: dict) -> dict:
    """A sweep config tree with old eval keys renamed (see the module docstring); one-line ConfigError if both the
    old and the new spelling of a key are set."""
    if isinstance(tree.get("eval"), dict):
        try:
            tree = {**tree, "eval": upgrade_eval_settings(tree["eval"])}
        except ValueError as e:
            raise ConfigError(f"invalid sweep config: eval: {e}") from None
    return tree


def _grid(sweep: SweepConfig, seed: int) -> list[tuple[str, dict]]:
    """The runs of one seed as (name, updates of the base ``train`` section): every λ, then every D_SM target, then
    every gap target; a target run has λ = 0 and ``train.constraint`` = the target, its measure and ``constraint``."""
    out = [(run_name(lam, seed), {"lam": lam, "seed": seed}) for lam in sweep.lams]
    measures: tuple[tuple[Literal["dsm", "gap"], tuple[float, ...]], ...] = (
        ("dsm", sweep.dsm_targets),
        ("gap", sweep.gap_targets),
    )
    for measure, targets in measures:
        for t in targets:
            c = ConstraintConfig(target=t, measure=measure, **sweep.constraint.model_dump())
            out.append((target_run_name(measure, t, seed), {"lam": 0.0, "seed": seed, "constraint": c}))
    return out


def plan(sweep: SweepConfig) -> list[RunSpec]:
    """One run per (λ, seed) and per (target, seed), named by :func:`run_name` / :func:`target_run_name`, each the
    base config with λ (or the target) and seed set, seed by seed (every run of the first seed comes first, so an
    interrupted sweep has whole λ curves). The raw-pixel SSL baseline does not depend on the run, so only the first
    run computes it. Two runs with one name are refused (ConfigError)."""
    grid = [g for seed in sweep.seeds for g in _grid(sweep, seed)]
    names = [name for name, _ in grid]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"values {dup[0]} collide in one run name: list each λ and target once")
    specs = []
    for name, update in grid:
        train_cfg = sweep.run.train.model_copy(update=update)
        ssl_cfg = sweep.ssl if not specs else sweep.ssl.model_copy(update={"raw_pixels": False})
        specs.append(RunSpec(name, sweep.run.model_copy(update={"train": train_cfg}), ssl_cfg))
    return specs


STAGE_RECORDS = {s.name: s.record for s in AFTER_TRAINING if s.record is not None}
"""The stages after training, in order, and the record each writes (:meth:`smvi.store.rundir.RunDir.record_path`)."""


def stage_settings(stage, spec: RunSpec, sweep: SweepConfig) -> tuple:
    """The settings whose record serves ``stage`` for ``spec``'s run, the one to run with first: the run's own (a
    :class:`RunSpec` field of the stage's key, e.g. ``ssl``) or else the sweep's section of that key."""
    return STAGES[stage].served(getattr(spec, STAGES[stage].key, None) or getattr(sweep, STAGES[stage].key))


def read_sweep(sweep_dir: str | Path) -> SweepConfig:
    """The settings a sweep directory saved (``sweep.toml``, old eval keys upgraded); a one-line ConfigError if they
    are invalid."""
    path = sweep_paths(sweep_dir)[0]
    tree = load_sweep_tree(read_toml(path))
    for stage in ("eval", "convergence", "gaps"):  # saved before ais.precision existed: they ran in fp32
        if isinstance(tree.get(stage), dict):
            tree[stage] = with_saved_precision(tree[stage])
    return build_config(SweepConfig, tree, source=f" in {path}")


def _stale(rd: RunDir, stage: str, cfgs) -> bool:
    """Whether ``stage`` must run: no current record serves any of ``cfgs`` (:func:`smvi.store.records.staleness`)."""
    return all(rd.current_record(STAGE_RECORDS[stage], c)[1] is not None for c in cfgs)


class Refused(RunError):
    """A run slot the sweep leaves as it is (a run it did not make, a damaged or a busy run); ``status`` is what
    ``sweep_status.json`` records for it: ``refused``, ``damaged`` or ``busy``."""

    def __init__(self, message: str, status: str = "refused"):
        super().__init__(message)
        self.status = status


_LEAVE = "the sweep leaves it as it is"


def _slot(spec: RunSpec, sweep: SweepConfig, rd: RunDir) -> str | None:
    """Why the run in ``spec``'s slot is retrained from scratch (it is of another identity and the sweep made it:
    ``spec.made``), or None when it is new, resumed or reused; :class:`Refused` for any other run there, or a damaged
    one (module docstring). Reads only."""
    try:
        if rd.has_run() and not rd.config_path.exists():
            raise RunDamaged(f"{rd.config_path} is missing though training files are there")
        saved = rd.read_config() if rd.config_path.exists() else None
        rd.epochs_done()  # a damaged checkpoint header is named here, before any work
    except RunDamaged as e:
        raise Refused(
            f"{e.problem}; {_LEAVE}: restore the file, or remove {rd.path} and rerun the same command", "damaged"
        ) from None
    change = identity_change(saved, spec.config) if saved is not None else None
    if saved is None or not change:
        return None
    if spec.made != fingerprint(saved):
        raise Refused(
            f"{rd.path} holds a run this sweep did not make ({change}); {_LEAVE}: move it out of "
            "runs/ (or use another sweep directory) and rerun the same command"
        )
    if "train" not in sweep.stages:
        raise Refused(
            f"{rd.path} holds the sweep's earlier run ({change}) and train is not among the stages; "
            f"{_LEAVE}: add train to the stages to retrain it"
        )
    return change


def _epochs_left(spec: RunSpec, sweep: SweepConfig, rd: RunDir) -> tuple[int, str | None]:
    """(epochs to train, why the run is retrained from scratch or None): see :func:`_slot`."""
    other = _slot(spec, sweep, rd)
    return max(0, spec.config.train.epochs - (0 if other else rd.epochs_done())), other


def slot_problem(spec: RunSpec, sweep: SweepConfig, run_dir: str | Path) -> tuple[str, str] | None:
    """``(status, message)`` when the sweep leaves ``spec``'s run as it is (:class:`Refused`), else None."""
    try:
        _slot(spec, sweep, RunDir(run_dir))
    except Refused as e:
        return e.status, str(e)
    except RunError:  # anything else is the job's to report
        pass
    return None


def run_job(
    spec: RunSpec, sweep: SweepConfig, run_dir: str | Path, *, progress: bool = False, threads: int | None = None
) -> dict:
    """Do whatever ``spec``'s run still needs; never raises: returns ``{"name", "status", "done", "seconds",
    "epochs", "error"?}`` (``seconds``: the wall time of each stage it ran; ``epochs``: how many it trained)."""
    run_dir = Path(run_dir)
    if threads:
        torch.set_num_threads(threads)
    done: list[str] = []
    seconds: dict[str, float] = {}
    epochs = 0
    rd = RunDir(run_dir)
    try:
        left, other = _epochs_left(spec, sweep, rd)  # refuses a run the sweep did not make, or a damaged one
        if "train" in sweep.stages and left:
            epochs, t = left, time.perf_counter()
            train(spec.config, run_dir, resume=rd.has_run() and not other, overwrite=bool(other), progress=progress)
            seconds["train"] = round(time.perf_counter() - t, 2)
            done.append("train" + (f" (retrained: {other})" if other else ""))
        for stage in AFTER_TRAINING:
            cfgs = stage_settings(stage.name, spec, sweep)
            if stage.name in sweep.stages and _stale(rd, stage.name, cfgs):
                t = time.perf_counter()  # on the device the run trained on (train.device; auto: a GPU if any)
                stage.run(run_dir, cfgs[0], overwrite=True, progress=progress, device=spec.config.train.device)
                seconds[stage.name] = round(time.perf_counter() - t, 2)
                done.append(stage.name)
    except (Refused, RunBusy) as e:  # left as it is; the others go on
        return {
            "name": spec.name,
            "status": getattr(e, "status", "busy"),
            "done": done,
            "seconds": seconds,
            "epochs": epochs,
            "error": str(e),
        }
    except Exception as e:  # noqa: BLE001 -- a failing run is recorded and the sweep goes on
        last = traceback.extract_tb(e.__traceback__)[-1]
        return {
            "name": spec.name,
            "status": "failed",
            "done": done,
            "seconds": seconds,
            "epochs": epochs,
            "error": f"{type(e).__name__}: {e} (at {Path(last.filename).name}:{last.lineno})",
        }
    return {"name": spec.name, "status": "ok", "done": done, "seconds": seconds, "epochs": epochs}


def pending_work(spec: RunSpec, sweep: SweepConfig, run_dir: str | Path) -> dict[str, int]:
    """What ``spec``'s run still needs, as :class:`~smvi.progress.SweepETA` counts it: ``{"epochs": e, "evaluate": 0
    or 1, "ssl": 0 or 1, …}``, one entry per stage after training (the decisions of :func:`run_job`, made up front).
    An unreadable run counts as all of its work: this is an estimate, never an error."""
    rd = RunDir(run_dir)
    names = [s.name for s in AFTER_TRAINING]
    try:
        epochs = _epochs_left(spec, sweep, rd)[0] if "train" in sweep.stages else 0
        stale = {s: epochs > 0 or _stale(rd, s, stage_settings(s, spec, sweep)) for s in names if s in sweep.stages}
    except Refused:  # the sweep will leave it as it is
        return {"epochs": 0, **dict.fromkeys(names, 0)}
    except Exception:  # noqa: BLE001 -- run_job will say what is wrong with it
        epochs = spec.config.train.epochs if "train" in sweep.stages else 0
        stale = dict.fromkeys(names, True)
    return {"epochs": epochs, **{s: int(s in sweep.stages and stale[s]) for s in names}}


def sweep_priors(sweep: SweepConfig) -> dict[str, float]:
    """:func:`smvi.progress.stage_priors` for the sweep's model and the settings of each of its stages."""
    return stage_priors(sweep.run, sweep.eval, settings={s.key: getattr(sweep, s.key) for s in AFTER_TRAINING})


def measured_times(eta: SweepETA, run_dirs, last: int = 20) -> None:
    """Give ``eta`` the times the runs' own files record, so that a resumed sweep (or ``smvi status``) starts from
    measurements rather than priors: the last ``last`` epochs of each run (``metrics.jsonl``'s ``seconds``) and each
    record's ``seconds``. Unreadable files add nothing: this is an estimate, never an error."""
    for run_dir in run_dirs:
        rd = RunDir(run_dir)
        seconds, epochs = {}, 0
        try:
            times = [m["seconds"] for m in rd.read_metrics()[-last:] if isinstance(m.get("seconds"), (int, float))]
            seconds["train"], epochs = float(sum(times)), len(times)
        except (RunError, OSError):
            pass
        for stage, kind in STAGE_RECORDS.items():
            try:
                rec = rd.read_record(kind)
            except (RecordError, RunError, OSError):
                rec = None
            if s := getattr(rec, "seconds", None):
                seconds[stage] = float(s)
        eta.finished(f"measured: {rd.path}", seconds, epochs=epochs)


def _writing(sweep_dir: Path, fn, *args) -> None:
    """Run a write in the sweep directory, a failure (disk full, permissions) becoming one-line RunError."""
    try:
        fn(*args)
    except OSError as e:
        raise RunError(
            f"cannot write in {sweep_dir} ({e.strerror or e}); finished work is kept: free space or fix "
            "permissions, then rerun the same command"
        ) from None


def _differences(saved: dict, asked: dict, prefix: str = "") -> list[str]:
    """Every setting (dotted key) whose saved and asked values differ, as "key (saved X, asked Y)"."""
    out = []
    for k in sorted(saved.keys() | asked.keys()):
        a, b = saved.get(k), asked.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} (saved {a!r}, asked {b!r})")
    return out


def _prepare(sweep: SweepConfig, sweep_dir: Path, overwrite: bool) -> None:
    path = sweep_paths(sweep_dir)[0]
    text = config_to_toml(sweep)
    if path.exists() and not overwrite:
        saved = read_sweep(sweep_dir)
        if diffs := _differences(saved.model_dump(), sweep.model_dump()):
            shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
            raise ConfigError(
                f"{path} holds a different sweep ({shown}): rerun with the same settings (--set KEY=VALUE) to "
                "resume it, use another "
                "directory, or pass --overwrite to replace its settings (finished runs of an unchanged identity "
                "are reused, the sweep's runs of another identity retrained)"
            )
    _writing(sweep_dir, lambda: (sweep_dir.mkdir(parents=True, exist_ok=True), atomic_write_text(path, text)))


def run_sweep(
    sweep: SweepConfig,
    sweep_dir: str | Path,
    *,
    executor: Literal["inprocess", "process", "ray"] = "inprocess",
    workers: int = 1,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> list[dict]:
    """Run every job of the sweep (see the module docstring); returns and saves each run's status.

    ``threads``: torch threads per run; None gives each of a pool's ``workers`` the usable cores shared out
    (:func:`worker_threads`) and leaves the in-process executor's as they are. Set it when other jobs share the cores:
    the usable cores are those of the process's CPU affinity, whoever else runs on them.

    ``sweep_status.json`` is written at the start (every run ``pending``, and ``workers``: the runs side by side) and
    rewritten as each run finishes, and with ``progress`` each finished run prints one line, so a long sweep on any
    executor can be followed."""
    sweep_dir = path_text(sweep_dir, "sweep directory")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    specs = plan(sweep)  # refuses colliding run names before anything is written
    _writing(sweep_dir, lambda: sweep_dir.mkdir(parents=True, exist_ok=True))
    with hold_lock(sweep_dir / ".lock", f"sweep directory {sweep_dir}"):  # one sweep at a time in a directory
        made = _made(sweep_dir) if overwrite else {}  # before _prepare replaces the saved settings
        _prepare(sweep, sweep_dir, overwrite)
        return _run_specs(
            [replace(s, made=made.get(s.name)) for s in specs],
            sweep,
            sweep_dir,
            executor,
            workers,
            address,
            progress,
            threads,
        )


def _made(sweep_dir: Path) -> dict[str, str]:
    """The fingerprint of every run the sweep's saved settings plan, by run name ({} without readable settings):
    the runs ``--overwrite`` may retrain (module docstring)."""
    try:
        return {s.name: fingerprint(s.config) for s in plan(read_sweep(sweep_dir))}
    except (ConfigError, RunError, OSError):
        return {}


def _run_specs(
    specs: list[RunSpec],
    sweep: SweepConfig,
    sweep_dir: Path,
    executor: str,
    workers: int,
    address: str | None,
    progress: bool,
    threads: int | None = None,
) -> list[dict]:
    names = [s.name for s in specs]
    _, status_path, runs_dir = sweep_paths(sweep_dir)
    dirs = {s.name: runs_dir / s.name for s in specs}
    if threads is None and executor != "inprocess":
        threads = worker_threads(workers)
    results: dict[str, dict] = {}
    eta = None
    jobs = workers if executor != "inprocess" else 1  # runs side by side
    if progress:
        work = {s.name: pending_work(s, sweep, dirs[s.name]) for s in specs}
        eta = SweepETA(work, sweep_priors(sweep), jobs)
        measured_times(eta, dirs.values())
        note(sweep_note(sweep_dir, work, eta))

    def write_status() -> None:
        _writing(
            sweep_dir,
            atomic_write_json,
            status_path,
            {
                "runs": [results[n] for n in names if n in results],
                "pending": [n for n in names if n not in results],
                "workers": jobs,
            },
        )

    def record(r: dict) -> None:
        results[r["name"]] = r
        write_status()
        if eta is not None:
            sec = r.get("seconds", {})  # the stages it ran, and the epochs its training stage trained
            eta.finished(r["name"], sec, r.get("epochs", 0))
            what = ", ".join(r["done"]) or "nothing left to do"
            took = f" in {duration(sum(sec.values()))}" if sec else ""
            note(
                f"[{len(results)}/{len(specs)} runs] {r['name']}: {r['status']} ({what}){took}"
                + (f": {r['error']}" if "error" in r else "")
                + f"; {eta.eta()}"
            )

    write_status()  # from the start: every run pending, and how many run side by side (smvi status reads it)
    if executor == "inprocess":
        caller = torch.get_num_threads()
        try:
            for s in specs:
                note(f"{s.name} ...", progress)  # a header for the run's progress
                record(run_job(s, sweep, dirs[s.name], progress=progress, threads=threads))
        finally:  # the runs' thread count is theirs, not the caller's after the sweep
            torch.set_num_threads(caller)
    elif executor == "process":
        _run_pool(specs, sweep, dirs, workers, threads, record)
    elif executor == "ray":
        _run_ray(specs, sweep, dirs, address, threads, record)
    else:
        raise ConfigError(f"unknown executor {executor!r}: use inprocess, process or ray")
    return [results[n] for n in names]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or ``taskset``'s limit), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def worker_threads(workers: int) -> int:
    """Torch threads per worker of a ``workers``-process pool: the usable cores shared out, at least one. On 2 cores
    two 1-thread runs side by side beat one 2-thread run at a time (benchmarks/README.md, "concurrent runs")."""
    return max(1, usable_cores() // workers)


def _worker_signals(parent: int | None = None) -> None:
    """A pool worker's initializer. Ctrl-C, which a terminal sends to the whole process group, is the parent's alone
    to act on (:func:`_run_pool` terminates the workers); otherwise each worker would also raise KeyboardInterrupt in
    its job and send it back as the job's result while the parent tears the pool down. SIGTERM, the parent's way of
    stopping a worker, ends it at once (the default), whatever handler the worker inherited from the parent. And the
    worker ends when ``parent`` (the sweep) dies, however it dies (:func:`_end_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is not None:
        _end_with_parent(parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_with_parent(parent: int, every: float = 1.0) -> None:
    """Make this process end when the process ``parent`` dies (SIGKILL, the OOM killer): otherwise a pool's workers
    train on as orphans, holding their runs' locks. On Linux the kernel sends SIGKILL at the parent's death
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread checks every ``every`` seconds that the parent is
    alive and this process still its child, and ends it otherwise. What a killed job leaves is safe to resume."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1 (Linux); absent elsewhere: AttributeError
    except (OSError, AttributeError):
        pass
    ppid = os.getppid()

    def watch() -> None:
        while os.getppid() == ppid and _alive(parent):
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGKILL)

    if not _alive(parent):  # it died before this worker started watching
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="smvi-parent-watch", daemon=True).start()


def _run_pool(specs, sweep, dirs, workers: int, threads: int | None, record, retries: int = 2) -> None:
    """Run the jobs in a local process pool, passing each result to ``record``. A worker that dies (killed, out of
    memory) breaks the pool: the jobs it took down are retried in a fresh pool (their training resumes from its
    checkpoint), up to ``retries`` times. Ctrl-C (or any exception here: the CLI raises SIGTERM as one) stops the
    workers at once and cancels the queued jobs: a worker's job would otherwise swallow the interrupt and the pool
    wait for every queued job. The workers ignore SIGINT themselves (:func:`_worker_signals`). What a stopped job
    leaves is safe to resume (checkpoints and records are written atomically)."""
    todo = list(specs)
    for _ in range(retries + 1):
        lost = []
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_signals, initargs=(os.getpid(),))
        try:
            futures = {pool.submit(run_job, s, sweep, dirs[s.name], threads=threads): s for s in todo}
            for f in as_completed(futures):
                try:
                    record(f.result())
                except BrokenProcessPool:
                    lost.append(futures[f])
        except BaseException:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public way to stop workers
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        todo = lost
        if not todo:
            break
    for s in todo:
        record(
            {"name": s.name, "status": "failed", "done": [], "error": f"its worker process died {retries + 1} times"}
        )


RAY_CONNECT_TIMEOUT = 10.0
"""Seconds a Ray cluster's address has to answer before the sweep gives up on it (:func:`_check_address`)."""


def _check_address(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Refuse (one-line ConfigError) a Ray address ``host:port`` (or ``ray://host:port``) where nothing answers
    within ``timeout`` seconds: ``ray.init`` would wait for it without end and without heeding SIGTERM. ``auto``,
    ``local`` and None are Ray's to resolve."""
    if address is None or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"Ray address {address!r} is not host:port (nor ray://host:port): fix --address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(
            f"the Ray cluster at {address} does not answer ({e.strerror or e}): start it "
            "(ray start --head) or fix --address; drop --address to start a local Ray"
        ) from None


def _run_ray(specs, sweep, dirs, address, threads, record, poll: float = 1.0) -> None:
    """Run the jobs as Ray tasks, passing each result to ``record``. Ctrl-C and SIGTERM stop it as they stop the
    other executors: the caller's handlers (the CLI raises them in this thread) are put back after ``ray.init``
    installs its own, and the results are awaited in ``poll``-second steps so that the handlers get to run."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install -e '.[ray]' from the smvi source tree") from None
    started = not ray.is_initialized()
    if started:
        _check_address(address)
        main = threading.current_thread() is threading.main_thread()
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        for sig, handler in handlers.items():  # Ray's own handler aborts the driver: keep the caller's
            if handler is not None:
                signal.signal(sig, handler)
    try:
        remote = ray.remote(num_cpus=threads or 1)(run_job)
        # ray's stubs give .remote() only the positional parameters of the function
        pending = [remote.remote(s, sweep, str(dirs[s.name]), threads=threads) for s in specs]  # pyright: ignore[reportCallIssue]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=poll)
            for ref in ready:
                record(ray.get(ref))
    finally:
        if started:
            ray.shutdown()
