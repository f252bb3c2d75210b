"""The benchmark script runs end to end (tiny, synthetic; never timed), and the objective computes the same values
and gradients as the plain reference implementation the benchmark compares against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import smvi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from reference import reference_loss  # noqa: E402


def small_vae(activation="softplus", likelihood="bernoulli", seed=0, scale=0.15) -> smvi.VAE:
    torch.manual_seed(seed)
    cfg = smvi.ModelConfig(encoder_hidden=(12,), decoder_hidden=(10, 8), z_dim=3, activation=activation,
                           likelihood=likelihood)
    model = smvi.VAE(x_dim=9, config=cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model


def test_smvi_objective_equals_the_plain_reference_on_the_same_noise():
    model, x = small_vae(scale=0.3), torch.bernoulli(torch.rand(6, 9, dtype=torch.float64))
    torch.manual_seed(5)
    ref_loss, ref_elbo = reference_loss(model, x, lam=0.7)
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
    torch.manual_seed(5)
    terms = smvi.smvi_objective(model, x, lam=0.7)
    grads = torch.autograd.grad(terms.loss.mean(), list(model.parameters()))
    torch.testing.assert_close(terms.elbo, ref_elbo, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.loss.mean(), ref_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_benchmark_quick_run_writes_its_results(tmp_path):
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"machine", "steps", "threads", "training", "ais", "ratios", "targets"} <= res.keys()
    assert {"cpu", "torch", "torch_threads"} <= res["machine"].keys()
    for case in ("vae_b16", "smvi_b16", "reference_b16", "smvi_bf16_b16", "matmul_fp32"):
        assert res["steps"][case]["cpu_ms"] > 0, case
    assert "smvi_over_vae_b16" in res["ratios"]["cpu"] and "ais_smvi_over_reference_throughput" in res["ratios"]["cpu"]
    assert "ratios" in r.stdout


def test_family_cost_benchmark_quick_run_writes_its_ratios(tmp_path):
    """benchmarks/families.py (the extra cost per step of each posterior family and baseline) runs end to end."""
    out = tmp_path / "families.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "families.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    cases = {"diagonal", "full", "flow", "diagonal_smvi", "full_smvi", "flow_smvi", "beta", "iwae5", "iwae50"}
    assert set(res["ratios_to_diagonal"]["cpu"]) == cases and res["ratios_to_diagonal"]["cpu"]["diagonal"] == 1.0
    assert all(res["times"][k]["cpu_ms"] > 0 for k in cases)
