"""Continuous data: uniform dequantization of 8-bit pixels, the discrete-likelihood correction, and the Gaussian-decoder
path end to end (config, training, ELBO, D_SM, IWAE, AIS, BDMC simulation).

Statistical checks allow 5 standard errors (two-sided false-alarm rate ~6e-7 per number for normal statistics).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from torch.distributions import Normal

import smvi
from conftest import tiny_train_args
from smvi.cli import main
from smvi.core.estimators import ais, iwae_bound, simulate
from smvi.core.models import LinearGaussian
from smvi.core.objectives import elbo, score_matching_divergence
from smvi.data.loading import (
    DynamicBinarizer,
    dequantize_fixed,
    discrete_log_likelihood_bound,
    fixed_inputs,
    load_idx_dir,
)
from smvi.settings.run import ConfigError, load_config

C = 5.0


def gray(n: int = 64, d: int = 16, seed: int = 0) -> torch.Tensor:
    """8-bit gray levels pixel/255 as loaded from IDX files, ``[n, d]`` float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, d), generator=g).float() / 255.0


# ---- dequantization -------------------------------------------------------------------------------------------------
def test_dequantization_stays_in_the_pixel_bin_and_is_uniform_within_it():
    images = gray(256, 784)
    x = dequantize_fixed(images, seed=3)
    pixels = torch.round(images * 255)
    assert torch.equal(torch.floor(x * 256), pixels) and x.min() >= 0 and x.max() < 1
    u = (x * 256 - pixels).double().flatten()  # U[0, 1): mean 1/2, variance 1/12
    se = math.sqrt(1 / 12 / u.numel())
    assert abs(u.mean().item() - 0.5) < C * se
    assert abs(u.var().item() - 1 / 12) < C * math.sqrt(1 / 180 / u.numel())  # Var of (u − ½)² = 1/80 − 1/144
    assert torch.equal(dequantize_fixed(images, seed=3), x) and not torch.equal(dequantize_fixed(images, seed=4), x)
    assert torch.equal(fixed_inputs(images, "dequantize", 3), x)
    assert set(fixed_inputs(images, "binarize", 3).unique().tolist()) <= {0.0, 1.0}


def test_training_batches_are_redrawn_each_epoch_and_resume_exactly():
    images = gray(100, 784)
    loader = DynamicBinarizer(images, 32, seed=0, transform="dequantize")
    first = torch.cat(list(loader.epoch()))
    state = loader.state()
    second = torch.cat(list(loader.epoch()))
    assert first.shape == (100, 784) and not torch.equal(first.sort(0).values, second.sort(0).values)
    assert torch.equal(torch.floor(first * 256).sort(0).values, torch.round(images * 255).sort(0).values)
    loader.set_state(state)
    assert torch.equal(torch.cat(list(loader.epoch())), second)


