"""A study's settings (torch-free): :class:`StudyConfig`, one sweep per arm over a sweep preset, and the per-run stages
(e.g. the gap split) that follow an arm on some of its runs; read from a TOML file by :func:`load_study_config`.

A study file, e.g. ``smvi/studies/frontier.toml`` (``smvi study DIR --config frontier`` finds it by name)::

    preset = "cpu"                              # the sweep preset every arm starts from
    sets = ["run.train.precision='bf16'"]       # every arm's --set, before the arm's own
    lanes = 2                                   # arms (and per-run stages) run at once, each on its share of the cores
    executor = "process"                        # each arm's sweep executor, and its workers per lane
    workers = 1

    [stage_sets]                                # --set of each per-run stage (e.g. `smvi gaps --set ...`)
    gaps = []

    [arms.smvi]                                 # the preset's λ grid; gaps on its runs at λ = 0, 0.01, 0.1
    cost = 18
    stages = { gaps = [0.0, 0.01, 0.1] }

    [arms."beta0.5"]
    lams = [0.0]
    sets = ["run.train.objective='beta'", "run.train.beta=0.5"]
    cost = 2

Unknown keys are refused, as everywhere (:class:`~smvi.settings.run.ConfigError`, one line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    model_validator,
)

from smvi.settings.run import ConfigError, Distinct, build_config, read_toml
from smvi.settings.stages import STAGES

__all__ = ["STUDY_CONFIGS", "ArmConfig", "StudyConfig", "load_study_config", "study_config_path"]

STUDY_CONFIGS = Path(__file__).resolve().parents[1] / "studies"
"""Where the study files shipped with smvi live (``smvi/studies/NAME.toml``): ``--config NAME`` finds them."""

PresetName = Literal["cpu", "paper", "quick"]  # smvi.studies.presets.PRESETS (tests/test_study.py checks they agree)
PRESET_NAMES = get_args(PresetName)


def _per_run_stage(name: str) -> str:
    """A stage that runs on one trained run and writes a record (every stage but train), by its CLI verb."""
    spec = STAGES.get(name)
    if spec is None or spec.record is None:
        runnable = [s.name for s in STAGES.values() if s.record is not None]
        raise ValueError(f"{name!r} is not a per-run stage: use one of {runnable}")
    return name


PerRunStage = Annotated[str, AfterValidator(_per_run_stage)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ArmConfig(_Frozen):
    """One arm: a sweep in ``DIR/<dir>`` (default ``DIR/<arm name>``) of the study's preset with the study's ``sets``,
    then this arm's λ grid and ``sets``; ``cost`` orders the arms (the costliest start first); ``stages`` runs a
    per-run stage on the seed-0 runs of the λ listed, once the arm's sweep is done."""

    lams: Annotated[tuple[NonNegativeFloat, ...], Distinct] | None = Field(
        None, description="the arm's λ grid; unset: the preset's"
    )
    sets: tuple[str, ...] = Field((), description="the arm's own sweep --set options, after the study's")
    cost: float = Field(1.0, ge=0, description="rough cost; only the order matters: the costliest arms start first")
    dir: str | None = Field(
        None,
        description="the arm's sweep folder relative to the study's ('.': the study's "
        "own, '../x': a sibling); unset: the arm's name",
    )
    stages: dict[PerRunStage, Annotated[tuple[NonNegativeFloat, ...], Distinct]] = Field(
        default_factory=dict, description="per-run stage -> the λ (seed 0) whose runs it runs on after the sweep"
    )


class StudyConfig(_Frozen):
    """A study: one sweep per arm of :data:`arms`, run ``lanes`` at a time, then the arms' per-run stages
    (:class:`ArmConfig`), with ``stage_sets`` as each per-run stage's ``--set`` options."""

    preset: PresetName = Field("cpu", description="the sweep preset every arm starts from")
    sets: tuple[str, ...] = Field((), description="every arm's sweep --set options, before the arm's own")
    arms: dict[str, ArmConfig] = Field(description="arm name -> its settings")
    stage_sets: dict[PerRunStage, tuple[str, ...]] = Field(
        default_factory=dict, description="per-run stage -> its --set options (e.g. gaps = ['steps=5000'])"
    )
    lanes: PositiveInt = Field(1, description="arms (and per-run stages) run at once, each on its share of the cores")
    pin: bool = Field(True, description="each lane on its own share of the cores; false: the lanes share every core")
    executor: Literal["inprocess", "process", "ray"] = Field("inprocess", description="each arm's sweep executor")
    workers: PositiveInt = Field(1, description="sweep workers per lane")
    overwrite: bool = Field(False, description="sweep --overwrite: replace an arm's saved sweep settings")

    @model_validator(mode="after")
    def _coherent(self) -> StudyConfig:
        if not self.arms:
            raise ValueError("arms is empty: give at least one arm")
        dirs = [os.path.normpath(arm.dir or name) for name, arm in self.arms.items()]
        if len(set(dirs)) != len(dirs):
            raise ValueError("two arms share a folder: give each its own dir")
        return self

    def stage_config(self, stage: str, extra: tuple[str, ...] | list[str] = ()) -> BaseModel:
        """The settings of the per-run ``stage`` (``stage_sets`` then ``extra``), ConfigError (one line) if bad."""
        return build_config(STAGES[stage].settings, sets=(*self.stage_sets.get(stage, ()), *extra))


def study_config_path(name_or_path: str | Path) -> Path:
    """A study file: ``name_or_path`` itself when it is a file or has a suffix or a folder, else the shipped
    ``smvi/studies/NAME.toml``; ConfigError (one line) naming both when neither exists."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix or len(path.parts) > 1:
        return path
    shipped = STUDY_CONFIGS / f"{path}.toml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in STUDY_CONFIGS.glob("*.toml"))
    raise ConfigError(f"no study file {path} and no shipped study {path!r}: give a TOML path or one of {known}")


def load_study_config(name_or_path: str | Path, sets: tuple[str, ...] | list[str] = ()) -> StudyConfig:
    """The study file ``name_or_path`` (:func:`study_config_path`) with ``sets`` (``key=value`` overrides of the study
    file's own keys, e.g. ``lanes=1``), validated; ConfigError (one line) on unknown keys or bad values."""
    path = study_config_path(name_or_path)
    return build_config(StudyConfig, read_toml(path), sets=tuple(sets), source=f" in {path}")
