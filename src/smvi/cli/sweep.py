"""``smvi sweep`` and ``smvi report``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import click

from smvi.cli.app import (
    EXECUTORS,
    SWEEP_PRESET_NAMES,
    SWEEP_PRESET_TIMES,
    NonEmptyPath,
    main,
    no_progress_option,
    sets_option,
)
from smvi.settings.run import build_config, read_toml
from smvi.settings.stages import STAGES


# ---- sweep, report --------------------------------------------------------------------------------------------------
@main.command("sweep")
@click.argument("sweep_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option(
    "--preset",
    type=click.Choice(SWEEP_PRESET_NAMES),
    default="quick",
    show_default=True,
    help=f"quick: a first look, {SWEEP_PRESET_TIMES['quick']}; cpu: a reduced reproduction, "
    f"{SWEEP_PRESET_TIMES['cpu']}; paper: the paper's settings, {SWEEP_PRESET_TIMES['paper']}.",
)
@click.option(
    "--config",
    "config_path",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    help="TOML sweep file (keys lams, dsm_targets, gap_targets, seeds, stages, [constraint], [run.*], "
    + ", ".join(f"[{s.key}]" for s in STAGES.values() if s.record)
    + "); replaces --preset.",
)
@sets_option("Override any key, e.g. --set lams=[0,0.1] --set run.train.epochs=10 (repeatable).")
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="inprocess",
    show_default=True,
    help="Run jobs here one by one, in a local process pool, or on Ray.",
)
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel jobs (process executor).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray).")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Torch threads per run [process and Ray executors: the cores of this process's CPU affinity shared among "
    "--workers; in-process: torch's default]. Set 1 when other jobs share the cores: two runs of two threads on two "
    "cores train several times slower than two of one.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the sweep's saved settings: finished runs of an unchanged identity are reused, "
    "runs the saved settings made are retrained if their identity changed; no other run is touched.",
)
@click.option("--report/--no-report", default=True, show_default=True, help="Write the report at the end.")
@no_progress_option()
def sweep_cmd(
    sweep_dir: Path,
    preset: str,
    config_path: Path | None,
    sets: tuple[str, ...],
    executor: Literal["inprocess", "process", "ray"],
    workers: int,
    address: str | None,
    threads: int | None,
    overwrite: bool,
    report: bool,
    no_progress: bool,
) -> None:
    """Train, evaluate, ssl and draw pictures for every (λ, seed) of a grid; idempotent and resumable.

    Each run does the sweep's `stages` (default train, evaluate, ssl; `smvi config sweep` lists them all), each
    with the sweep's settings section of its name.

    Rerunning the same command skips finished work and resumes interrupted runs; a failing run is recorded in
    SWEEP_DIR/sweep_status.json and the others go on. It starts with one line on what it will do and a rough expected
    duration, and after each run prints [k/N runs] with an ETA from the stage times measured so far.
    """
    from smvi.report.page import make_report
    from smvi.studies.presets import preset_base
    from smvi.studies.sweep import SweepConfig, load_sweep_tree, run_sweep

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    if threads is not None and threads < 1:
        raise click.BadParameter("must be at least 1", param_hint="--threads")
    base = load_sweep_tree(read_toml(config_path)) if config_path else preset_base(preset)
    cfg = build_config(SweepConfig, base, sets=sets)
    results = run_sweep(
        cfg,
        sweep_dir,
        executor=executor,
        workers=workers,
        address=address,
        overwrite=overwrite,
        progress=not no_progress,
        threads=threads,
    )
    failed = [r for r in results if r["status"] != "ok"]
    for r in failed:  # failed, or left as it is: refused, damaged, busy (smvi.studies.sweep)
        click.echo(f"{r['status']}: {r['name']}: {r['error']}", err=True)
    if report and {"evaluate", "ssl"} & set(cfg.stages):  # a train-only sweep has nothing to report yet
        click.echo(f"report: {make_report(sweep_dir)}")
    click.echo(f"{len(results) - len(failed)}/{len(results)} runs complete in {sweep_dir}")
    if failed:
        sys.exit(1)


@main.command("report")
@click.argument("sweep_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the report [SWEEP_DIR/report].",
)
def report_cmd(sweep_dir: Path, out_dir: Path | None) -> None:
    """Figures (ELBO gap and log-likelihood vs λ; SSL accuracy vs λ), tables (Markdown, CSV) and one HTML page,
    from the sweep's result files alone."""
    from smvi.report.page import make_report

    click.echo(f"report: {make_report(sweep_dir, out_dir)}")


@main.command("ssl-study")
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the analysis [SWEEP_DIR/report].",
)
def ssl_study_cmd(sweep_dir: Path, out_dir: Path | None) -> None:
    """The SSL study's pre-registered analysis (smvi.report.ssl_study): the primary test (SMVI λ=0.01 minus λ=0,
    RBF SVM, averaged over s, paired t over seeds), each arm and every (arm, s, classifier) cell against λ=0 with
    Holm, the verdicts, and SSL gain against the ELBO gap and log p(x); from runs with robust-protocol ssl.json
    records (smvi ssl --set protocol=robust). Writes ssl_study.md, ssl_study.csv and fig_ssl_gain.png."""
    from smvi.report.ssl_study import ssl_study_verdicts, write_ssl_study

    path = write_ssl_study(sweep_dir, out_dir)
    click.echo(ssl_study_verdicts(path))
    click.echo(f"-> {path}")


@main.command("status")
@click.argument("sweep_dirs", nargs=-1, required=True, type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs each sweep runs side by side, for the time left [as many as it last ran].",
)
def status_cmd(sweep_dirs: tuple[Path, ...], workers: int | None) -> None:
    """What each sweep (SWEEP_DIR ..., or each sweep in a folder of sweeps such as the frontier study's) has done and
    has left, from its files alone (safe while it runs): per run,
    epochs done (and how long ago the last one finished) and each stage -- done, to do, or the points an evaluation
    under way has scored; then the work left and its expected time (measured in this sweep where it can be, else a
    rough prior)."""
    from smvi.studies.status import status_text, sweeps_in

    for i, d in enumerate(d for folder in sweep_dirs for d in sweeps_in(folder)):
        click.echo(("\n" if i else "") + status_text(d, workers), nl=False)


@main.command("compare")
@click.argument("run_a", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.argument("run_b", type=NonEmptyPath(file_okay=False, path_type=Path))
def compare_cmd(run_a: Path, run_b: Path) -> None:
    """Two trained runs side by side, paired: RUN_A minus RUN_B on what both scored -- ELBO, AIS log p(x) and the
    gap per test and train image (eval.json), IWAE on the whole test set, the gap split per image (gaps.json) and
    SSL accuracy per label subset (ssl.json) -- with mean ± SE, the 95 % t interval and p over those items. Each run
    is one trained model: the intervals are not over training seeds (the report's paired tables are). Records the
    report would leave out (stale, edited, damaged) are left out, with a note on stderr."""
    from smvi.report.compare import compare_paths

    text, notes = compare_paths(run_a, run_b)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(text)