def test_discrete_bound_against_the_exact_bin_probability():
    """1-d LinearGaussian: log P(pixel) = log(Φ((k+1)/256) − Φ(k/256)) under the closed-form marginal N(b, w² + s²);
    the stated correction E_u log p((k + u)/256) − log 256 must lie below it, and close (p is smooth on a bin)."""
    lg = LinearGaussian(
        torch.tensor([[0.2]], dtype=torch.float64),
        torch.tensor([0.45], dtype=torch.float64),
        0.1,
        torch.zeros(1, 1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    )
    marginal = Normal(0.45, math.sqrt(0.2**2 + 0.1**2))
    u = (torch.arange(10_000, dtype=torch.float64) + 0.5) / 10_000  # midpoint rule over the bin
    for k in (0, 60, 115, 200, 255):
        exact = math.log(marginal.cdf(torch.tensor((k + 1) / 256)) - marginal.cdf(torch.tensor(k / 256)))
        with torch.no_grad():
            log_p = lg.log_marginal(((k + u) / 256).unsqueeze(1)).mean().item()
        bound = discrete_log_likelihood_bound(log_p, dim=1)
        assert bound <= exact + 1e-9 and exact - bound < 1e-3, (k, bound, exact)
    assert discrete_log_likelihood_bound(0.0, 784) == pytest.approx(-4347.4, abs=0.05)


def test_estimators_on_dequantized_data_match_the_linear_gaussian_closed_forms():
    lg = LinearGaussian.random(x_dim=16, z_dim=3, s=0.5, seed=2).requires_grad_(False)
    x = dequantize_fixed(gray(48, 16), seed=0).double()
    exact = lg.log_marginal(x)
    torch.manual_seed(0)
    e = elbo(lg, x, n_samples=2000)
    assert (e < exact).all()
    gap, kl = exact - e, lg.exact_kl(x)  # the ELBO gap is KL(q ‖ p(z|x)), up to the 2000-sample MC error
    assert (gap - kl).abs().max() < 0.5 + 0.05 * kl.max()
    d = score_matching_divergence(lg, x, n_samples=4000)
    rel = (d - lg.exact_score_matching(x)).abs() / lg.exact_score_matching(x)
    assert rel.max() < 0.15
    r = ais(lg, x, steps=300, chains=16, leapfrog_steps=5, start="encoder", seed=1)
    diff = r.log_px - exact  # a stochastic lower bound, tight at 300 steps on this model
    assert abs(diff.mean().item()) < C * diff.std().item() / math.sqrt(len(x)) + 0.05
    assert iwae_bound(lg, x, k=500, seed=0).mean() <= exact.mean() + 0.05


@pytest.mark.parametrize(
    "likelihood, transform, message",
    [
        ("gaussian", "binarize", "set data.transform = 'dequantize'"),
        ("bernoulli", "dequantize", "set data.transform = 'binarize'"),
    ],
)
def test_a_transform_that_does_not_fit_the_likelihood_is_refused(likelihood, transform, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(sets=[f"model.likelihood={likelihood}", f"data.transform={transform}"])
    assert "\n" not in str(err.value)


def test_the_gaussian_likelihood_implies_dequantization_and_old_configs_still_load(tmp_path):
    assert load_config(sets=["model.likelihood=gaussian"]).data.transform == "dequantize"
    assert load_config().data.transform == "binarize"
    old = tmp_path / "old.toml"  # a config.toml written before data.transform existed
    old.write_text('[model]\nlikelihood = "gaussian"\n[data]\ndataset = "idx"\n')
    assert load_config(old).data.transform == "dequantize"


# ---- the Gaussian VAE end to end ------------------------------------------------------------------------------------
def test_gaussian_vae_trains_and_every_estimator_runs_on_it(idx_dir, tmp_path):
    run = tmp_path / "gauss"
    r = CliRunner().invoke(
        main,
        ["train", "--out", str(run), "--epochs", "3", "--set", "model.likelihood=gaussian", *tiny_train_args(idx_dir)],
    )
    assert r.exit_code == 0, r.output
    assert 'transform = "dequantize"' in (run / "config.toml").read_text()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(m["test_elbo"]) and math.isfinite(m["test_d_sm"]) for m in metrics)
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"] + 50  # densities on [0,1]^784 rise fast from σ = 1

    loaded = smvi.load_run(run)
    model = loaded.model.double()
    x = fixed_inputs(load_idx_dir(idx_dir).test_x[:32], "dequantize", loaded.config.data.eval_seed).double()
    torch.manual_seed(0)
    e = elbo(model, x, n_samples=200)
    d_sm = score_matching_divergence(model, x, n_samples=20)
    iw = iwae_bound(model, x, k=200, seed=0)
    a = ais(model, x, steps=200, chains=4, leapfrog_steps=5, start="encoder", seed=0)
    for v in (e, d_sm, iw, a.log_px):
        assert v.shape == (32,) and torch.isfinite(v).all()
    assert (d_sm >= 0).all()
    for bound in (iw, a.log_px):  # both above the ELBO on average (paired over points)
        diff = bound - e
        assert diff.mean() > -C * diff.std() / math.sqrt(len(diff))
    assert (discrete_log_likelihood_bound(a.log_px, 784) < 0).all()  # a lower bound on a log-probability
    xs, zs = simulate(model, 8, seed=0)
    assert xs.shape == (8, 784) and torch.isfinite(xs).all() and len(set(xs.flatten().tolist())) > 2

    # the CLI stages score the run's own transform: fixed dequantized sets, not binarized ones
    r = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(run),
            "--no-progress",
            "--preset",
            "quick",
            "--n-test",
            "16",
            "--n-train",
            "0",
            "--set",
            "ais.steps=20",
            "--set",
            "iwae_k=20",
        ],
    )
    assert r.exit_code == 0, r.output
    record = json.loads((run / "eval.json").read_text())
    x16 = fixed_inputs(
        load_idx_dir(idx_dir).test_x[record["splits"]["test"]["indices"]], "dequantize", loaded.config.data.eval_seed
    ).double()
    same = elbo(model, x16, n_samples=500)  # the record's ELBO is of the dequantized images (a binarized set differs)
    assert abs(record["splits"]["test"]["elbo"]["mean"] - float(same.mean())) < 1.0


def test_a_sweep_preset_takes_the_gaussian_likelihood_with_its_transform_implied(tmp_path, monkeypatch):
    import smvi.studies.sweep
    from smvi.studies.presets import PRESETS

    seen = {}
    monkeypatch.setattr(smvi.studies.sweep, "run_sweep", lambda cfg, *a, **k: seen.setdefault("cfg", cfg) and [])
    r = CliRunner().invoke(
        main,
        ["sweep", str(tmp_path / "sw"), "--preset", "quick", "--no-report", "--set", "run.model.likelihood=gaussian"],
    )
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.run.model.likelihood, cfg.run.data.transform) == ("gaussian", "dequantize")
    assert cfg.model_copy(update={"run": PRESETS["quick"].run}) == PRESETS["quick"]  # the rest is the preset's


@pytest.mark.parametrize("name", ["quick", "cpu", "paper"])
def test_every_sweep_preset_is_itself_from_only_the_keys_it_sets(name):
    from smvi.settings.run import build_config
    from smvi.studies.presets import PRESETS
    from smvi.studies.sweep import SweepConfig

    preset = PRESETS[name]
    assert build_config(SweepConfig, preset.model_dump(mode="json", exclude_unset=True)) == preset


def test_decoder_sigma_script_reports_a_gaussian_run_and_refuses_a_bernoulli_one(idx_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "decoder_sigma.py"
    for name, extra in (("gauss", ["--set", "model.likelihood=gaussian"]), ("bern", [])):
        r = CliRunner().invoke(
            main, ["train", "--out", str(tmp_path / name), "--epochs", "1", *extra, *tiny_train_args(idx_dir)]
        )
        assert r.exit_code == 0, r.output
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "gauss"), "--n", "16"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith(f"{tmp_path / 'gauss'}: log σ median background ") and "foreground" in line, line
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "bern")], capture_output=True, text=True)
    assert r.returncode == 1 and "not gaussian" in r.stderr, r.stderr
