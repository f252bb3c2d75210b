"""The sweep's target axis: constrained runs (λ learned toward a D_SM or gap target) next to fixed-λ runs, named
unambiguously, with nonsense combinations refused in one line and old sweep files loading unchanged."""

from __future__ import annotations

import json

import pytest

import smvi.studies.sweep as S
from smvi.settings.run import ConfigError, build_config, config_to_toml
from smvi.store.rundir import fingerprint
from smvi.studies.presets import PRESETS

CPU = PRESETS["cpu"].model_dump(mode="json")


def sweep(*sets: str) -> S.SweepConfig:
    return build_config(S.SweepConfig, CPU, sets=list(sets))


def test_targets_make_one_constrained_run_each_with_lambda_zero():
    cfg = sweep(
        "lams=[0, 0.1]",
        "dsm_targets=[300, 0.1]",
        "gap_targets=[1]",
        "seeds=[0, 2]",
        "constraint.step_size=0.05",
        "constraint.gap_k=4",
    )
    specs = S.plan(cfg)
    assert [s.name for s in specs] == [
        "lam0_seed0",
        "lam0.1_seed0",
        "dsm300_seed0",
        "dsm0.1_seed0",
        "gap1_seed0",
        "lam0_seed2",
        "lam0.1_seed2",
        "dsm300_seed2",
        "dsm0.1_seed2",
        "gap1_seed2",
    ]
    by = {s.name: s.config.train for s in specs}
    assert by["lam0.1_seed2"].lam == 0.1 and by["lam0.1_seed2"].constraint.target is None
    for name, measure, target, seed in (
        ("dsm300_seed0", "dsm", 300.0, 0),
        ("dsm0.1_seed2", "dsm", 0.1, 2),
        ("gap1_seed2", "gap", 1.0, 2),
    ):
        t = by[name]
        assert (t.lam, t.seed, t.constraint.measure, t.constraint.target) == (0.0, seed, measure, target)
        assert (t.constraint.step_size, t.constraint.gap_k) == (0.05, 4)
    assert [s.ssl.raw_pixels for s in specs].count(True) == 1  # the baseline once


def test_target_names_round_trip_exactly_and_never_meet_lambda_names():
    assert S.target_run_name("dsm", 300.0, 0) == "dsm300_seed0"
    assert S.target_run_name("gap", 0.5, 3) == "gap0.5_seed3"
    assert S.target_run_name("dsm", 0.1000001, 0) == "dsm0.1000001_seed0"
    for x in (1e-05, 0.1000001, 123456789.0, 1 / 3):
        assert float(S.target_run_name("dsm", x, 0)[3:].split("_seed")[0]) == x
    names = [s.name for s in S.plan(sweep("lams=[1]", "dsm_targets=[1]", "gap_targets=[1]"))]
    assert names == ["lam1_seed0", "dsm1_seed0", "gap1_seed0"]


def test_a_target_run_is_the_run_the_old_one_target_sweep_made():
    """The study's first layout: one sweep per target, lams=[0] and the target in the base config. Moving those run
    directories into the new layout keeps them: the same identity."""
    new = {
        s.name: s.config
        for s in S.plan(sweep("lams=[]", "dsm_targets=[300]", "gap_targets=[1]", 'run.train.precision="bf16"'))
    }
    old_dsm = S.plan(sweep("lams=[0]", "run.train.constraint.target=300", 'run.train.precision="bf16"'))
    old_gap = S.plan(
        sweep(
            "lams=[0]",
            "run.train.constraint.target=1",
            'run.train.constraint.measure="gap"',
            'run.train.precision="bf16"',
        )
    )
    assert [s.name for s in old_dsm] == ["lam0_seed0"]  # old sweeps keep their names
    assert fingerprint(old_dsm[0].config) == fingerprint(new["dsm300_seed0"])
    assert fingerprint(old_gap[0].config) == fingerprint(new["gap1_seed0"])


