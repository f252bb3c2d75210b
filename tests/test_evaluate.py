"""`smvi evaluate` and `smvi convergence` on a tiny trained run: the files they write and how they refuse."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import tiny_train_args

from smvi.cli import main

TINY = ["--set", "elbo_samples=20", "--set", "dsm_samples=4", "--set", "iwae_k=20", "--set", "ais_chains=2",
        "--set", "ais_leapfrog=2", "--set", "batch_size=16"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def trained(idx_dir, tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--out", out, "--epochs", 3, *tiny_train_args(idx_dir))
    assert r.exit_code == 0, r.output
    return out


def test_evaluate_writes_every_estimate_with_standard_errors(trained):
    r = invoke("evaluate", trained, "--n-test", 24, "--n-train", 16, "--ais-steps", 20, "--no-progress", *TINY)
    assert r.exit_code == 0, r.output
    e = json.loads((trained / "eval.json").read_text())
    assert set(e["splits"]) == {"test", "train"} and e["splits"]["test"]["n"] == 24 and e["epoch"] == 3
    for split in e["splits"].values():
        for key in ("elbo", "d_sm", "iwae", "ais", "gap", "gap_iwae"):
            assert split[key]["se"] > 0, key
        assert split["ais"]["mean"] - split["elbo"]["mean"] == pytest.approx(split["gap"]["mean"])
        assert 0 < split["ais_acceptance"] <= 1
    assert e["work"]["gradient_evaluations"] == 40 * 2 * 20 * 2
    assert e["settings"]["ais_steps"] == 20 and e["settings"]["n_test"] == 24


def test_evaluate_refuses_to_overwrite_and_bad_run_dirs(trained, tmp_path):
    args = ("--n-test", 8, "--n-train", 0, "--ais-steps", 5, "--no-progress", *TINY)
    assert invoke("evaluate", trained, *args).exit_code == 0
    before = (trained / "eval.json").read_bytes()
    r = invoke("evaluate", trained, *args)
    assert r.exit_code == 1 and "--overwrite" in r.output and (trained / "eval.json").read_bytes() == before
    assert invoke("evaluate", trained, *args, "--overwrite").exit_code == 0
    r = invoke("evaluate", tmp_path / "nothing", *args)
    assert r.exit_code == 1 and "does not exist" in r.output
    r = invoke("evaluate", trained, "--set", "ais_step=5")
    assert r.exit_code == 1 and "unknown key" in r.output


def test_convergence_brackets_simulated_data(trained):
    r = invoke("convergence", trained, "--steps", "5,20", "--n-points", 12, "--no-progress", *TINY)
    assert r.exit_code == 0, r.output
    c = json.loads((trained / "convergence.json").read_text())
    assert [b["steps"] for b in c["bdmc"]] == [5, 20] and len(c["ladder"]["means"]) == 2
    # the sandwich: reverse AIS (upper) above forward AIS (lower) on average, tightening with more steps
    assert all(b["upper"] > b["lower"] - 3 * b["gap_se"] for b in c["bdmc"])
    assert c["bdmc"][1]["gap"] < c["bdmc"][0]["gap"] + 3 * c["bdmc"][0]["gap_se"]
    r = invoke("convergence", trained, "--steps", "5,x")
    assert r.exit_code == 2 and "comma-separated" in r.output
