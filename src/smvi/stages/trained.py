"""Loading a trained run's model, checked against the run's identity (see :mod:`smvi.store.rundir`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from smvi.core.models import VAE
from smvi.data.loading import ImageData, load_data
from smvi.settings.run import ConfigError, RunConfig
from smvi.store.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_weights
from smvi.store.rundir import RunDir, RunError, config_from_dump, fingerprint, identity_diff

__all__ = ["LoadedRun", "load_run", "open_stage", "holds_run_lock", "check_checkpoint", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available: use --device cpu or auto")
    return torch.device(name)


@dataclass(frozen=True)
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: VAE
    epoch: int
    fingerprint: str


def checkpoint_config(ck: Checkpoint, source: Path) -> RunConfig:
    """The config a checkpoint was trained with; its stored fingerprint (when it has one) must be that config's."""
    cfg = config_from_dump(ck.config, str(source))
    if ck.fingerprint is not None and ck.fingerprint != fingerprint(cfg):
        raise CheckpointError(f"{source}: its fingerprint does not match its own config: damaged; start over")
    return cfg


def check_checkpoint(ck: Checkpoint, config: RunConfig, source: Path) -> None:
    """Refuse (one line) a checkpoint of another run than ``config``'s (any identity setting, not only the model)."""
    d = identity_diff(checkpoint_config(ck, source), config)
    if d:
        raise CheckpointError(f"{source} belongs to another run ({d[0]} is {d[1]!r} in the checkpoint, {d[2]!r} in "
                              "config.toml); put it back in its own run directory, or retrain")


def load_run(run_dir: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Load a trained run's config and model (eval mode, parameters frozen) from its directory, without unpickling.

    The checkpoint must be this run's: its config must have the identity of ``config.toml`` (model, data, λ, seed,
    every setting but ``train.epochs`` and ``train.device``); a damaged or truncated ``config.toml`` is refused."""
    rd = RunDir(run_dir)
    rd.require_trained()
    config = rd.read_config()
    ck = load_checkpoint(rd.checkpoint_path)
    check_checkpoint(ck, config, rd.checkpoint_path)
    first = ck.model.get("encoder.0.weight")
    if first is None:
        raise CheckpointError(f"{rd.checkpoint_path}: no encoder weights; not a VAE checkpoint")
    model = VAE(first.shape[1], config.model)
    load_weights(model, ck.model, rd.checkpoint_path)
    model = model.to(resolve_device(device)).eval().requires_grad_(False)
    return LoadedRun(rd.path, config, model, int(ck.progress["epoch"]), fingerprint(config))


def open_stage(run_dir: str | Path, kind: str, *, data: ImageData | None = None, overwrite: bool = False,
               device: str = "cpu") -> tuple[RunDir, LoadedRun, ImageData]:
    """What every stage (evaluate, ssl, convergence, gaps) checks before any work, in this order: the run (config,
    checkpoint and their identity), an existing record ``kind`` (an error unless ``overwrite``) and that the directory
    is writable; then the run's data (``data`` if given). Returns the run directory, the loaded run and the data; every
    refusal is one-line :class:`~smvi.store.rundir.RunError` or :class:`~smvi.store.checkpoint.CheckpointError`."""
    rd = RunDir(run_dir)
    run = load_run(rd.path, device=device)
    if rd.record_path(kind).exists() and not overwrite:
        raise RunError(f"{rd.record_path(kind)} exists: pass --overwrite to recompute it")
    rd.check_writable()
    return rd, run, data if data is not None else load_data(run.config.data.dataset, run.config.data.data_dir)


def holds_run_lock(stage):
    """Decorate a stage ``stage(run_dir, ...)`` to run holding the run's lock (:meth:`RunDir.lock`), as training
    does: a stage never reads a checkpoint that training is replacing, nor writes a record beside another writer; a
    run in use is one-line :class:`~smvi.store.rundir.RunBusy`. A directory without ``config.toml`` is left to the
    stage to refuse (no lock file is made there)."""

    @functools.wraps(stage)
    def locked(run_dir, *args, **kwargs):
        rd = RunDir(run_dir)
        if not rd.config_path.is_file():
            return stage(run_dir, *args, **kwargs)
        with rd.lock():
            return stage(run_dir, *args, **kwargs)

    return locked
