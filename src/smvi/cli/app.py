"""The ``smvi`` command group and what its commands share: presets' names, the expected errors (one line, exit 1),
``--threads``, help texts. The commands live beside it, one module per concern (:mod:`smvi.cli`).
"""

from __future__ import annotations

import signal
import sys
import threading

import click

# Only click and the torch-free layers (config, settings, run directory) are imported by the cli package: every command
# imports the torch-heavy modules it needs when it runs, so `smvi --help` (and every subcommand's --help) starts
# without torch.
from smvi.settings.run import RunConfig
from smvi.settings.stages import EvalConfig

# smvi.studies.presets.EVAL_PRESETS (tests/test_packaging.py checks they agree)
EVAL_PRESET_NAMES = ("default", "quick")
SWEEP_PRESET_NAMES = ("cpu", "paper", "quick")  # smvi.studies.presets.PRESETS (same check)
# smvi.studies.presets.PRESET_TIMES, the one owner of these numbers (tests/test_progress.py checks)
SWEEP_PRESET_TIMES = {
    "quick": "3–5 min on 2 idle CPU cores",
    "cpu": "about 2 h on 2 CPU cores (4.1 h of one-thread processes, two at a time)",
    "paper": (
        "about 17 h on 2 shared CPU cores (measured: 33 h of one-thread processes, two at a time; about 9 h at "
        "the pace of its uncontended runs)"
    ),
}
# The library's expected errors, by module; a module not imported yet cannot have raised one.
_EXPECTED_ERRORS = {
    "smvi.settings.run": ("ConfigError",),
    "smvi.data.loading": ("DataError",),
    "smvi.stages.train": ("TrainingDiverged",),
    "smvi.store.rundir": ("RunError",),
    "smvi.store.records": ("RecordError",),
    "smvi.store.checkpoint": ("CheckpointError",),
    "smvi.stages.ssl": ("SSLError",),
    "smvi.report.aggregate": ("ReportError",),
    "smvi.core.estimators.precision": (),
}


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that end in one ``error:`` line (from the modules imported so far)."""
    found = (
        getattr(sys.modules[m], name, None)
        for m, names in _EXPECTED_ERRORS.items()
        if m in sys.modules
        for name in names
    )
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


class NonEmptyPath(click.Path):
    """click's Path, refusing an empty value (which would mean the current folder)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value == "":
            self.fail("is empty (it would mean the current folder): give a path", param, ctx)
        return super().convert(value, param, ctx)


def set_threads(n: int | None) -> None:
    """``--threads N``: torch's intra-op thread count (default: torch's own choice, usually every core)."""
    if n is not None:
        if n < 1:
            raise click.BadParameter(f"must be at least 1, got {n}", param_hint="--threads")
        import torch

        torch.set_num_threads(n)


# the help of every command's --threads and --no-progress options
THREADS_HELP = "torch threads for this process [torch's default: every core]; 1 is often faster on a shared machine."
NO_PROGRESS_HELP = (
    "No progress output on stderr (a bar on a terminal, else a plain line every 30 s: "
    "smvi.progress); results are still printed."
)
EXECUTORS = ("inprocess", "process", "ray")
"""The sweep executors (``smvi sweep --executor``, ``smvi study --executor``)."""


def stack(*decorators):
    """Several click decorators as one, in the order they are listed (the order of their options in ``--help``)."""

    def apply(f):
        for decorate in reversed(decorators):
            f = decorate(f)
        return f

    return apply


def sets_option(help: str, metavar: str = "KEY=VALUE"):
    """``--set KEY=VALUE`` (repeatable), passed as ``sets``; ``help`` names the command's settings."""
    return click.option("--set", "sets", multiple=True, metavar=metavar, help=help)


def no_progress_option(help: str = NO_PROGRESS_HELP):
    """``--no-progress``: no progress output (:mod:`smvi.progress`)."""
    return click.option("--no-progress", is_flag=True, help=help)


threads_option = click.option("--threads", type=int, default=None, help=THREADS_HELP)
"""``--threads N``, read by :func:`set_threads`."""


def _default(cls, dotted: str) -> str:
    """The default of ``cls``'s field at ``dotted`` (e.g. ``train.lam``), for option help: ``[0.0]``."""
    obj = cls()
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return "[off]" if obj is None else f"[{obj}]"


def eval_default(key: str) -> str:
    """The evaluation default for ``key`` (the 'default' preset), for option help: ``[200]``."""
    return _default(EvalConfig, key)


def run_help(text: str, key: str) -> str:
    """Option help ending with the run config's default for ``key``."""
    return f"{text} {_default(RunConfig, key)}."


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``), raised in the main thread so that a command stops as on Ctrl-C: a process-pool sweep
    terminates its workers instead of leaving them training as orphans, and what is finished is kept."""


def _terminated(signum, frame):
    raise Terminated


class SmviGroup(click.Group):
    """Turns the library's expected errors into one line and exit status 1, and Ctrl-C or SIGTERM into one line and
    exit status 130 or 143 (a SIGTERM that was ignored or handled by the caller is left so)."""

    def invoke(self, ctx: click.Context):
        catch = (
            threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        )
        if catch:
            signal.signal(signal.SIGTERM, _terminated)
        try:
            return super().invoke(ctx)
        except expected_errors() as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as e:
            click.echo(f"interrupted: {INTERRUPTED.get(ctx.invoked_subcommand, INTERRUPTED[None])}", err=True)
            sys.exit(143 if isinstance(e, Terminated) else 130)
        finally:
            if catch:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


INTERRUPTED = {
    "train": "finished epochs are checkpointed; rerun with --resume to continue",
    "sweep": "finished epochs, records and scored evaluation batches are kept; rerun the same command to continue",
    "evaluate": "scored batches are saved (eval.partial.json); rerun the same command to continue from them",
    None: "nothing was written (the record is written at the end); rerun the same command",
}
"""What Ctrl-C leaves, per command, in the line it prints."""


@click.group(cls=SmviGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="smvi")
def main() -> None:
    """Score-Matching Variational Inference: train VAEs that trade likelihood for posterior quality.

    \b
    Typical use:
      smvi data fetch                              download and verify MNIST
      smvi train --out runs/vae --epochs 5         the paper's model, plain VAE (λ = 0)
      smvi train --out runs/l01 --lam 0.1          with the score-matching penalty
      smvi train --out runs/c30 --target-dsm 30    λ learned so that D_SM stays at or below 30
      smvi train --out runs/l01 --resume           continue an interrupted run
    """
