"""`smvi config` lists every key with its default, type and description, as TOML that validates back to the defaults."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from smvi.cli import main
from smvi.settings.keys import describe, format_keys
from smvi.settings.run import ConfigError, RunConfig, build_config, load_config
from smvi.settings.stages import PicturesConfig
from smvi.stages.evaluate import EvalConfig
from smvi.stages.ssl import SSLConfig
from smvi.studies.presets import EVAL_PRESETS, PRESETS
from smvi.studies.sweep import SweepConfig


def leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out |= leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


@pytest.mark.parametrize(
    "cls, instance",
    [
        (RunConfig, RunConfig()),
        (EvalConfig, EvalConfig()),
        (SSLConfig, SSLConfig()),
        (SweepConfig, SweepConfig()),
        (PicturesConfig, PicturesConfig()),
        *[(EvalConfig, p) for p in EVAL_PRESETS.values()],
        *[(SweepConfig, p) for p in PRESETS.values()],
    ],
)
def test_the_listing_is_complete_and_validates_back_to_the_defaults(cls, instance):
    text = format_keys(cls, "header", defaults=instance)
    assert build_config(cls, tomllib.loads(text)) == instance
    keys = {d.key for d in describe(cls)}
    assert keys == leaves(instance.model_dump(mode="json"))
    assert all(d.description and d.type for d in describe(cls))  # every key explains itself


def test_types_and_bounds_are_readable():
    docs = {d.key: d for d in describe(RunConfig)}
    assert docs["model.z_dim"].type == "int, > 0" and docs["model.z_dim"].default == 50
    assert docs["train.grad_clip"].type == "float, > 0, or unset" and docs["train.grad_clip"].default is None
    assert docs["train.precision"].type == "'fp32' | 'bf16'"
    assert docs["data.transform"].default == "binarize"
    sweep = {d.key: d for d in describe(SweepConfig)}
    assert sweep["lams"].type == "list of float ≥ 0, distinct"  # may be empty when targets are given
    assert sweep["seeds"].type == "list of int ≥ 0, distinct, non-empty"


@pytest.mark.parametrize(
    "what, key",
    [
        ("run", "lam_warmup_epochs = 0.0"),
        ("eval", "chains = 4"),
        ("ssl", "raw_pixels = true"),
        ("sweep", "[run.train]"),
        ("pictures", 'projection = "pca"'),
        ("sweep", "[pictures]"),
    ],
)
def test_smvi_config_prints_each_kind(what, key):
    r = CliRunner().invoke(main, ["config", what])
    assert r.exit_code == 0 and key in r.output and r.output.startswith("# ")


def test_smvi_config_shows_a_presets_values_and_refuses_an_unknown_one():
    r = CliRunner().invoke(main, ["config", "sweep", "--preset", "cpu"])
    assert r.exit_code == 0 and "epochs = 30" in r.output and "steps = 500" in r.output
    r = CliRunner().invoke(main, ["config", "eval", "--preset", "fast"])
    assert r.exit_code == 2 and "default, quick" in r.output


def test_the_unknown_key_error_points_to_smvi_config():
    with pytest.raises(ConfigError, match=r"train\.lamda: unknown key .*`smvi config`"):
        load_config(sets=["train.lamda=0.1"])
