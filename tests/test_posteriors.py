"""The built-in posterior families one by one (what every family must do is tests/test_families.py): the flow's
sample and density agree; the full-covariance family matches the closed-form KL and D_SM on the linear-Gaussian model
and reaches 0 at the exact posterior; the diagonal default is the VAE exactly as it was (parameters, outputs, old runs
and checkpoints)."""

from __future__ import annotations

import math

import pytest
import torch

import smvi
from smvi.core.models import VAE, LinearGaussian, _mlp
from smvi.core.posteriors import CouplingFlow, FullGaussian
from smvi.settings.run import ConfigError, ModelConfig, load_config
from smvi.stages.ssl import encoder_features
from smvi.stages.train import load_run, train
from smvi.store.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from smvi.store.rundir import RunDir
from test_families import SMALL, random_family

FLOW = SMALL["flow"]


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_the_gaussian_families_are_torch_s_multivariate_normal(kind):
    """Their log q is torch.distributions' MultivariateNormal with the same mean and covariance (so exactly
    normalized; the contract test checks the mass on a grid for every family)."""
    family, params = random_family(kind, z_dim=3)
    q = family.distribution(params)
    reference = torch.distributions.MultivariateNormal(
        q.mean, covariance_matrix=q.covariance_matrix if kind == "full" else torch.diag_embed(q.variance)
    )
    z = torch.randn(7, 3, 3, dtype=torch.float64)
    assert torch.allclose(q.log_prob(z), reference.log_prob(z), atol=1e-12)


def test_the_flow_sample_and_its_density_agree():
    """log q(f(u)) = log N(u) − Σ log-scales, through the inverse, for samples drawn forward."""
    family, params = random_family("flow", z_dim=5)
    q = family.distribution(params)
    u = q.base_dist.sample((4,))
    z, log_det = u, torch.zeros(u.shape[:-1], dtype=u.dtype)
    for t in q.transforms:
        y = t(z)
        log_det = log_det + t.log_abs_det_jacobian(z, y)
        z = y
    assert torch.allclose(q.log_prob(z), q.base_dist.log_prob(u) - log_det, atol=1e-10)


def posterior_as_full_q(m: LinearGaussian, x: torch.Tensor) -> LinearGaussian:
    """The linear-Gaussian model whose full-covariance encoder outputs the exact posterior for every x."""
    s2 = torch.exp(2 * m.log_s).detach()
    cov = torch.linalg.inv(torch.eye(m.z_dim, dtype=torch.float64) + m.W.T @ m.W / s2).detach()
    L = torch.linalg.cholesky(cov)
    rows, cols = torch.tril_indices(m.z_dim, m.z_dim, -1)
    family = FullGaussian(m.z_dim).double()
    A = cov @ m.W.detach().T / s2
    return LinearGaussian(
        m.W.detach(),
        m.b.detach(),
        float(s2.sqrt()),
        A,
        -A @ m.b.detach(),
        L.diagonal().log(),
        family=family,
        E=torch.zeros(len(rows), m.x_dim, dtype=torch.float64),
        e=L[rows, cols] / family.off_scale,
    )


def test_full_covariance_kl_and_d_sm_match_their_closed_forms_and_vanish_at_the_posterior():
    m = LinearGaussian.random(5, 3, seed=2, posterior="full")
    x = m.decode(torch.randn(4, 3, dtype=torch.float64)).sample().detach()
    torch.manual_seed(0)
    n = 20000
    with torch.no_grad():
        q, post = m.encode(x), m.posterior(x)
        z = q.sample((n,))
        log_ratio = q.log_prob(z) - post.log_prob(z)
    kl_mc, kl_se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert ((kl_mc - m.exact_kl(x).detach()).abs() < 4 * kl_se).all()
    sq = torch.stack([smvi.score_matching_divergence(m, x, n_samples=1).detach() for _ in range(4000)])
    assert ((sq.mean(0) - m.exact_score_matching(x).detach()).abs() < 4 * sq.std(0) / math.sqrt(len(sq))).all()
    assert (m.exact_kl(x) > 0.1).all() and (m.exact_score_matching(x) > 0.1).all()  # not trivially 0 here

    exact = posterior_as_full_q(m, x)
    assert torch.allclose(exact.encode(x).covariance_matrix, exact.posterior(x).covariance_matrix, atol=1e-12)
    assert exact.exact_kl(x).abs().max() < 1e-10 and exact.exact_score_matching(x).abs().max() < 1e-10
    # the Monte Carlo D_SM and the SMVI objective see it too: every draw has q's score = the posterior's
    assert smvi.score_matching_divergence(exact, x, n_samples=50).abs().max() < 1e-10
    assert smvi.smvi_objective(exact, x, lam=1.0).d_sm.abs().max() < 1e-10


