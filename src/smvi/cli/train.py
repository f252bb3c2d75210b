"""``smvi train``: options and config files to a :class:`~smvi.settings.run.RunConfig`, then
:func:`smvi.stages.train.train`."""

from __future__ import annotations

from pathlib import Path

import click

from smvi.cli.app import (
    NonEmptyPath,
    main,
    no_progress_option,
    run_help,
    set_threads,
    sets_option,
    threads_option,
)
from smvi.settings.run import ConfigError, load_config
from smvi.store.rundir import RunDir

# ---- train ----------------------------------------------------------------------------------------------------------
_TRAIN_OPTIONS = {  # CLI option -> config key; None means "not given"
    "lam": "train.lam",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
    "n_samples": "train.n_samples",
    "grad_clip": "train.grad_clip",
    "z_dim": "model.z_dim",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "tensorboard": "train.tensorboard",
}


@main.command("train")
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=NonEmptyPath(file_okay=False, path_type=Path),
    help="Run directory: config.toml, checkpoint.safetensors and metrics.jsonl are written here.",
)
@click.option(
    "--config",
    "config_path",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file with [model], [data] and [train] sections (defaults: the paper's settings).",
)
@sets_option(
    "Override any config key, e.g. --set model.encoder_hidden=[512] (repeatable; `smvi config` lists them).",
    metavar="SECTION.KEY=VALUE",
)
@click.option(
    "--lam", type=float, default=None, help=run_help("λ, the weight of the score-matching divergence", "train.lam")
)
@click.option(
    "--target-dsm",
    type=float,
    default=None,
    metavar="EPS",
    help="Learn λ (a Lagrange multiplier) so that the training D_SM stays at or below EPS; instead of --lam.",
)
@click.option(
    "--target-gap",
    type=float,
    default=None,
    metavar="NATS",
    help="Learn λ so that the ELBO gap estimate IWAE_k − ELBO (k = train.constraint.gap_k; a lower bound on "
    "the gap, so the AIS gap reached is larger) stays at or below NATS; instead of --lam.",
)
@click.option("--epochs", type=int, default=None, help=run_help("Passes over the training set", "train.epochs"))
@click.option("--batch-size", type=int, default=None, help=run_help("Examples per step", "train.batch_size"))
@click.option("--lr", type=float, default=None, help=run_help("Adam learning rate", "train.lr"))
@click.option(
    "--seed",
    type=int,
    default=None,
    help=run_help("Seed of initialization, shuffling, binarization, sampling", "train.seed"),
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help=run_help("Where to train", "train.device"),
)
@click.option(
    "--n-samples", type=int, default=None, help=run_help("z samples per example in the objective", "train.n_samples")
)
@click.option(
    "--grad-clip", type=float, default=None, help=run_help("Clip the gradient's global norm", "train.grad_clip")
)
@click.option("--z-dim", type=int, default=None, help=run_help("Latent dimension", "model.z_dim"))
@click.option(
    "--dataset",
    type=click.Choice(["mnist", "idx"]),
    default=None,
    help=run_help("'mnist' (verified; fetched if missing) or 'idx' (MNIST-format files in --data-dir)", "data.dataset"),
)
@click.option("--data-dir", type=str, default=None, help="Directory holding the four IDX files.")
@click.option(
    "--tensorboard",
    metavar="DIR",
    default=None,
    help="Also log to TensorBoard in DIR/<run name> (pip install -e '.[tensorboard]'); view: tensorboard --logdir DIR.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (may raise --epochs).")
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing run in --out (its checkpoint, metrics and result records)."
)
@no_progress_option()
@threads_option
def train_cmd(
    run_dir: Path,
    config_path: Path | None,
    sets: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    no_progress: bool,
    threads: int | None,
    **options,
) -> None:
    """Train the paper's VAE by maximizing ELBO − λ·D_SM, checkpointing every epoch.

    Settings come from the defaults, then --config, then --set, then the options below. With --resume and no
    --config, the run's own config.toml is the base.
    """
    from smvi.stages.train import train

    set_threads(threads)
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    if resume and config_path is None and RunDir(run_dir).config_path.exists():
        config_path = RunDir(run_dir).config_path
        RunDir(run_dir).read_config()  # a truncated or damaged config.toml is refused, never completed by defaults
    overrides = _target_overrides(options.pop("target_dsm"), options.pop("target_gap"), options["lam"])
    overrides |= {_TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    config = load_config(config_path, overrides=overrides, sets=sets)
    result = train(config, run_dir, resume=resume, overwrite=overwrite, progress=not no_progress)
    m = result.last_metrics
    if m and "constraint_status" in m:
        click.echo(
            f"epoch {m['epoch']}: λ {m['lam']:.4g}, {m['constraint_measure']} moving average "
            f"{m['constraint_avg']:.4g} (target {m['constraint_target']:g}, {m['constraint_status']})"
        )
    if m:
        click.echo(
            f"epoch {m['epoch']}: train ELBO {m['elbo']:.2f}, test ELBO {m['test_elbo']:.2f}, "
            f"test D_SM {m['test_d_sm']:.4g}  ->  {run_dir}"
        )
    else:
        click.echo(f"nothing to do: {run_dir} already finished {result.epochs_done} epochs")


def _target_overrides(dsm: float | None, gap: float | None, lam: float | None) -> dict:
    """The config keys of --target-dsm / --target-gap; a fixed --lam with a target, or two targets, is an error."""
    given = [f"--target-{name} {v:g}" for name, v in (("dsm", dsm), ("gap", gap)) if v is not None]
    if len(given) == 2:
        raise ConfigError(f"{given[0]} and {given[1]} both given: a run has one target; pass one of them")
    if given and lam is not None:
        raise ConfigError(f"--lam {lam:g} fixes λ and {given[0]} learns it: pass one of them")
    if not given:
        return {}
    return {
        "train.constraint.target": dsm if dsm is not None else gap,
        "train.constraint.measure": "dsm" if dsm is not None else "gap",
    }
