"""The family registry's contract, checked the same way for every registered family: the torch-free names and the
implementations agree, log q(z|x) is a normalized density whose z-gradient is the true score, samples are
reparameterized, and every training objective and the IWAE and AIS estimators work with it on the linear-Gaussian
model (whose log p(x) is exact). A new family gets all of this by registering (smvi.core.families)."""

from __future__ import annotations

import inspect

import pytest
import torch

import smvi
from smvi.core.families import FAMILIES, PosteriorFamily, make_family, register_family
from smvi.core.models import VAE, LinearGaussian
from smvi.core.objectives import training_objective
from smvi.settings import families as specs
from smvi.settings.objectives import OBJECTIVES
from smvi.settings.run import ConfigError, ModelConfig, load_config

SMALL = {"flow": dict(flow_layers=3, flow_hidden=(16,), flow_context=3)}
"""Small settings for the families whose defaults are too large for a 2-d grid (the others use their defaults)."""

KINDS = list(specs.FAMILIES)


def random_family(kind: str, z_dim: int = 2, seed: int = 0):
    """A family in float64 with random (non-trivial) weights, and random parameters for 3 images."""
    g = torch.Generator().manual_seed(seed)
    family = make_family(kind, z_dim, **SMALL.get(kind, {})).double()
    with torch.no_grad():
        for p in family.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    params = 0.5 * torch.randn(3, family.n_params, generator=g, dtype=torch.float64)
    return family, params


# ---- the two halves of the registry agree ---------------------------------------------------------------------------
def test_settings_and_core_register_the_same_families():
    assert set(FAMILIES) == set(KINDS) and KINDS[0] == specs.DEFAULT_FAMILY
    assert ModelConfig().posterior == specs.DEFAULT_FAMILY
    for name, spec in specs.FAMILIES.items():
        cls = FAMILIES[name]
        assert issubclass(cls, PosteriorFamily) and cls.kind == name
        for key in spec.settings:  # each setting is a model key, unset unless the family is chosen
            assert ModelConfig.model_fields[key].default is None, key
        params = inspect.signature(cls.from_settings).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert takes_any or set(spec.settings) <= set(params), (name, list(params))
        family = make_family(name, max(spec.min_z_dim, 2))
        assert family.kind == name and family.n_params >= 2 * family.z_dim


@pytest.mark.parametrize("kind", KINDS)
def test_each_family_builds_from_its_config_and_refuses_other_families_settings(kind):
    spec = specs.FAMILIES[kind]
    cfg = load_config(
        sets=[f"model.posterior='{kind}'", "model.z_dim=4", "model.encoder_hidden=[8]", "model.decoder_hidden=[8]"]
    )
    assert {k: getattr(cfg.model, k) for k in spec.settings} == dict(spec.settings)  # defaults filled, saved resolved
    assert VAE(784, cfg.model).family.kind == kind
    for other in specs.FAMILIES.values():
        for key in set(other.settings) - set(spec.settings):
            value = other.settings[key] if other.settings[key] is not None else EXAMPLES[key]
            with pytest.raises(ConfigError, match=f"model.{key} is only used by posterior='{other.name}'"):
                load_config(
                    sets=[f"model.posterior='{kind}'", f"model.{key}={value!r}".replace("(", "[").replace(",)", "]")]
                )


EXAMPLES = {"rejection_threshold": 3.0, "rejection_acceptance": 0.2}
"""A valid value of each family setting whose default is None (unset: the family decides, e.g. acceptance 0.5)."""


def test_an_unknown_family_is_refused_in_one_line_naming_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        load_config(sets=["model.posterior='mixture'"])
    assert "model.posterior" in str(err.value) and all(repr(n) in str(err.value) for n in KINDS)
    with pytest.raises(ValueError, match="unknown posterior family 'mixture'"):
        make_family("mixture", 2)
    with pytest.raises(ValueError, match="no entry in smvi.settings.families.FAMILIES"):
        register_family("mixture")


