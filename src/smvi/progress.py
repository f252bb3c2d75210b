"""Progress and time: one home for what smvi prints while it works, and for the time figures it expects.

**Displays.** Every stage (train, evaluate, ssl, convergence, gaps, AIS, and the sweep around them) reports through
:class:`Progress`, in one of three modes chosen once per display (:func:`display_mode`):

- ``"bar"``: a tqdm bar, when stderr is a terminal (or a Jupyter kernel);
- ``"lines"``: plain lines when it is not (a log file, a pipe, CI) — one after the first epoch of a training run, then
  at most one every :data:`EVERY_S` seconds, and one at the end, e.g.
  ``train lam0.01_seed0: epoch 12/300 done, 4.9 s/epoch, ETA 23 min``;
- ``"off"``: nothing (``progress=False`` in the library, ``--no-progress`` on the command line).

``$SMVI_PROGRESS`` = ``bar``, ``lines`` or ``off`` overrides the terminal test (``progress=False`` always wins), and
:class:`Progress` takes ``tty``, ``stream``, ``clock`` and ``every`` so that tests can inject them. Progress goes to
stderr and results to stdout: ``smvi ssl RUN > table.txt`` keeps the table alone.

**Time figures.** The rough costs below are the priors a job quotes before it has measured itself
(:func:`expected_epoch_seconds`); once a training run has finished an epoch, or a sweep a stage, its own measurements
replace them (:class:`SweepETA`). The named presets' measured end-to-end times are in :mod:`smvi.studies.presets`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from smvi.settings.objectives import OBJECTIVES
from smvi.settings.run import ConfigError, ModelConfig
from smvi.settings.stages import STAGES

__all__ = [
    "Progress",
    "SweepETA",
    "display_mode",
    "duration",
    "note",
    "label_of",
    "expected_epoch_seconds",
    "stage_priors",
    "training_note",
    "sweep_note",
    "EPOCH_SECONDS",
]

EVERY_S = 30.0
"""Seconds between two plain progress lines."""

EPOCH_SECONDS = {"fp32": 9.0, "bf16": 4.0}
"""Seconds per SMVI training epoch (λ > 0) of the paper's model (``ModelConfig()``: 2×1024 softplus, z = 50) on
60 000 images at batch 512, with the per-epoch monitor and checkpoint, on 2 idle CPU cores (2 torch threads):
benchmarks/README.md measured 6.8 s (fp32) and 2.8 s (bf16) for the bare epoch on an idle 2-core Xeon, and a
300-epoch run took about 45 min (issue 15). Rough: λ = 0 skips D_SM (about 1.4× faster); a loaded machine is slower
(the quick preset at load ≈ 7: 15–59 s per fp32 epoch at λ = 0, 130–222 s at λ > 0)."""

AIS_GRADIENTS_PER_S = 10_000.0
"""AIS gradient evaluations (points × chains × steps × leapfrog steps) per second on 2 CPU cores for the paper's
model: the cpu preset's evaluations (2·10⁶ each, with their ELBO, D_SM and IWAE) took about 5.6 min per one-thread
process, two side by side (README, Results), i.e. about 12 000 per second for the machine."""

IWAE_SAMPLES_PER_S = 1e4
"""IWAE samples (images × k) per second on 2 CPU cores for the paper's model: k = 1000 on 500 test images took
48.6 s (README, Evaluation), so the whole test set at k = 1000 takes about 16 min."""

SSL_SECONDS = 60.0
"""One ``ssl`` stage, a rough middle: 2.5 min at the defaults with the raw-pixel baseline (SSLConfig), well under a
minute without it or on a test subset."""

PICTURES_SECONDS = 10.0
"""One ``pictures`` stage, a rough middle: 1–4 s with PCA, 15–24 s with t-SNE for a 300-epoch paper model."""

_MODES = ("bar", "lines", "off")


def display_mode(enabled: bool, stream: TextIO | None = None, tty: bool | None = None) -> str:
    """``"off"`` unless ``enabled``; else ``tty`` if given (True: ``"bar"``, False: ``"lines"``), else
    ``$SMVI_PROGRESS``, else ``"bar"`` when ``stream`` (default stderr) is a terminal or this is a Jupyter kernel."""
    if not enabled:
        return "off"
    if tty is not None:
        return "bar" if tty else "lines"
    env = os.environ.get("SMVI_PROGRESS", "").strip().lower()
    if env:
        if env not in _MODES:
            raise ConfigError(f"SMVI_PROGRESS={env!r}: use bar, lines or off (or unset it)")
        return env
    out = stream if stream is not None else sys.stderr  # sys.stderr may be None (pythonw): caught below
    try:
        terminal = out.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        terminal = False
    return "bar" if terminal or _in_notebook() else "lines"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ip = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def duration(seconds: float | None) -> str:
    """A duration for people: ``"42 s"``, ``"23 min"``, ``"2 h 05 min"``; ``"?"`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def _rate(per_unit_s: float, unit: str) -> str:
    """``"4.9 s/epoch"`` (always, for epochs) or ``"37.2 images/s"``, whichever reads better."""
    if per_unit_s >= 1 or unit == "epoch":
        return f"{per_unit_s:.3g} s/{unit}"
    return f"{1 / per_unit_s:.3g} {_plural(unit, 2)}/s"


def _plural(unit: str, n: float) -> str:
    return unit if n == 1 or unit.endswith("s") else unit + "s"


class Progress:
    """Progress of one stage over ``total`` units (steps, points, AIS steps), in the mode of :func:`display_mode`.

    ``label`` names the stage and its run (``"evaluate lam0_seed0"``); :meth:`relabel` moves it to the next part of
    the stage (``"evaluate lam0_seed0: train split"``). With ``epoch_steps`` (training) the units are optimizer steps
    and progress is told in epochs: the bar reads ``train vae epoch 12/300`` (the epoch in progress) and each line
    ``epoch 12/300, 4.9 s/epoch, ETA 23 min`` (in progress) or ``epoch 12/300 done, …`` (at the epoch's end).
    ``initial`` units were done before this process (a resumed run); rates and ETAs count only what this process
    did. A context manager: leaving it prints the last line (``done`` or ``stopped``).
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "it",
        initial: int = 0,
        epoch_steps: int | None = None,
        enabled: bool = True,
        leave: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = self.stage = label  # what it is doing now; the whole stage (for the last line)
        self.total, self.unit, self.initial, self.n = total, unit, initial, initial
        self.epoch_steps = epoch_steps
        self.stream = stream if stream is not None else sys.stderr
        self.mode = display_mode(enabled, self.stream, tty)
        self.every, self.clock = every, clock
        self.t0 = self.last = clock()
        self.closed = False
        self.told_first = False  # the line after the first epoch
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=self._desc(),
                unit=unit,
                leave=leave,
                dynamic_ncols=True,
                file=self.stream,
            )

    # -- what the caller does
    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            if self.epoch_steps and (self.n - n) // self.epoch_steps != self.n // self.epoch_steps:
                self.bar.set_description(self._desc(), refresh=False)
        elif self.mode == "lines":
            now = self.clock()
            first = bool(self.epoch_steps) and not self.told_first and self.n - self.initial >= self.epoch_steps
            self.told_first = self.told_first or first
            if self.n < self.total and (first or now - self.last >= self.every):  # the end has its own line
                self._print(self.status(now))
                self.last = now

    def postfix(self, values: dict) -> None:
        """Values shown beside the bar (the batch's terms); plain lines leave them out."""
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def relabel(self, label: str) -> None:
        """The stage moved on (another split, another feature set)."""
        self.label = label
        if self.bar is not None:
            self.bar.set_description(self._desc(), refresh=False)

    def write(self, message: str, *, always: bool = False) -> None:
        """One line (a note or, with ``always``, a warning that is printed even when progress is off), above the
        bar if there is one."""
        if self.mode == "off" and not always:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self._print(message)

    def close(self, stopped: bool = False) -> None:
        """End the display; in lines mode, one last line (``done in ...`` or, with ``stopped``, where it stopped)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and (stopped or self.n > self.initial):
            now = self.clock()
            self._print(
                self.status(now, stopped=stopped) if stopped or self.n < self.total else self._done(now - self.t0)
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(stopped=exc_type is not None)

    # -- what is shown
    def status(self, now: float | None = None, *, stopped: bool = False) -> str:
        """The plain line for the current state: where it is, the rate and the ETA from this process's pace."""
        now = self.clock() if now is None else now
        done, elapsed = self.n - self.initial, now - self.t0
        per = elapsed / done if done > 0 and elapsed > 0 else None
        left = None if per is None else per * (self.total - self.n)
        if self.epoch_steps:  # at an epoch's end the epoch just done, else the one in progress
            (k, part), epochs = divmod(self.n, self.epoch_steps), self.total // self.epoch_steps
            where = f"epoch {k + 1}/{epochs}" if part else f"epoch {k}/{epochs} done"
            rate = _rate(per * self.epoch_steps, "epoch") if per else None
        else:
            where = f"{self.n}/{self.total} {_plural(self.unit, self.total)}"
            rate = _rate(per, self.unit) if per else None
        parts = [where] + ([rate] if rate else [])
        parts.append(f"stopped after {duration(elapsed)}" if stopped else f"ETA {duration(left)}")
        return f"{self.label}: " + ", ".join(parts)

    def _done(self, elapsed: float) -> str:
        done = self.n - self.initial
        if self.epoch_steps:
            epochs = done / self.epoch_steps
            return (
                f"{self.stage}: epoch {self.n // self.epoch_steps}/{self.total // self.epoch_steps} done, "
                f"{epochs:.3g} {_plural('epoch', epochs)} in {duration(elapsed)} "
                f"({_rate(elapsed / epochs, 'epoch')})"
            )
        return f"{self.stage}: done, {done} {_plural(self.unit, done)} in {duration(elapsed)}"

    def _desc(self) -> str:
        if not self.epoch_steps:
            return self.label
        epochs = self.total // self.epoch_steps
        return f"{self.label} epoch {min(self.n // self.epoch_steps + 1, epochs)}/{epochs}"

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _evaluate_seconds(e) -> float:
    """One evaluation: its AIS gradients (test and train subsets) and its whole-test-set IWAE samples."""
    gradients = (e.n_test + e.n_train) * e.ais.chains * e.ais.steps * e.ais.leapfrog_steps
    return gradients / AIS_GRADIENTS_PER_S + 10_000 * e.iwae_full_test_k / IWAE_SAMPLES_PER_S


def _convergence_seconds(c) -> float:
    """One convergence check: BDMC (forward and reverse) and the AIS ladder, each over every length, as AIS gradients
    (the paper's model: 2689 s for 4 lengths up to 2000 on 50 points, two jobs side by side, is 1.2× this)."""
    return 3 * c.n_points * c.ais.chains * c.ais.leapfrog_steps * sum(c.steps) / AIS_GRADIENTS_PER_S


def _gaps_seconds(g) -> float:
    """One gap split: AIS for log p(x), then the local fit's steps × draws, counted as AIS gradients (the frontier
    study's paper-sized runs: 500–1500 s with two jobs side by side, against 580 s here)."""
    gradients = g.n_points * (g.ais.chains * g.ais.steps * g.ais.leapfrog_steps + g.steps * g.n_samples)
    return gradients / AIS_GRADIENTS_PER_S


def _ssl_refined_seconds(r) -> float:
    """One ssl-refined: every image's local fit (steps × draws, counted as AIS gradients; the images: at most
    subsets × the largest s labeled ones, and the test subset), then the robust protocol twice."""
    images = min(60_000, len(r.seeds) * max(r.sizes)) + (r.test_size or 10_000)
    return images * r.steps * r.n_samples / AIS_GRADIENTS_PER_S + 2 * SSL_SECONDS


_PRIORS = {
    "evaluate": _evaluate_seconds,
    "convergence": _convergence_seconds,
    "gaps": _gaps_seconds,
    "ssl-refined": _ssl_refined_seconds,
}
"""Seconds of one run of a stage of :data:`smvi.settings.stages.STAGES` from its settings, for the paper's model."""
_FIXED = {"ssl": SSL_SECONDS, "pictures": PICTURES_SECONDS}
"""Seconds of one run of a stage, whatever the model and settings."""


def stage_priors(run, eval_settings, n_train: int = 60_000, *, settings: dict | None = None) -> dict[str, float]:
    """Rough seconds per unit of a sweep's work before it has measured any, for :class:`SweepETA`: per epoch and per
    run of each stage of :data:`smvi.settings.stages.STAGES` that has a prior here (evaluate from its AIS and
    whole-test-set IWAE work, convergence and gaps from their AIS and fit work: the paper's model only; ssl and
    pictures always). ``run`` is the base :class:`~smvi.settings.run.RunConfig`, ``eval_settings`` the
    :class:`~smvi.settings.stages.EvalConfig`, ``settings`` the other stages' settings by their key
    (``{"gaps": GapConfig(...)}``, as a sweep holds them; a stage without its settings has no prior)."""
    sections = {**(settings or {}), "eval": eval_settings}
    epoch = expected_epoch_seconds(run, n_train)
    priors = {} if epoch is None else {"epochs": epoch}
    for stage in STAGES.values():
        prior, cfg = _PRIORS.get(stage.name), sections.get(stage.key)
        if stage.name in _FIXED:
            priors[stage.name] = _FIXED[stage.name]
        elif prior is not None and cfg is not None and epoch is not None:
            priors[stage.name] = prior(cfg)
    return priors


def expected_epoch_seconds(config, n_train: int = 60_000) -> float | None:
    """The prior seconds per epoch of a run ``config`` (a :class:`~smvi.settings.run.RunConfig`) on ``n_train`` images:
    :data:`EPOCH_SECONDS` scaled by the data's size, for the paper's model trained by SMVI or the β-VAE (whose step
    costs the same) only; another model, or IWAE (k decoder passes per example): None, measure it."""
    objective = OBJECTIVES[config.train.objective]
    if config.model != ModelConfig() or config.train.device == "cuda" or not objective.smvi_step_cost:
        return None
    return EPOCH_SECONDS[config.train.precision] * n_train / 60_000


def training_note(name: str, config, start: int, n_train: int = 60_000) -> str:
    """The line a training run prints when it starts: the epochs to go, a rough expected duration
    (:func:`expected_epoch_seconds`; for another model, none until the first epoch is measured) and how to stop and
    resume. ``config`` is the run's :class:`~smvi.settings.run.RunConfig`, ``start`` the epochs already done."""
    left = config.train.epochs - start
    per = expected_epoch_seconds(config, n_train)
    when = (
        f"roughly {duration(per * left)} at ~{per:g} s/epoch (a rough prior for the paper's model on 2 CPU cores; "
        "the ETA is measured from the first epoch on)"
        if per is not None
        else "duration measured from the first epoch on"
    )
    done = f" ({start} done)" if start else ""
    return (
        f"train {name}: {left} {_plural('epoch', left)} to go{done}, {when}. Ctrl-C stops it; it resumes from "
        "the last finished epoch (smvi train --resume, or the same smvi sweep command)"
    )


def sweep_note(sweep_dir, work: dict[str, dict[str, int]], eta: SweepETA) -> str:
    """The line a sweep prints when it starts: its runs and their work (``work`` as :class:`SweepETA` takes it), the
    expected duration (``eta``: a rough prior until the sweep has measured itself) and how to stop and resume."""
    runs = sum(1 for w in work.values() if any(w.values()))
    if not runs:
        return f"sweep {sweep_dir}: {len(work)} runs, nothing left to do"
    total = {k: sum(w.get(k, 0) for w in work.values()) for k in ("epochs", "evaluate", "ssl", "pictures")}
    units = (
        ("epoch", total["epochs"], " to train"),
        ("evaluation", total["evaluate"], ""),
        ("ssl stage", total["ssl"], ""),
        ("pictures stage", total["pictures"], ""),
    )
    what = ", ".join(f"{n} {_plural(unit, n)}{rest}" for unit, n, rest in units if n)
    per = eta.per_unit("epochs")[0]
    basis = f", ~{per:.3g} s/epoch per run for the paper's model on 2 CPU cores" if per and total["epochs"] else ""
    return (
        f"sweep {sweep_dir}: {runs} of {len(work)} runs to do ({what}); {eta.eta()}{basis}. Ctrl-C stops it; "
        "rerunning the same command resumes (finished stages are kept)"
    )


class SweepETA:
    """The time a sweep has left, from the stage times measured in it; a stated rough prior until then.

    ``work`` maps each run's name to what it still needs: ``{"epochs": e, "evaluate": 1, "ssl": 1}`` (a stage it
    skips is absent or 0). ``prior`` holds the seconds per unit of one job that has the whole machine
    (``{"epochs": s/epoch, "evaluate": s, "ssl": s}``, :func:`stage_priors`; a missing unit has no prior), so with
    ``workers`` jobs side by side each takes ``workers`` times as long. :meth:`finished` removes a run and adds what it
    measured (per-job times, under the sweep's own concurrency); :meth:`left` divides the remaining work by the jobs
    that can run side by side. Rough by design: means per unit, no account of a run half done.

    >>> eta = SweepETA({"a": {"epochs": 3, "ssl": 1}, "b": {"epochs": 3, "ssl": 1}}, {"epochs": 10.0, "ssl": 60.0})
    >>> eta.eta()
    'ETA 3 min (rough prior)'
    >>> eta.finished("a", {"train": 45.0, "ssl": 20.0}, epochs=3)
    >>> eta.eta()
    'ETA 1 min (measured in this sweep)'
    """

    def __init__(self, work: Mapping[str, Mapping[str, float]], prior: dict[str, float], workers: int = 1) -> None:
        self.work = {name: {k: v for k, v in w.items() if v} for name, w in work.items()}
        self.prior, self.workers = prior, max(1, workers)
        self.spent: dict[str, float] = {}
        self.units: dict[str, float] = {}

    def finished(self, name: str, seconds: dict[str, float], epochs: int = 0) -> None:
        """Run ``name`` is done; ``seconds`` holds the wall time of each stage it ran (``"train"``, which trained
        ``epochs`` epochs, ``"evaluate"``, ``"ssl"``), as :func:`smvi.studies.sweep.run_job` reports it."""
        self.work.pop(name, None)
        for stage, s in seconds.items():
            unit, count = ("epochs", epochs) if stage == "train" else (stage, 1)
            if count:
                self.spent[unit] = self.spent.get(unit, 0.0) + s
                self.units[unit] = self.units.get(unit, 0.0) + count

    def per_unit(self, unit: str) -> tuple[float | None, bool]:
        """(seconds per ``unit``, measured?): this sweep's mean if measured, else the prior (None without one)."""
        if self.units.get(unit):
            return self.spent[unit] / self.units[unit], True
        prior = self.prior.get(unit)
        return (None if prior is None else prior * self.workers), False

    def left(self) -> tuple[float | None, str]:
        """(seconds left, from what: ``"measured"``, ``"partly measured"`` or ``"prior"``); None if some remaining
        unit has neither a measurement nor a prior."""
        total, kinds = 0.0, set()
        for w in self.work.values():
            for unit, count in w.items():
                per, measured = self.per_unit(unit)
                if per is None:
                    return None, "prior"
                total += per * count
                kinds.add(measured)
        kind = "partly measured" if len(kinds) == 2 else "measured" if True in kinds else "prior"
        return total / max(1, min(self.workers, len(self.work))), kind

    def eta(self) -> str:
        """``"ETA 23 min (measured in this sweep)"``, ``"ETA 2 h 05 min (rough prior)"``, ``"ETA ? (...)"``."""
        if not self.work:
            return "nothing left"
        seconds, kind = self.left()
        if seconds is None:
            missing = sorted({u for w in self.work.values() for u in w if self.per_unit(u)[0] is None})
            return f"ETA ? (no time measured yet for: {', '.join(missing)})"
        return f"ETA {duration(seconds)} ({_BASIS[kind]})"


_BASIS = {
    "measured": "measured in this sweep",
    "partly measured": "partly measured, partly a rough prior",
    "prior": "rough prior",
}


def note(message: str, enabled: bool = True, stream: TextIO | None = None) -> None:
    """Print one progress note (a stage starting, an expected duration) unless progress is off."""
    if display_mode(enabled, stream) != "off":
        print(message, file=stream if stream is not None else sys.stderr, flush=True)


def label_of(progress: bool | str, default: str) -> str:
    """The display label of a ``progress`` argument that may be a label itself (``ais(progress="gaps x: AIS")``)."""
    return progress if isinstance(progress, str) else default
