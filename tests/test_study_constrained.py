"""The committed constrained-SMVI study (``make constrained``) runs end to end on tiny synthetic settings: one sweep
with a run per target (train with a learned λ, evaluate, ssl), its small files and the fixed-λ reference runs copied
to the results folder and reported there, and a rerun redoes nothing."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from test_report import write_run

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")]

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "constraint": {"step_size": 0.3},
    "run": {
        "model": {"z_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16]},
        "data": {"dataset": "idx", "monitor_size": 32},
        "train": {"epochs": 2, "batch_size": 64},
    },
    "eval": {
        "n_test": 16,
        "n_train": 8,
        "elbo_samples": 10,
        "dsm_samples": 4,
        "iwae_k": 10,
        "batch_size": 8,
        "ais": {"steps": 8, "chains": 2, "leapfrog_steps": 2},
    },
    "ssl": {"sizes": [20], "seeds": [0], "test_size": 64, "cv_folds": 2, "C_grid": [1.0], "gamma_grid": [1.0]},
}


def make(tmp_path: Path, base: Path) -> subprocess.CompletedProcess:
    args = [
        "make",
        "-C",
        str(ROOT),
        "-o",
        ".venv/.installed",
        "constrained",
        f"SMVI={sys.executable} -m smvi",
        "FETCH=true",
        "DSM_TARGETS=50 0.001",
        "GAP_TARGETS=2",
        f"CONSTRAINED_BASE=--config {base}",
        f"CONSTRAINED_RUNS={tmp_path / 'runs'}",
        f"CONSTRAINED_RESULTS={tmp_path / 'results'}",
        f"CONSTRAINED_FIXED={tmp_path / 'fixed'}",
        "CONSTRAINED_EXEC=",
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_make_constrained_runs_every_target_through_every_stage(idx_dir, tmp_path):
    base = tmp_path / "tiny.toml"
    tree = {**TINY, "run": {**TINY["run"], "data": {**TINY["run"]["data"], "data_dir": str(idx_dir)}}}
    base.write_text(tomli_w.dumps(tree))
    for lam in (0.0, 0.1):  # the committed fixed-λ runs, as the report's reference
        write_run(tmp_path / "fixed" / f"lam{lam:g}_seed0", lam, 0)
    r = make(tmp_path, base)
    assert r.returncode == 0, r.stdout + r.stderr
    for name, measure, target in (("dsm50", "dsm", 50.0), ("dsm0.001", "dsm", 0.001), ("gap2", "gap", 2.0)):
        run = tmp_path / "results" / "runs" / f"{name}_seed0"
        assert sorted(p.name for p in run.iterdir()) == [
            "config.toml",
            "data.json",
            "eval.json",
            "metrics.jsonl",
            "ssl.json",
        ]
        m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [e["constraint_target"] for e in m] == [target] * 2
        assert [e["constraint_measure"] for e in m] == [measure] * 2
        assert json.loads((run / "eval.json").read_text())["splits"]["test"]["n"] == 16
    unreachable = (tmp_path / "results" / "runs" / "dsm0.001_seed0" / "metrics.jsonl").read_text()
    assert json.loads(unreachable.splitlines()[-1])["lam"] > 1e-3  # λ rose toward the cap
    report = tmp_path / "results" / "report"
    with (report / "constrained.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == ["runs/dsm0.001_seed0", "runs/dsm50_seed0", "runs/gap2_seed0"]
    assert {"figc1_targets.png", "figc2_lambda.png", "figc3_plane.png", "fig1_gap.png"} <= {
        p.name for p in report.iterdir()
    }  # fig1: the fixed-λ reference runs
    again = make(tmp_path, base)
    assert again.returncode == 0, again.stdout + again.stderr
    status = json.loads((tmp_path / "runs" / "sweep_status.json").read_text())
    assert [r["done"] for r in status["runs"]] == [[], [], []]  # nothing redone
