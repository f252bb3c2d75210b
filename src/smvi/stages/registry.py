"""The stages as one type: :class:`Stage` is a :class:`~smvi.settings.stages.StageSpec` (name, settings, record) plus
its run function, and :data:`STAGES` the one list the sweep, ``smvi status`` and the ETA read.

Every run function has one shape, ``run(run_dir, cfg, *, data, overwrite, progress, device)``: it does the stage on
the run directory with settings ``cfg`` (its ``settings`` class), ``data`` (an :class:`~smvi.data.loading.ImageData`
already loaded, or None to load the run's), ``overwrite`` (recompute an existing record; for train: start over) and
``device`` (where the run trained, as ``train.device`` says; ssl computes on the CPU whatever it is). The stages'
own functions keep their signatures; the adapters below only map onto them.

Adding a stage: its settings class and :class:`~smvi.settings.stages.StageSpec` in :mod:`smvi.settings.stages`, its
module here with its run function, and one entry in :data:`_RUNS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from smvi.data.loading import ImageData
from smvi.settings.stages import STAGES as SPECS
from smvi.settings.stages import SSLConfig, StageSpec
from smvi.stages.convergence import check_convergence
from smvi.stages.evaluate import evaluate_run
from smvi.stages.gaps import gaps_run
from smvi.stages.pictures import pictures_run
from smvi.stages.ssl import ssl_run
from smvi.stages.ssl_refined import ssl_refined_run
from smvi.stages.train import train
from smvi.store.rundir import RunDir

__all__ = ["Stage", "STAGES"]


def _itself(cfg: BaseModel) -> tuple[BaseModel, ...]:
    return (cfg,)


@dataclass(frozen=True)
class Stage(StageSpec):
    """A stage: its :class:`~smvi.settings.stages.StageSpec`, ``run(run_dir, cfg, *, data, overwrite, progress,
    device)`` (module docstring) and ``served(cfg)``: the settings whose record serves a request with ``cfg`` (``cfg``
    itself, first, unless the stage says more)."""

    run: Callable[..., Any] = None  # type: ignore[assignment]
    served: Callable[[Any], tuple[BaseModel, ...]] = _itself


def _stage(name: str, run: Callable[..., Any], served: Callable[[Any], tuple[BaseModel, ...]] = _itself) -> Stage:
    spec = SPECS[name]
    return Stage(**{f.name: getattr(spec, f.name) for f in fields(StageSpec)}, run=run, served=served)


def _train(
    run_dir: str | Path,
    cfg,
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> Any:
    """Train ``cfg`` (a RunConfig) in ``run_dir``, resuming the run there unless ``overwrite`` (then from scratch)."""
    if device is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": device})})
    resume = RunDir(run_dir).has_run() and not overwrite
    return train(cfg, run_dir, resume=resume, overwrite=overwrite, progress=progress, data=data)


def _ssl(
    run_dir: str | Path,
    cfg: SSLConfig,
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> Any:
    """:func:`~smvi.stages.ssl.ssl_run`, on the CPU whatever ``device`` (its SVMs are scikit-learn's)."""
    return ssl_run(run_dir, cfg, data=data, overwrite=overwrite, progress=progress, device="cpu")


def _ssl_served(cfg: SSLConfig) -> tuple[SSLConfig, ...]:
    """``cfg`` and, when it skips the raw-pixel baseline, the same with it: a record that has it holds everything
    asked (e.g. a run that was first in another sweep)."""
    return (cfg,) if cfg.raw_pixels else (cfg, cfg.model_copy(update={"raw_pixels": True}))


STAGES: Mapping[str, Stage] = MappingProxyType(
    {
        stage.name: stage
        for stage in (
            _stage("train", _train),
            _stage("evaluate", evaluate_run),
            _stage("ssl", _ssl, served=_ssl_served),
            _stage("pictures", pictures_run),
            _stage("convergence", check_convergence),
            _stage("gaps", gaps_run),
            _stage("ssl-refined", ssl_refined_run),
        )
    }
)
"""Every stage with its run function, by name (the names and order of :data:`smvi.settings.stages.STAGES`)."""