def test_old_sweep_files_load_unchanged_and_new_ones_round_trip():
    old = {k: v for k, v in CPU.items() if k not in ("dsm_targets", "gap_targets", "constraint")}
    assert build_config(S.SweepConfig, old) == PRESETS["cpu"]
    import tomllib

    cfg = sweep("lams=[]", "dsm_targets=[3e-05, 30]", "constraint.lam_max=5")
    assert build_config(S.SweepConfig, tomllib.loads(config_to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    "sets, words",
    [
        (["lams=[]"], "all empty"),
        (["dsm_targets=[1]", "run.train.constraint.target=3"], "run.train.constraint.target is set"),
        (["lams=[0.1]", "run.train.constraint.target=3"], "run.train.constraint.target is set"),
        (["constraint.step_size=0.3"], "constraint.step_size is set but dsm_targets and gap_targets are empty"),
        (["dsm_targets=[1]", "constraint.gap_k=3"], "gap_targets is empty"),
        (["dsm_targets=[1]", "constraint.lam_init=100"], "constraint: "),
        (["gap_targets=[1]", "run.train.lam_warmup_epochs=2"], "lam_warmup_epochs is set"),
        (["dsm_targets=[1, 1]"], "distinct"),
        (["gap_targets=[0]"], "gap_targets.0"),
        (["constraint.target=3", "dsm_targets=[1]"], "constraint.target: unknown key"),
    ],
)
def test_nonsense_sweeps_are_one_line_errors(sets, words):
    with pytest.raises(ConfigError) as e:
        sweep(*sets)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_sweep_trains_fixed_and_target_runs_side_by_side(idx_dir, tmp_path):
    tree = {
        "lams": [0.0],
        "dsm_targets": [50.0],
        "gap_targets": [2.0],
        "stages": ["train"],
        "constraint": {"step_size": 0.3},
        "run": {
            "model": {"z_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16]},
            "data": {"dataset": "idx", "data_dir": str(idx_dir), "monitor_size": 32},
            "train": {"epochs": 1, "batch_size": 64},
        },
    }
    results = S.run_sweep(build_config(S.SweepConfig, tree), tmp_path / "sw", progress=False)
    assert [(r["name"], r["status"]) for r in results] == [
        ("lam0_seed0", "ok"),
        ("dsm50_seed0", "ok"),
        ("gap2_seed0", "ok"),
    ]
    last = {
        r["name"]: json.loads((tmp_path / "sw" / "runs" / r["name"] / "metrics.jsonl").read_text().splitlines()[-1])
        for r in results
    }
    assert "constraint_target" not in last["lam0_seed0"] and last["lam0_seed0"]["lam"] == 0
    assert (last["dsm50_seed0"]["constraint_measure"], last["dsm50_seed0"]["constraint_target"]) == ("dsm", 50.0)
    assert (last["gap2_seed0"]["constraint_measure"], last["gap2_seed0"]["constraint_target"]) == ("gap", 2.0)


def test_an_ssl_record_with_the_raw_baseline_serves_a_run_that_does_not_ask_for_it(idx_dir, tmp_path):
    """Runs moved between sweeps (the study's one-run sweeps into one) keep their SSL records: only the first run
    of a sweep asks for the raw-pixel baseline, and a record that has it holds everything a later run asks."""
    from test_sweep import tiny_sweep

    first = S.run_sweep(tiny_sweep(idx_dir, stages=["train", "ssl"]), tmp_path / "sw", progress=False)
    assert [r["done"] for r in first] == [["train", "ssl"], ["train", "ssl"]]
    swapped = tiny_sweep(idx_dir, lams=[0.5, 0.0], stages=["train", "ssl"])
    again = S.run_sweep(swapped, tmp_path / "sw", overwrite=True, progress=False)
    assert [(r["name"], r["done"]) for r in again] == [("lam0.5_seed0", ["ssl"]), ("lam0_seed0", [])]
