"""The stage list's contract: the torch-free specs (smvi.settings.stages.STAGES) and the run functions
(smvi.stages.registry.STAGES) list the same stages in the same order, every run function has the one shape, every
stage has its settings section in a sweep and its record in a run directory, and a sweep runs every stage — the
convergence check and the gap split included — once, with reruns doing nothing and `smvi status` showing each."""

from __future__ import annotations

import dataclasses
import inspect
import tomllib

import pytest

import smvi.studies.sweep as S
from smvi.progress import stage_priors
from smvi.settings.run import RunConfig, build_config, config_to_toml
from smvi.settings.stages import STAGES as SPECS
from smvi.settings.stages import EvalConfig, StageSpec
from smvi.stages.registry import STAGES
from smvi.store.rundir import RunDir, sweep_paths
from smvi.studies.status import status_text
from test_sweep import snapshot, tiny_sweep

SHAPE = ["run_dir", "cfg", "data", "overwrite", "progress", "device"]


def test_the_settings_and_the_run_functions_list_the_same_stages():
    assert list(STAGES) == list(SPECS) and list(SPECS)[0] == "train"
    for name, stage in STAGES.items():
        spec = SPECS[name]
        assert all(getattr(stage, f.name) == getattr(spec, f.name) for f in dataclasses.fields(StageSpec))
        params = inspect.signature(stage.run).parameters
        assert list(params)[:2] == SHAPE[:2], (name, list(params))
        assert all(params[k].kind is params[k].KEYWORD_ONLY for k in SHAPE[2:]), (name, list(params))
        assert stage.served(stage.settings())[0] == stage.settings()
        assert S.SweepConfig.model_fields[stage.key].annotation is stage.settings  # its section of a sweep
        if stage.record is not None:
            assert stage.record in RunDir.record_kinds()


def test_every_prior_is_of_a_stage_and_a_sweep_gives_each_its_settings():
    paper = S.SweepConfig(run=RunConfig(), stages=tuple(SPECS))
    priors = S.sweep_priors(paper)
    assert set(priors) == {"epochs", *(n for n, s in SPECS.items() if s.record)}
    assert set(stage_priors(RunConfig(), EvalConfig())) <= {"epochs", *SPECS}
    longer = paper.model_copy(update={"gaps": paper.gaps.model_copy(update={"steps": 6000})})
    assert S.sweep_priors(longer)["gaps"] > priors["gaps"]


def test_a_sweep_toml_without_the_new_sections_is_the_same_sweep(idx_dir, tmp_path):
    """Sweeps written before convergence, gaps and ssl-refined were sweep stages still load, to the same settings."""
    cfg = tiny_sweep(idx_dir)
    tree = tomllib.loads(config_to_toml(cfg))
    old = {k: v for k, v in tree.items() if k not in ("convergence", "gaps", "ssl_refined")}
    assert build_config(S.SweepConfig, old).model_dump() == cfg.model_dump()
    with pytest.raises(Exception, match="stages"):
        build_config(S.SweepConfig, {**old, "stages": ["train", "export"]})


TINY = {
    "pictures": {"n_samples": 4, "n_reconstructions": 4, "n_latent": 16, "columns": 4},
    "convergence": {"steps": [4, 8], "n_points": 8, "ais": {"chains": 2, "leapfrog_steps": 2}},
    "gaps": {
        "n_points": 8,
        "ais": {"steps": 8, "chains": 2, "leapfrog_steps": 2},
        "steps": 20,
        "window": 10,
        "n_samples": 2,
        "eval_samples": 10,
        "batch_size": 8,
    },
    "ssl_refined": {
        "sizes": [20],
        "seeds": [0],
        "test_size": 32,
        "cv_folds": 2,
        "steps": 5,
        "n_samples": 2,
        "batch_size": 64,
    },
}


def test_a_sweep_runs_every_stage_once_and_status_shows_each(idx_dir, tmp_path):
    cfg = tiny_sweep(idx_dir, lams=[0.0], stages=list(SPECS), **TINY)
    sweep_dir = tmp_path / "sw"
    (result,) = S.run_sweep(cfg, sweep_dir, progress=False)
    assert result["status"] == "ok" and result["done"] == list(SPECS), result
    rd = RunDir(sweep_paths(sweep_dir)[2] / "lam0_seed0")
    for stage in STAGES.values():
        if stage.record is not None:  # each record is current for the sweep's settings of its stage
            assert any(rd.current_record(stage.record, c)[1] is None for c in stage.served(getattr(cfg, stage.key)))
    before = snapshot(sweep_dir)
    (again,) = S.run_sweep(cfg, sweep_dir, progress=False)
    assert again["done"] == [] and snapshot(sweep_dir) == before
    lines = status_text(sweep_dir).splitlines()
    assert lines[1].split() == ["run", "epochs", *(n for n, s in SPECS.items() if s.record)]
    with_records = [n for n, s in SPECS.items() if s.record]
    assert lines[2].split()[2:] == ["done"] * len(with_records) and lines[-1] == "1 of 1 runs complete"
