"""examples/frontier.py runs end to end on synthetic data (CI smoke test) and writes a frontier a reader can use."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_frontier_example_on_synthetic_data(tmp_path):
    out = tmp_path / "frontier"
    env = {**os.environ, "SMVI_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # no MNIST needed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "frontier.py"),
            "--synthetic",
            "--out",
            str(out),
            "--lams",
            "0,0.1",
            "--epochs",
            "2",
            "--hidden",
            "64",
            "--n-eval",
            "32",
            "--ais-steps",
            "50",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads((out / "frontier.json").read_text())
    assert [p["lam"] for p in points] == [0.0, 0.1] and all(p["epochs"] == 2 and p["n"] == 32 for p in points)
    for p in points:
        assert all(math.isfinite(p[k]) for k in ("log_px", "gap", "elbo", "log_px_se", "gap_se"))
        assert p["gap"] > -5 * p["gap_se"]  # AIS, a tighter lower bound, sits above the ELBO on average
        assert abs(p["log_px"] - p["elbo"] - p["gap"]) < 1e-6  # the gap is the difference of the two it reports
        assert (out / f"lam{p['lam']:g}" / "checkpoint.safetensors").is_file()
    assert "λ = 0.1: log p(x)" in r.stdout