def test_full_covariance_kl_to_the_prior_is_analytic():
    family, params = random_family("full", z_dim=3)
    q = family.distribution(params)
    prior = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1
    )
    z = q.sample((200000,))
    mc = (q.log_prob(z) - prior.log_prob(z)).mean(0)
    assert torch.allclose(torch.distributions.kl_divergence(q, prior), mc, atol=0.02)


def _variance_after_one_adam_step(posterior: str, off_scale: float | None = None) -> float:
    """Mean variance of q(z|x) over coordinates and images after one Adam step (lr 1e-3) from the paper's init."""
    torch.manual_seed(0)
    x = (torch.rand(128, 784) < 0.3).float()
    m = VAE(784, ModelConfig(posterior=posterior))
    if off_scale is not None:
        m.family.off_scale.fill_(off_scale)
    optimizer = torch.optim.Adam(m.parameters(), lr=1e-3)
    smvi.smvi_objective(m, x, lam=0.0).loss.mean().backward()
    optimizer.step()
    with torch.no_grad():
        return float(m.encode(x).variance.mean())


def test_the_full_family_s_first_adam_step_moves_q_s_variance_like_the_diagonal_family_s():
    """Adam's first step moves every encoder output by about the same amount; unscaled, the d − 1 off-diagonal
    entries of a row add up in that coordinate's variance (the collapse FullGaussian's docstring describes). With
    off_scale = 1/√d, q's variance moves about as the diagonal family's does."""
    diagonal = _variance_after_one_adam_step("diagonal")
    assert _variance_after_one_adam_step("full") < 1.25 * diagonal
    assert _variance_after_one_adam_step("full", off_scale=1.0) > 3 * diagonal  # the test sees the difference


def test_a_full_checkpoint_without_the_off_diagonal_scale_is_refused(tmp_path):
    m = VAE(784, ModelConfig(posterior="full", z_dim=4, encoder_hidden=(8,), decoder_hidden=(8,)))
    state = {k: v for k, v in m.state_dict().items() if k != "family.off_scale"}
    with pytest.raises(CheckpointError, match=r"missing: \['family.off_scale'\]"):
        load_weights(VAE(784, m.config), state, tmp_path / "old.safetensors")


# ---- the diagonal default is the VAE as it was ----------------------------------------------------------------------
def test_the_diagonal_default_is_bit_identical_to_the_original_vae():
    cfg = ModelConfig(z_dim=5, encoder_hidden=(16,), decoder_hidden=(16,))
    torch.manual_seed(0)
    model = VAE(784, cfg)
    torch.manual_seed(0)  # the original construction: two He-init MLPs, the encoder emitting [μ, log σ]
    enc = _mlp([784, 16, 10], cfg.activation, cfg.encoder_last_scale)
    dec = _mlp([5, 16, 784], cfg.activation, cfg.decoder_last_scale)
    legacy = {
        **{f"encoder.{k}": v for k, v in enc.state_dict().items()},
        **{f"decoder.{k}": v for k, v in dec.state_dict().items()},
    }
    state = model.state_dict()
    assert list(state) == list(legacy) and all(torch.equal(state[k], legacy[k]) for k in legacy)
    x = torch.bernoulli(torch.rand(4, 784, generator=torch.Generator().manual_seed(1)))
    mean, log_std = enc(x).chunk(2, -1)
    q = model.encode(x)
    assert torch.equal(q.mean, mean) and torch.equal(q.stddev, log_std.exp())
    assert isinstance(q, torch.distributions.Independent) and isinstance(q.base_dist, torch.distributions.Normal)


def _strip_new_keys(tree: dict) -> dict:
    new = {"posterior", "flow_layers", "flow_hidden", "flow_context", "objective", "beta", "iwae_k"}
    return {s: {k: v for k, v in vals.items() if k not in new} for s, vals in tree.items()}


