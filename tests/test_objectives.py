"""The objectives against closed forms on a linear-Gaussian model, where the posterior is Gaussian and known.

Statistical checks compare a Monte Carlo estimate with its exact value within Z standard errors, the standard error
estimated from independent groups of samples. Z = 5 gives a false-alarm rate below 1e-6 per compared number, so the
whole file stays below 1e-4 even with a few hundred numbers compared.
"""

from __future__ import annotations

import pytest
import torch

import smvi
from smvi.core.models import LinearGaussian

Z = 5.0


def grouped(fn, groups: int = 25):
    """Stack ``fn()`` over independent groups; return the mean and its standard error."""
    vals = torch.stack([fn() for _ in range(groups)])
    return vals.mean(0), vals.std(0) / groups**0.5


def assert_within_se(est, se, exact, floor=1e-9):
    bad = (est - exact).abs() > Z * se + floor
    assert not bad.any(), f"estimate {est[bad]} vs exact {exact[bad]} (se {se[bad]})"


@pytest.fixture
def model():
    return LinearGaussian.random(x_dim=6, z_dim=3, seed=1)


@pytest.fixture
def x(model):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    return (model.decode(z).mean + 0.7 * torch.randn(5, 6, generator=g, dtype=torch.float64)).detach()


def exact_posterior_model() -> LinearGaussian:
    """A linear-Gaussian model whose posterior is diagonal (orthogonal W columns), with q set to the exact posterior."""
    W = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.5], [1.0, 0, 0]], dtype=torch.float64)
    b, s = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64), 0.8
    s2 = s * s
    prec = 1 + (W * W).sum(0) / s2  # diagonal posterior precision
    A = W.T / s2 / prec.unsqueeze(1)  # m(x) = Σ Wᵀ (x − b) / s²
    return LinearGaussian(W, b, s, A, -A @ b, -0.5 * prec.log())


def test_vae_objective_at_lambda_zero_is_minus_elbo_exactly():
    vae = smvi.VAE(config=smvi.ModelConfig(encoder_hidden=(16,), decoder_hidden=(16,), z_dim=3))
    x = torch.bernoulli(torch.rand(8, 784))
    torch.manual_seed(3)
    terms = smvi.smvi_objective(vae, x, lam=0.0)
    torch.manual_seed(3)
    ref = smvi.elbo(vae, x)
    assert terms.d_sm is None
    assert torch.equal(terms.loss, -terms.elbo)
    assert torch.equal(terms.elbo, ref)
    assert torch.equal(terms.elbo, terms.log_likelihood - terms.kl)


def test_objective_combines_terms_for_any_real_lambda(model, x):
    for lam in (-0.5, 0.3, 7.0):
        t = smvi.smvi_objective(model, x, lam=lam, n_samples=4)
        torch.testing.assert_close(t.loss, -(t.elbo - lam * t.d_sm))


def test_score_matching_matches_closed_form(model, x):
    est, se = grouped(lambda: smvi.score_matching_divergence(model, x, n_samples=400).detach())
    assert_within_se(est, se, model.exact_score_matching(x).detach())


def test_score_matching_is_zero_at_the_exact_posterior():
    m = exact_posterior_model()
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(m.exact_kl(x), torch.zeros(7, dtype=torch.float64), atol=1e-10, rtol=0)
    d = smvi.score_matching_divergence(m, x, n_samples=10)
    assert d.abs().max() < 1e-20  # every sample's scores agree, not just on average
    assert torch.allclose(m.exact_score_matching(x), torch.zeros(7, dtype=torch.float64), atol=1e-10)


def test_score_matching_gradient_matches_closed_form_for_decoder_and_encoder(model, x):
    params = dict(model.named_parameters())

    def mc_grad():
        d = smvi.score_matching_divergence(model, x, n_samples=200).sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(d, list(params.values()))])

    est, se = grouped(mc_grad)
    exact = torch.cat(
        [g.flatten() for g in torch.autograd.grad(model.exact_score_matching(x).sum(), list(params.values()))]
    )
    assert (exact.abs() > 1e-6).sum() > 20  # decoder (W, b, log_s) and encoder (A, c, log σ) all move
    assert_within_se(est, se, exact, floor=1e-7)


def test_elbo_gap_is_the_exact_kl(model, x):
    est, se = grouped(lambda: smvi.elbo(model, x, n_samples=400).detach())
    assert_within_se(est, se, (model.log_marginal(x) - model.exact_kl(x)).detach())


def test_elbo_monte_carlo_kl_matches_analytic(model, x):
    class NoPrior:  # the same model without `prior`, so the KL falls back to Monte Carlo
        z_dim = model.z_dim
        log_prior, log_likelihood, encode = model.log_prior, model.log_likelihood, model.encode

    est, se = grouped(lambda: smvi.elbo(NoPrior(), x, n_samples=400).detach())
    ref, ref_se = grouped(lambda: smvi.elbo(model, x, n_samples=400).detach())
    assert_within_se(est - ref, (se**2 + ref_se**2).sqrt(), torch.zeros_like(est))


def test_d_sm_reaches_every_parameter_of_the_vae():
    vae = smvi.VAE(config=smvi.ModelConfig(encoder_hidden=(16,), decoder_hidden=(16,), z_dim=3))
    x = torch.bernoulli(torch.rand(8, 784))
    smvi.score_matching_divergence(vae, x).sum().backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_d_sm_under_no_grad_is_computed_and_detached(model, x):
    with torch.no_grad():
        t = smvi.smvi_objective(model, x, lam=0.0, compute_d_sm=True)
    assert t.d_sm is not None and not t.d_sm.requires_grad and (t.d_sm > 0).all()


def test_vae_log_likelihood_broadcasts_over_sample_dimensions():
    vae = smvi.VAE(config=smvi.ModelConfig(encoder_hidden=(), decoder_hidden=(), z_dim=2))
    x = torch.bernoulli(torch.rand(5, 784))
    z = torch.randn(3, 5, 2)
    ll = vae.log_likelihood(x, z)
    assert ll.shape == (3, 5)
    torch.testing.assert_close(ll[1], vae.log_likelihood(x, z[1]))
    torch.testing.assert_close(ll[2, 4], vae.decode(z[2, 4]).log_prob(x[4]))
