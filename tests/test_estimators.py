"""IWAE, AIS and BDMC against the closed forms of a linear-Gaussian model, their orderings, and a VAE smoke run.

Statistical checks allow c standard errors, c the Student-t critical value (df = groups − 1) Bonferroni-corrected for
the n numbers a test compares, at a false-alarm budget of ALPHA = 1e-4 per test (below 2e-3 for the file). Standard
errors come from independent replicates (chains, seeds or data points). A log-mean-exp estimator's bias is about
−SE²/2 (delta method), which two-sided checks add to their allowance. Checks that an effect is present (a gap that
shrinks) use enough data points that the effect is many critical values large.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import t as student_t

import smvi
from smvi.core.estimators import ais, ais_ladder, bdmc, iwae_bound, linear_schedule, sigmoid_schedule, simulate
from smvi.core.models import LinearGaussian

ALPHA = 1e-4
AIS = dict(chains=16, leapfrog_steps=5)


def crit(n: int, df: int, *, one_sided: bool = False) -> float:
    """Critical value for n compared numbers, each from a t statistic with ``df`` degrees of freedom."""
    return float(student_t.ppf(1 - ALPHA / (n if one_sided else 2 * n), df))


def mean_se(d: torch.Tensor) -> tuple[float, float]:
    """Mean over data points and its standard error."""
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def grouped_log_mean(log_means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine G independent log-mean-exp estimates ``[G, N]`` (equal sizes) into one, with its delta-method SE
    (G = chains or seeds; one chain's log-weight is a log-mean-exp of one)."""
    total = torch.logsumexp(log_means, 0) - math.log(log_means.shape[0])
    rel = (log_means - total).exp()  # ratios to the combined mean
    return total, rel.std(0) / math.sqrt(log_means.shape[0])


@pytest.fixture(scope="module")
def lg() -> LinearGaussian:
    return LinearGaussian.random(x_dim=6, z_dim=3, seed=1).requires_grad_(False)


def near_posterior_encoder(model: LinearGaussian, widen: float = 1.2) -> LinearGaussian:
    """The same p(x, z) with q(z|x) = the exact posterior mean and a slightly widened diagonal: a good proposal."""
    s2 = model.log_s.exp() ** 2
    cov = torch.linalg.inv(torch.eye(model.z_dim, dtype=model.W.dtype) + model.W.T @ model.W / s2)
    A = cov @ model.W.T / s2
    return LinearGaussian(
        model.W, model.b, float(s2.sqrt()), A, -A @ model.b, (widen * cov.diagonal().sqrt()).log()
    ).requires_grad_(False)


# ---- IWAE ---------------------------------------------------------------------------------------------------------
def test_iwae_matches_exact_log_marginal(lg):
    model = near_posterior_encoder(lg)
    x, _ = simulate(model, 8, seed=0)
    groups = torch.stack([iwae_bound(model, x, k=64, seed=s) for s in range(64)])  # 64 seeds × 64 samples
    est, se = grouped_log_mean(groups)
    exact = model.log_marginal(x)
    assert ((est - exact).abs() <= crit(8, 63) * se + se**2).all(), (est - exact, se)


def test_iwae_does_not_depend_on_chunks_or_batch_mates(lg):
    x, _ = simulate(lg, 5, seed=1)
    a = iwae_bound(lg, x, k=300, chunk_size=300, seed=3)
    assert torch.allclose(iwae_bound(lg, x, k=300, chunk_size=7, seed=3), a, rtol=0, atol=1e-12)
    assert torch.allclose(iwae_bound(lg, x[[4, 2]], k=300, chunk_size=64, seed=3), a[[4, 2]], rtol=0, atol=1e-12)
    assert a.dtype == torch.float64 and not a.requires_grad


