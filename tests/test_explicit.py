"""The explicit decoder pass (smvi.core.explicit) against autograd: log p(x|z) and ∇_z log p(x|z) for every decoder
the config allows (Bernoulli and Gaussian, each activation), fp32 and bf16.

Tolerances are calibrated, not guessed: the float64 autograd result is the truth, and the explicit pass must be no
less accurate than autograd itself at the same precision (fp32 autograd; bf16-autocast autograd), up to a factor of 2
and one ulp-sized floor. The fp32 value is the decoder's own forward, so it equals ``log_likelihood`` bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import smvi
from smvi.core.estimators import ais, simulate
from smvi.core.explicit import mlp_log_likelihood, supports
from smvi.core.models import LinearGaussian


def _vae(likelihood: str, activation: str) -> smvi.VAE:
    torch.manual_seed(0)
    cfg = smvi.ModelConfig(
        encoder_hidden=(64,),
        decoder_hidden=(96, 80),
        z_dim=6,
        activation=activation,
        likelihood=likelihood,
        decoder_last_scale=1.0,
    )
    return smvi.VAE(x_dim=40, config=cfg).requires_grad_(False)


def _inputs(model, likelihood: str, rows: int = 3, n: int = 64):
    g = torch.Generator().manual_seed(1)
    x = (
        (torch.rand(n, model.x_dim, generator=g) < 0.4).float()
        if likelihood == "bernoulli"
        else torch.rand(n, model.x_dim, generator=g)
    )
    return x, 1.5 * torch.randn(rows, n, model.z_dim, generator=g)


def _autograd(model, x, z, bf16: bool = False):
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        z = z.detach().requires_grad_(True)
        value = model.log_likelihood(x, z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach().to(z.dtype), grad.to(z.dtype)


def _err(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


CASES = [(lik, act) for lik in ("bernoulli", "gaussian") for act in ("softplus", "relu", "tanh", "elu")]


@pytest.mark.parametrize("likelihood,activation", CASES)
def test_explicit_pass_matches_autograd_to_rounding(likelihood, activation):
    model = _vae(likelihood, activation)
    assert supports(model.decoder)
    x, z = _inputs(model, likelihood)
    true_v, true_g = _autograd(copy.deepcopy(model).double(), x.double(), z.double())
    v, g = model.log_likelihood_and_grad(x, z)
    assert v.shape == (3, 64) and g.shape == z.shape and v.dtype == g.dtype == torch.float32
    assert torch.equal(v, model.log_likelihood(x, z))  # the decoder's own forward
    av, ag = _autograd(model, x, z)
    assert _err(g, true_g) <= 2 * _err(ag, true_g) + 1e-6, (_err(g, true_g), _err(ag, true_g))
    bv, bg = model.log_likelihood_and_grad(x, z, precision="bf16")
    cv, cg = _autograd(model, x, z, bf16=True)
    assert _err(bg, true_g) <= 2 * _err(cg, true_g) + 1e-3, (_err(bg, true_g), _err(cg, true_g))
    assert _err(bv, true_v) <= 2 * _err(cv, true_v) + 1e-4, (_err(bv, true_v), _err(cv, true_v))
    assert _err(bg, true_g) > 1e-5  # bf16 products do round: the check above is not comparing fp32 with fp32
    nv, ng = model.log_likelihood_and_grad(x, z, precision="bf16", grad=False)
    assert ng is None and torch.equal(nv, bv)
    ev, eg = model.log_likelihood_and_grad(x, z, precision="bf16", exact_value=True)  # HMC's trajectory ends
    assert torch.equal(ev, v) and _err(eg, true_g) <= 2 * _err(cg, true_g) + 1e-3 and not torch.equal(eg, g)


def test_a_decoder_the_pass_does_not_cover_keeps_autograd():
    model = _vae("bernoulli", "softplus")
    model.decoder[1] = nn.GELU()
    assert not supports(model.decoder)
    assert not supports(nn.Sequential(nn.Linear(2, 3), nn.Softplus(beta=2), nn.Linear(3, 2)))
    x, z = _inputs(model, "bernoulli")
    v, g = model.log_likelihood_and_grad(x, z)
    av, ag = _autograd(model, x, z)
    assert torch.equal(v, av) and torch.equal(g, ag)


def test_bf16_weights_are_recast_when_the_weights_change():
    model = _vae("bernoulli", "tanh")
    x, z = _inputs(model, "bernoulli")
    before = mlp_log_likelihood(model.decoder, "bernoulli", x, z, precision="bf16")[1]
    with torch.no_grad():
        model.decoder[0].weight.mul_(2)
    after = mlp_log_likelihood(model.decoder, "bernoulli", x, z, precision="bf16")[1]
    fresh = mlp_log_likelihood(copy.deepcopy(model.decoder), "bernoulli", x, z, precision="bf16")[1]
    assert not torch.equal(before, after) and torch.equal(after, fresh)


def test_linear_gaussian_gradient_is_the_closed_form():
    lg = LinearGaussian.random(x_dim=6, z_dim=3, seed=1).requires_grad_(False)
    x, _ = simulate(lg, 5, seed=0)
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    v, g = lg.log_likelihood_and_grad(x, z)
    av, ag = _autograd(lg, x, z)
    assert torch.allclose(v, av, rtol=0, atol=1e-12) and torch.allclose(g, ag, rtol=0, atol=1e-12)


def test_ais_takes_the_force_from_the_explicit_pass():
    model = _vae("bernoulli", "softplus")
    x, _ = simulate(model, 8, seed=0)
    calls = []
    explicit = model.log_likelihood_and_grad
    model.log_likelihood_and_grad = lambda *a, **k: calls.append(k["precision"]) or explicit(*a, **k)
    fp32 = ais(model, x, steps=20, chains=4, start="encoder", seed=0)
    bf16 = ais(model, x, steps=20, chains=4, start="encoder", seed=0, precision="bf16")
    assert set(calls) == {"fp32", "bf16"} and len(calls) == 2 * (1 + 19 * 10)  # init + leapfrogs, both runs
    del model.log_likelihood_and_grad
    auto = ais(model, x, steps=20, chains=4, start="encoder", seed=0)
    # the same estimator; the two forces differ by rounding only, so the chains stay close over 20 steps
    assert torch.allclose(fp32.log_px, auto.log_px, atol=0.05) and torch.isfinite(bf16.log_px).all()


class _Hidden:
    """A model without the optional explicit pass (everything else delegated)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        if name == "log_likelihood_and_grad":
            raise AttributeError(name)
        return getattr(self.model, name)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_bf16_iwae_through_the_explicit_pass_is_as_accurate_as_autocast(likelihood):
    from smvi.core.estimators import iwae_bound

    model = _vae(likelihood, "softplus")
    x, _ = _inputs(model, likelihood, n=16)
    fp32 = iwae_bound(model, x, k=64, seed=0)
    assert torch.allclose(iwae_bound(model, x, k=64, seed=0, chunk_size=5), fp32, rtol=0, atol=1e-9)  # chunks
    explicit = iwae_bound(model, x, k=64, seed=0, precision="bf16")
    autocast = iwae_bound(_Hidden(model), x, k=64, seed=0, precision="bf16")
    assert not torch.equal(explicit, fp32)
    assert (explicit - fp32).abs().mean() <= 2 * (autocast - fp32).abs().mean() + 1e-6