def test_a_run_written_before_families_existed_still_loads_and_resumes(idx_dir, tmp_path):
    """Old config.toml and checkpoint headers lack the new keys; they must load (defaults filled) and resume."""
    import tomli_w

    cfg = load_config(
        sets=[
            "model.z_dim=3",
            "model.encoder_hidden=[8]",
            "model.decoder_hidden=[8]",
            "data.dataset='idx'",
            f"data.data_dir='{idx_dir}'",
            "data.monitor_size=32",
            "train.batch_size=64",
            "train.epochs=1",
        ]
    )
    out = tmp_path / "old"
    train(cfg, out, progress=False)
    ck = load_checkpoint(RunDir(out).checkpoint_path)
    run = load_run(out)
    opt = torch.optim.Adam(run.model.parameters())
    opt.load_state_dict(ck.optimizer)
    # as the old code wrote them: no fingerprint in the checkpoint, no fingerprint line in config.toml
    save_checkpoint(
        RunDir(out).checkpoint_path,
        model=run.model,
        optimizer=opt,
        rng=ck.rng,
        progress=ck.progress,
        config=_strip_new_keys(ck.config),
    )
    old = _strip_new_keys(cfg.model_dump(mode="json", exclude_none=True))
    RunDir(out).config_path.write_text(tomli_w.dumps(old))
    assert "posterior" not in load_checkpoint(RunDir(out).checkpoint_path).config["model"]
    loaded = load_run(out)
    assert loaded.config.model.posterior == "diagonal" and loaded.epoch == 1
    train(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})}), out, resume=True, progress=False
    )
    assert load_run(out).epoch == 2


# ---- configuration --------------------------------------------------------------------------------------------------
def test_flow_settings_are_filled_for_a_flow_and_refused_otherwise():
    cfg = load_config(sets=["model.posterior='flow'"])
    assert (cfg.model.flow_layers, cfg.model.flow_hidden, cfg.model.flow_context) == (4, (256,), 32)
    assert load_config(sets=["model.posterior='flow'", "model.flow_layers=2"]).model.flow_layers == 2
    for sets, text in [
        (["model.flow_layers=2"], "model.flow_layers is only used by posterior='flow'"),
        (["model.posterior='full'", "model.flow_hidden=[8]"], "model.flow_hidden is only used"),
        (["model.posterior='flow'", "model.z_dim=1"], "needs model.z_dim >= 2"),
        (["model.posterior='mixture'"], "model.posterior"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(sets=sets)
        assert text in str(err.value) and "\n" not in str(err.value)


def test_ssl_features_of_a_flow_are_its_location():
    torch.manual_seed(0)
    model = VAE(784, ModelConfig(z_dim=4, encoder_hidden=(8,), decoder_hidden=(8,), posterior="flow", **FLOW))
    images = torch.rand(5, 784)
    feats = encoder_features(model, images, seed=0)
    assert feats.shape == (5, 4) and bool(torch.isfinite(torch.from_numpy(feats)).all())
    assert isinstance(model.family, CouplingFlow)


def test_the_full_covariance_probe_script_trains_each_variant_and_refuses_bad_scales(idx_dir):
    """scripts/full_cov_probe.py (the README's note on the full family's training): the diagonal run and one full
    run per scale, each printing its test terms and the full runs the off-diagonal share of q's variance."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "full_cov_probe.py"
    small = [
        "--dataset",
        "idx",
        "--data-dir",
        str(idx_dir),
        "--batch-size",
        "32",
        "--set",
        "z_dim=4",
        "--set",
        "encoder_hidden=[16]",
        "--set",
        "decoder_hidden=[16]",
    ]
    r = subprocess.run(
        [sys.executable, str(script), "--steps", "3", "--every", "2", "--scales", "0,1", *small],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(" step ")[0].strip() for line in lines if " step " in line] == (
        ["diagonal"] * 3 + ["full, off_scale 0"] * 3 + ["full, off_scale 1"] * 3
    )
    elbos = [float(line.split("test ELBO")[1].split()[0]) for line in lines if " step " in line]
    assert all(-1000 < e < 0 for e in elbos)
    assert sum("off-diagonal share" in line for line in lines) == 2
    r = subprocess.run([sys.executable, str(script), "--scales", "a,b", *small], capture_output=True, text=True)
    assert r.returncode == 1 and "--scales 'a,b' is not a comma-separated list" in r.stderr