def test_elbo_below_iwae_k_below_iwae_k_prime_below_log_px(lg):
    """E[ELBO] ≤ E[L_k] ≤ E[L_k'] ≤ log p(x) (k < k'), on the mean over points, paired (shared samples)."""
    x, _ = simulate(lg, 32, seed=2)
    exact = lg.log_marginal(x)
    elbo_exact = exact - lg.exact_kl(x)
    chain = [elbo_exact] + [iwae_bound(lg, x, k=k, seed=0) for k in (1, 10, 100, 1000)] + [exact]
    z = crit(len(chain), 31, one_sided=True)
    for lo, hi in zip(chain[:-1], chain[1:], strict=True):
        m, se = mean_se(hi - lo)
        assert m >= -z * se, (m, se)
    m, se = mean_se(chain[-2] - chain[2])  # L_1000 − L_1: a real improvement for this poor encoder
    assert m > z * se


def test_log_px_minus_elbo_is_the_exact_kl(lg):
    x, _ = simulate(lg, 6, seed=3)
    groups = torch.stack([smvi.elbo(lg, x, n_samples=500) for _ in range(20)])  # global RNG seeded by conftest
    gap = lg.log_marginal(x) - groups.mean(0)
    se = groups.std(0) / math.sqrt(groups.shape[0])
    assert ((gap - lg.exact_kl(x)).abs() <= crit(6, 19) * se).all()


# ---- AIS ----------------------------------------------------------------------------------------------------------
def test_schedules_run_from_zero_to_one():
    for betas in (sigmoid_schedule(50), linear_schedule(50)):
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all() and betas.dtype == torch.float64
    s = sigmoid_schedule(50)
    assert torch.allclose(s + s.flip(0), torch.ones_like(s))


@pytest.mark.parametrize("start,schedule", [("prior", "sigmoid"), ("encoder", "sigmoid"), ("prior", "linear")])
def test_ais_matches_exact_log_marginal(lg, start, schedule):
    # from the encoder, a trained-like q: the random one is so far off that 200 steps leave 20-nat weight spreads
    model = near_posterior_encoder(lg, widen=2.0) if start == "encoder" else lg
    x, _ = simulate(model, 6, seed=4)
    res = ais(model, x, steps=200, chains=128, leapfrog_steps=5, start=start, schedule=schedule, seed=1)
    est, se = grouped_log_mean(res.log_weights)
    assert torch.allclose(est, res.log_px)
    exact = model.log_marginal(x)
    assert ((est - exact).abs() <= crit(6, 127) * se + se**2).all(), (est - exact, se)
    assert res.log_px.dtype == torch.float64 and res.log_weights.shape == (128, 6) and res.ess.shape == (6,)
    assert 0.3 < res.acceptance < 0.95 and res.acceptance_per_point.shape == (6,) and res.step_sizes.shape == (6,)


def test_ais_is_reproducible_and_independent_of_batch_mates(lg):
    x, _ = simulate(lg, 6, seed=5)
    kw = dict(steps=40, seed=7, **AIS)
    a, b = ais(lg, x, **kw), ais(lg, x, **kw)
    assert torch.equal(a.log_weights, b.log_weights) and torch.equal(a.step_sizes, b.step_sizes)
    perm = torch.tensor([3, 0, 5, 1])
    c = ais(lg, x[perm], **kw)
    assert torch.allclose(c.log_weights, a.log_weights[:, perm], rtol=0, atol=1e-10)
    d = ais(lg, torch.cat([x[2:3], x[2:3] + 1.0, torch.zeros(1, 6, dtype=x.dtype)]), **kw)
    assert torch.allclose(d.log_px[0], a.log_px[2], rtol=0, atol=1e-10)
    assert not torch.equal(ais(lg, x, steps=40, seed=8, **AIS).log_weights, a.log_weights)


def test_bdmc_sandwiches_exact_log_px_and_gap_shrinks_with_steps(lg):
    x, z = simulate(lg, 64, seed=6)
    exact = lg.log_marginal(x)
    short, long = bdmc(lg, x, z, steps=10, **AIS), bdmc(lg, x, z, steps=200, **AIS)
    z1 = crit(5, 63, one_sided=True)
    for res in (short, long):
        m, se = mean_se(res.lower - exact)
        assert m <= z1 * se, ("lower bound above log p(x)", m, se)
        m, se = mean_se(res.upper - exact)
        assert m >= -z1 * se, ("upper bound below log p(x)", m, se)
    m, se = mean_se(short.gap - long.gap)
    assert m > z1 * se, (m, se)
    assert long.reverse.settings["reverse"] and not long.forward.settings["reverse"]


