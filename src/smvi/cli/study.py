"""``smvi study`` (several sweeps as one study, :mod:`smvi.studies.study`) and ``smvi export`` (a sweep's small files
to a results folder, :mod:`smvi.studies.export`)."""

from __future__ import annotations

from pathlib import Path

import click

from smvi.cli.app import EXECUTORS, NonEmptyPath, main, sets_option
from smvi.settings.study import load_study_config


def _pairs(values: tuple[str, ...], sep: str, option: str, form: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        head, found, tail = v.partition(sep)
        if not (found and head and tail):
            raise click.BadParameter(f"expected {form}, got {v!r}", param_hint=option)
        out.append((head, tail))
    return out


@main.command("study")
@click.argument("study_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option(
    "--config",
    "config",
    required=True,
    metavar="NAME|FILE",
    help="The study file (TOML: smvi.settings.study), or the name of one shipped with smvi (frontier, cpu).",
)
@click.option("--only", multiple=True, metavar="ARM", help="Run only this arm (repeatable).")
@sets_option("Sweep override for every arm, after the arm's own, e.g. --set run.train.epochs=10 (repeatable).")
@click.option(
    "--stage-set",
    "stage_sets",
    multiple=True,
    metavar="STAGE.KEY=VALUE",
    help="Override of a per-run stage's settings, e.g. --stage-set gaps.steps=5000 (repeatable).",
)
@click.option(
    "--gaps-set",
    multiple=True,
    metavar="KEY=VALUE",
    help="Same as --stage-set gaps.KEY=VALUE (applied after the --stage-set options).",
)
@click.option(
    "--lanes",
    type=click.IntRange(min=1),
    default=None,
    help="Arms (and per-run stages) run at once, each on its share of the cores [the study file's].",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default=None,
    help="Each arm's sweep executor [the study file's].",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Sweep workers per lane [the study file's].")
@click.option(
    "--reuse",
    multiple=True,
    metavar="ARM=PATH",
    help="Link an existing sweep (checkpoints kept) as this arm instead of training it; its settings must "
    "be the arm's (repeatable).",
)
@click.option(
    "--smvi-sweep",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=None,
    hidden=True,
    help="Same as --reuse smvi=PATH (scripts/frontier_study.py's option).",
)
@click.option("--no-stages", "--no-gaps", "no_stages", is_flag=True, help="Only the sweeps, no per-run stages.")
def study_cmd(
    study_dir: Path,
    config: str,
    only: tuple[str, ...],
    sets: tuple[str, ...],
    stage_sets: tuple[str, ...],
    gaps_set: tuple[str, ...],
    lanes: int | None,
    executor: str | None,
    workers: int | None,
    reuse: tuple[str, ...],
    smvi_sweep: Path | None,
    no_stages: bool,
) -> None:
    """One sweep per arm of a study in STUDY_DIR/<arm>/, then per-run stages (e.g. the gap split) on the runs the
    study names; resumable (rerun the same command), Ctrl-C or SIGTERM stops every lane keeping what is finished.

    `smvi study runs/frontier --config frontier` runs the trade-off frontier study (SMVI vs β-VAE, IWAE and richer q
    at the cpu preset's settings, bf16); `smvi report STUDY_DIR` then reports all arms together. An arm that fails
    does not stop the others; the command then exits 1 naming it.
    """
    from smvi.studies.study import run_study

    overrides = [
        f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
        for k, v in (("lanes", lanes), ("executor", executor), ("workers", workers))
        if v is not None
    ]
    study = load_study_config(config, overrides)
    per_stage: dict[str, list[str]] = {}
    for stage, kv in _pairs(stage_sets, ".", "--stage-set", "STAGE.KEY=VALUE") + [("gaps", s) for s in gaps_set]:
        per_stage.setdefault(stage, []).append(kv)
    reused = {arm: Path(p) for arm, p in _pairs(reuse, "=", "--reuse", "ARM=PATH")}
    if smvi_sweep is not None:
        reused["smvi"] = smvi_sweep
    run_study(
        study, study_dir, only=list(only) or None, sets=sets, stage_sets=per_stage, reuse=reused, per_run=not no_stages
    )


@main.command("export")
@click.argument("sweep_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.argument("results_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace files of RESULTS_DIR that differ from the sweep's.")
def export_cmd(sweep_dir: Path, results_dir: Path, overwrite: bool) -> None:
    """Copy a sweep's (or a study's) small files to RESULTS_DIR: everything but checkpoints, locks, unfinished
    evaluations' progress (*.partial.json), SSL feature arrays and report/ folders; symlinked folders are followed.
    Nothing in RESULTS_DIR is deleted; a file there that differs is refused unless --overwrite; each file is written
    atomically. Then `smvi report RESULTS_DIR` writes the results folder's own report."""
    from smvi.studies.export import export_results

    copied, same = export_results(sweep_dir, results_dir, overwrite=overwrite)
    click.echo(f"{copied} files copied, {same} already there, to {results_dir}")
