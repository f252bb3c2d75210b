"""Loading a trained run's model, checked against the run's identity (see :mod:`smvi.store.rundir`)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from smvi.core.models import VAE
from smvi.data.identity import content_digest, file_digests
from smvi.data.loading import ImageData, load_data
from smvi.settings.run import ConfigError, RunConfig, revalidate
from smvi.store.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_weights
from smvi.store.records import DataIdentity
from smvi.store.rundir import RunDir, RunError, config_from_dump, fingerprint, identity_diff

__all__ = [
    "LoadedRun",
    "load_run",
    "open_stage",
    "holds_run_lock",
    "checkpoint_config",
    "check_checkpoint",
    "resolve_device",
    "check_inputs",
    "data_identity",
    "check_data",
    "DEVICES",
]

M = TypeVar("M", bound=BaseModel)
DEVICES = ("auto", "cpu", "cuda")


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
    other_data: DataIdentity | None = None  # what a stage scores when it is not the training data (allowed)


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
        raise CheckpointError(
            f"{source} belongs to another run ({d[0]} is {d[1]!r} in the checkpoint, {d[2]!r} in "
            "config.toml); put it back in its own run directory, or retrain"
        )


def check_inputs(
    run_dir: Any, cfg: Any, cls: type[M], *, data: Any = None, device: Any = "auto", what: str = "cfg"
) -> M:
    """What every stage and ``train`` check first, from the CLI or Python alike: ``run_dir`` a non-empty path,
    ``data`` an :class:`~smvi.data.loading.ImageData` or None, ``device`` one of auto, cpu, cuda, and ``cfg`` a
    ``cls``, validated anew (:func:`smvi.settings.run.revalidate`). Returns the validated ``cfg``; anything else is a
    one-line :class:`~smvi.settings.run.ConfigError` naming the argument."""
    if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir):
        raise ConfigError(f"the run directory must be a non-empty path (str or pathlib.Path), got {run_dir!r}")
    if data is not None and not isinstance(data, ImageData):
        raise ConfigError(f"data must be an smvi.ImageData (or None: the run's own data), got {type(data).__name__}")
    if not isinstance(device, str) or device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return revalidate(cfg, cls, what)


# ---- the data a run was trained on -----------------------------------------------------------------------------------
def data_identity(config: RunConfig, data: ImageData, *, given: bool) -> DataIdentity:
    """What ``data`` is: arrays passed through the Python API (``given``), else the files of ``config.data``."""
    digest = content_digest(data)
    if given:
        return DataIdentity(kind="arrays", digest=digest)
    d = config.data
    return DataIdentity(
        kind=d.dataset,
        location=str(Path(d.data_dir).resolve()) if d.data_dir else None,
        digest=digest,
        files=file_digests(d.dataset, d.data_dir),
    )


def check_data(
    rd: RunDir, config: RunConfig, data: ImageData, *, given: bool, stage: str, other_data: bool
) -> DataIdentity | None:
    """Refuse (one line, naming both) scoring other data than the run was trained on, unless ``other_data``: then
    the data scored is returned for the record's header (None: the run's own data). A run trained before
    ``data.json`` existed is not checked here: its data is what loading checks (MNIST's MD5s; IDX files' format)."""
    trained = rd.read_data()
    if trained is None:
        return None
    scored = data_identity(config, data, given=given)
    why = trained.difference(scored)
    if why is None:
        return None
    if other_data:
        return scored
    fix = (
        "pass the data it was trained on (data=...)"
        if trained.kind == "arrays"
        else f"restore the training data in {trained.location}"
        if trained.location
        else "restore the training data"
    )
    raise RunError(
        f"{stage} {rd.path}: it was {why}; {fix}, or score other data on purpose with --other-data "
        "(other_data=True: the record then says what it scored)"
    )


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


def open_stage(
    run_dir: str | Path,
    kind: str,
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    device: str = "auto",
    other_data: bool = False,
) -> tuple[RunDir, LoadedRun, ImageData]:
    """What every stage (evaluate, ssl, convergence, gaps, pictures) checks before any work, in this order: the run
    (config, checkpoint and their identity), an existing record ``kind`` (an error unless ``overwrite``) and that the
    directory is writable; then the run's data (``data`` if given), which must be the data it was trained on
    (:func:`check_data`; ``other_data`` allows other data, named in :attr:`LoadedRun.other_data` for the record).
    Returns the run directory, the loaded run and the data; every refusal is one-line
    :class:`~smvi.store.rundir.RunError` or :class:`~smvi.store.checkpoint.CheckpointError`."""
    rd = RunDir(run_dir)
    run = load_run(rd.path, device=device)
    if rd.record_path(kind).exists() and not overwrite:
        raise RunError(f"{rd.record_path(kind)} exists: pass --overwrite to recompute it")
    rd.check_writable()
    given = data is not None
    if not given:
        data = load_data(run.config.data.dataset, run.config.data.data_dir)
    other = check_data(rd, run.config, data, given=given, stage=kind, other_data=other_data)
    return rd, replace(run, other_data=other), data


def holds_run_lock(stage):
    """Decorate a stage ``stage(run_dir, ...)`` to run holding the run's lock (:meth:`RunDir.lock`), as training
    does: a stage never reads a checkpoint that training is replacing, nor writes a record beside another writer; a
    run in use is one-line :class:`~smvi.store.rundir.RunBusy`. A directory without ``config.toml`` is left to the
    stage to refuse (no lock file is made there)."""

    @functools.wraps(stage)
    def locked(run_dir, *args, **kwargs):
        if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir):  # the stage refuses it (check_inputs)
            return stage(run_dir, *args, **kwargs)
        rd = RunDir(os.fspath(run_dir))
        if not rd.config_path.is_file():
            return stage(run_dir, *args, **kwargs)
        with rd.lock():
            return stage(run_dir, *args, **kwargs)

    return locked