def test_ais_ladder_rises_and_reports_agreement(lg):
    x, _ = simulate(lg, 8, seed=7)
    lad = ais_ladder(lg, x, steps=(2, 20, 200), tol=0.05, **AIS)
    assert lad.steps == (2, 20, 200) and len(lad.agree) == 2 and len(lad.results) == 3
    for d, se in zip(lad.diffs, lad.diff_sems, strict=True):
        assert d >= -crit(2, 7, one_sided=True) * se
    assert lad.agree == tuple(abs(d) <= 0.05 for d in lad.diffs) and lad.converged == lad.agree[-1]
    rows = [line.split() for line in lad.table().splitlines()]  # steps, mean, ±, SE, [change, ±, SE], seconds
    assert [int(r[0]) for r in rows] == list(lad.steps)
    assert [float(r[1]) for r in rows] == pytest.approx(list(lad.means), abs=5e-4)
    assert [float(r[4]) for r in rows[1:]] == pytest.approx(list(lad.diffs), abs=5e-4)
    early = ais_ladder(lg, x, steps=(2, 20, 200, 2000), tol=1e9, stop_early=True, **AIS)
    assert early.steps == (2, 20) and early.converged


def test_ais_rejects_bad_arguments(lg):
    x, z = simulate(lg, 3, seed=8)
    with pytest.raises(ValueError, match="start"):
        ais(lg, x, steps=5, start="posterior")
    with pytest.raises(ValueError, match="schedule"):
        ais(lg, x, steps=5, schedule="cosine")
    with pytest.raises(ValueError, match="reverse_from"):
        ais(lg, x, steps=5, reverse_from=z[:2])
    with pytest.raises(ValueError, match="x must be"):
        ais(lg, x[0], steps=5)


# ---- a VAE --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    cfg = smvi.ModelConfig(encoder_hidden=(32,), decoder_hidden=(32,), z_dim=4, decoder_last_scale=1.0)
    return smvi.VAE(x_dim=20, config=cfg).requires_grad_(False)


def test_vae_runs_through_ais_and_iwae_above_the_elbo(vae):
    x, z = simulate(vae, 24, seed=0)
    assert set(x.unique().tolist()) <= {0.0, 1.0} and z.shape == (24, 4)
    res = ais(vae, x, steps=60, start="encoder", seed=0, **AIS)
    iw = iwae_bound(vae, x, k=200, seed=0)
    elbo = torch.stack([smvi.elbo(vae, x, n_samples=50) for _ in range(4)]).mean(0).double()
    assert torch.isfinite(res.log_px).all() and torch.isfinite(iw).all()
    assert res.log_px.dtype == torch.float64 and iw.shape == (24,)
    z1 = crit(2, 23, one_sided=True)
    for est in (res.log_px, iw):
        m, se = mean_se(est - elbo)
        assert m >= -z1 * se, (m, se)
    both = bdmc(vae, x, z, steps=30, **AIS)
    m, se = mean_se(both.gap)  # E[upper] ≥ log p(x) ≥ E[lower]: the mean gap is ≥ 0 up to noise
    assert m >= -z1 * se, (m, se)


def test_simulate_is_reproducible_and_follows_the_model(lg):
    x, z = simulate(lg, 4000, seed=9)
    x2, z2 = simulate(lg, 4000, seed=9)
    assert torch.equal(x, x2) and torch.equal(z, z2)
    resid = x - z @ lg.W.T - lg.b
    s = float(lg.log_s.exp())
    m = resid.numel()
    z2_ = crit(2, m - 1)
    assert abs(float(resid.mean())) < z2_ * s / math.sqrt(m)
    assert abs(float(resid.var()) - s**2) < z2_ * s**2 * math.sqrt(2 / (m - 1))
