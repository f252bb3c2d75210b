"""scripts/frontier_study.py (the study behind `make frontier`) runs end to end on tiny synthetic data: one sweep per
arm with the arm's objective or family, a gaps record where the gap is split, and a rerun that resumes without
redoing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smvi.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def tiny(idx_dir: Path) -> list[str]:
    sets = [f"run.data.dataset='idx'", f"run.data.data_dir='{idx_dir}'", "run.data.monitor_size=32",
            "run.model.z_dim=2", "run.model.encoder_hidden=[16]", "run.model.decoder_hidden=[16]",
            "run.train.epochs=1", "run.train.batch_size=64", "stages=['train', 'evaluate']", "eval.n_test=6",
            "eval.n_train=0", "eval.ais.steps=5", "eval.elbo_samples=10", "eval.dsm_samples=5", "eval.iwae_k=10",
            "lams=[0]"]
    gaps = ["steps=30", "n_points=6", "ais.steps=5", "eval_samples=20"]
    return [a for s in sets for a in ("--set", s)] + [a for s in gaps for a in ("--gaps-set", s)]


def study(out: Path, idx_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(out), "--only", "beta2", "--only", "flow",
           *tiny(idx_dir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_frontier_study_runs_on_tiny_data_and_resumes(idx_dir, tmp_path):
    out = tmp_path / "frontier"
    r = study(out, idx_dir)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    beta, flow = out / "beta2" / "runs" / "lam0_seed0", out / "flow" / "runs" / "lam0_seed0"
    assert 'objective = "beta"' in (beta / "config.toml").read_text() and "beta = 2.0" in (beta / "config.toml").read_text()
    assert 'posterior = "flow"' in (flow / "config.toml").read_text()
    assert (beta / "eval.json").exists() and (flow / "eval.json").exists()
    g, stale = RunDir(flow).current_record("gaps")
    assert stale is None and g.posterior == "flow" and g.n == 6 and RunDir(beta).read_record("gaps") is None
    before = RunDir(flow).record_path("gaps").read_bytes()
    r = study(out, idx_dir)  # resumes: nothing is recomputed
    assert r.returncode == 0 and RunDir(flow).record_path("gaps").read_bytes() == before
    assert "+ smvi gaps" not in r.stdout
    r = study(out, idx_dir, "--gaps-set", "eval_samples=21")  # other settings: the stale record is recomputed
    assert r.returncode == 0 and "+ smvi gaps" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert RunDir(flow).read_record("gaps").header.settings["eval_samples"] == 21


def test_bad_gaps_settings_are_one_line_before_any_sweep(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--only", "flow",
           "--gaps-set", "ais_steps=5"]  # the old flat name: now ais.steps
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: --gaps-set") and "ais_steps" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "f").exists()


def test_a_missing_smvi_sweep_is_one_line(idx_dir, tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--only", "smvi",
           "--smvi-sweep", str(tmp_path / "nowhere")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