# ---- the density ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", [k for k in KINDS if specs.FAMILIES[k].min_z_dim <= 2 and specs.FAMILIES[k].normalized]
)
def test_each_family_is_a_normalized_density_in_2d(kind):
    """(An unnormalized family's ``distribution`` is its proposal; its posterior is checked against numerical
    integration in its own tests: tests/test_rejection.py.)"""
    torch.manual_seed(0)
    family, params = random_family(kind)
    q = family.distribution(params)
    grid = torch.linspace(-14, 14, 701, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)  # [G², 1, 2] vs batch [3]
    dens = q.log_prob(zz).exp().reshape(len(grid), len(grid), 3)
    mass = torch.trapezoid(torch.trapezoid(dens, grid, dim=0), grid, dim=0)
    # ∫_B q = P_q(z ∈ B) for the box B = the grid: compared with the fraction of exact samples inside it (a flow's
    # tails reach past any grid that fits in memory, so its mass inside may be a few percent short of 1)
    n = 200_000
    inside = (q.sample((n,)).abs().max(-1).values < 14).double().mean(0)
    assert torch.allclose(mass, inside, atol=3e-3), (mass, inside)
    assert (inside > 0.95).all()
    if kind != specs.DEFAULT_FAMILY:  # the family is not secretly the diagonal Gaussian (else this proves little)
        base = make_family(specs.DEFAULT_FAMILY, 2).distribution(params[:, :4])
        assert (q.log_prob(zz) - base.log_prob(zz)).abs().max() > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_log_q_is_differentiated_in_z_at_the_sampled_z(kind):
    """D_SM differentiates log q(z|x) at z = rsample(): the score must be that of log q as a function of z (a flow
    that cached its inverse would return the score of the base density instead)."""
    family, params = random_family(kind, z_dim=4)
    q = family.distribution(params.requires_grad_(True))
    z = q.rsample((5,))
    (g_sampled,) = torch.autograd.grad(q.log_prob(z).sum(), z)
    leaf = z.detach().requires_grad_(True)
    (g_leaf,) = torch.autograd.grad(q.log_prob(leaf).sum(), leaf)
    assert torch.allclose(g_sampled, g_leaf, atol=1e-10)
    # and it is the true score: central finite differences of log q in every coordinate
    h = 1e-5
    for i in range(4):
        e = torch.zeros_like(leaf)
        e[..., i] = h
        fd = (q.log_prob(leaf + e) - q.log_prob(leaf - e)) / (2 * h)
        assert torch.allclose(g_leaf[..., i], fd.detach(), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_are_reparameterized(kind):
    """rsample is a differentiable function of q's parameters at fixed noise: its autograd derivative matches central
    finite differences of the sample drawn with the same seed."""
    family, params = random_family(kind, z_dim=4)
    assert family.distribution(params).has_rsample

    def draw(p: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(5)
        return family.distribution(p).rsample((3,))

    leaf = params.clone().requires_grad_(True)
    z = draw(leaf)
    direction = torch.randn(params.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (jvp,) = torch.autograd.grad(z, leaf, grad_outputs=torch.ones_like(z))
    h = 1e-6
    with torch.no_grad():
        fd = ((draw(params + h * direction) - draw(params - h * direction)) / (2 * h)).sum()
    assert abs(float((jvp * direction).sum() - fd)) < 1e-5 * max(1.0, abs(float(fd)))
    assert jvp.abs().sum() > 0


# ---- with every objective and estimator -----------------------------------------------------------------------------
def linear_model(kind: str, seed: int = 3) -> LinearGaussian:
    return LinearGaussian.random(4, 2, s=1.5, seed=seed, posterior=kind, **SMALL.get(kind, {}))


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_objective_trains_every_family(kind, objective):
    """Per-example terms, all finite, and gradients reaching the encoder, the family's own weights and the model."""
    m = linear_model(kind)
    x = m.decode(torch.randn(6, 2, dtype=torch.float64)).sample().detach()
    torch.manual_seed(0)
    spec = OBJECTIVES[objective]
    trains_with = specs.FAMILIES[kind].objectives
    if trains_with and objective not in trains_with:  # refused in one clear line, here and in the config
        with pytest.raises(ValueError, match=f"cannot train posterior='{kind}'"):
            training_objective(m, x, objective=objective, **{spec.knob: spec.example})
        return
    terms = training_objective(m, x, objective=objective, **{spec.knob: spec.example})
    for name, value in vars(terms).items():
        if isinstance(value, torch.Tensor):
            assert value.shape == (6,) and bool(torch.isfinite(value).all()), name
    terms.loss.mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert m.A.grad.abs().sum() > 0 and m.W.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in m.family.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_iwae_and_ais_from_the_encoder_work_with_each_family(kind):
    m = linear_model(kind)
    x = m.decode(torch.randn(6, 2, dtype=torch.float64)).sample().detach()
    exact = m.log_marginal(x).detach()
    torch.manual_seed(0)
    elbo = smvi.elbo(m, x, n_samples=4000).detach()
    iwae = smvi.iwae_bound(m, x, k=4000, seed=0)
    # q is far from the posterior here (ELBO several nats below log p(x)), so IWAE is noisy: orderings on average
    assert (elbo < iwae).all() and (iwae - exact).mean() < 0.1
    assert (exact - iwae).mean() < 0.25 * (exact - elbo).mean()
    r = smvi.ais(m, x, steps=500, chains=16, leapfrog_steps=5, start="encoder", seed=0)
    err = r.log_px - exact
    assert err.mean().abs() < 0.1 and err.abs().max() < 0.3, err
