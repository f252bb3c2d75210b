"""The HMC transition and its counter-based noise: invariance of a Gaussian target, safe acceptance, no kept graph.

Statistical checks allow Z(n) standard errors, Z(n) the two-sided Bonferroni critical value for n compared numbers at
a false-alarm budget of ALPHA = 1e-4 per test, so the whole file false-alarms with probability below 1e-3.
"""

from __future__ import annotations

import warnings
from statistics import NormalDist

import pytest
import torch

from smvi.core.estimators.hmc import (
    HMCState,
    PathPotential,
    fold_in,
    hmc_step,
    init_state,
    normal,
    path_potential,
    point_ids,
    stream_key,
    uniform,
)

ALPHA = 1e-4


def z_crit(n: int) -> float:
    return NormalDist().inv_cdf(1 - ALPHA / (2 * n))


def key_for(seed: int, rows: int, points: int = 1):
    return stream_key(seed, point_ids(torch.arange(points, dtype=torch.float64).unsqueeze(1)), torch.arange(rows))


# ---- noise --------------------------------------------------------------------------------------------------------
def test_normal_noise_has_unit_moments_and_independent_coordinates():
    eps = normal(key_for(0, 20000), 4)  # [20000, 1, 4]
    flat = eps.reshape(-1, 4)
    m = flat.shape[0]
    # mean: se 1/√m; variance: se √(2/m); correlations: se 1/√m
    corr = torch.corrcoef(flat.T)[torch.triu_indices(4, 4, 1).unbind()]
    z = z_crit(4 + 4 + 6)
    assert flat.mean(0).abs().max() < z / m**0.5
    assert (flat.var(0) - 1).abs().max() < z * (2 / m) ** 0.5
    assert corr.abs().max() < z / m**0.5


def test_uniform_noise_is_open_unit_interval_and_uniform():
    u = uniform(key_for(1, 50000))
    assert (u > 0).all() and (u < 1).all()
    # the fraction below each decile is binomial with se √(p(1−p)/m)
    m, p = u.numel(), torch.arange(1, 10, dtype=torch.float64) / 10
    frac = (u.reshape(-1, 1) < p).double().mean(0)
    assert ((frac - p).abs() < z_crit(9) * (p * (1 - p) / m).sqrt()).all()


def test_streams_distinct_and_reproducible():
    a, b = normal(key_for(0, 8, 3), 2), normal(key_for(0, 8, 3), 2)
    assert torch.equal(a, b)
    assert not torch.equal(normal(key_for(1, 8, 3), 2), a)
    assert not torch.equal(normal(fold_in(key_for(0, 8, 3), 1), 2), a)
    flat = a.reshape(-1, 2)
    assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]


def test_point_ids_depend_on_values_only():
    x = torch.randn(5, 7, dtype=torch.float64)
    ids = point_ids(x)
    assert torch.equal(point_ids(x[[3, 1]]), ids[:, [3, 1]])
    assert torch.equal(point_ids(x.float()), point_ids(x.float().double()))
    y = x.clone()
    y[0, 6] = torch.nextafter(y[0, 6], torch.tensor(10.0, dtype=torch.float64))
    assert not torch.equal(point_ids(y)[:, 0], ids[:, 0])
    assert torch.unique(ids.T, dim=0).shape[0] == 5


# ---- the kernel ---------------------------------------------------------------------------------------------------
def gaussian_target(dim: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(dim, dim, generator=g, dtype=torch.float64).tril()
    L.diagonal().copy_(torch.rand(dim, generator=g, dtype=torch.float64) + 0.3)
    mean = torch.randn(dim, generator=g, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(mean, scale_tril=L)
    return mvn, g


def run_chain(state: HMCState, potential, steps: int, step_size, seed: int = 0, n_leapfrog: int = 5):
    key = stream_key(seed, torch.zeros(2, 1, dtype=torch.int64), torch.arange(state.z.shape[0]))
    infos = []
    for t in range(steps):
        state, info = hmc_step(
            state, fold_in(key, t), potential=potential, beta=1.0, step_size=step_size, n_leapfrog=n_leapfrog
        )
        infos.append(info)
    return state, infos


def quadratic_log_density(mvn, dtype):
    """log N(z; μ, LLᵀ) up to a constant as −½‖(z − μ) L⁻ᵀ‖²: a matrix product, so bf16 autocast touches the force."""
    mean, inv_t = mvn.loc.to(dtype), torch.linalg.inv(mvn.scale_tril).T.to(dtype)
    return lambda z: -0.5 * ((z - mean) @ inv_t).pow(2).sum(-1)


class CrudeForce(PathPotential):
    """A deliberately wrong but deterministic force, 0.6·∇log π + 0.5·tanh(z), with the exact log-density."""

    def force(self, z):
        g = super().force(z)[0]
        f = 0.6 * g + 0.5 * torch.tanh(z)
        return f, f

    def __call__(self, z):
        f, _ = self.force(z)
        value = self.log_f0(z)
        return HMCState(z.detach(), value, value, f, f)


@pytest.mark.parametrize(
    "precision,dtype", [("fp32", torch.float64), ("bf16", torch.float32), ("crude", torch.float64)]
)
def test_hmc_leaves_a_correlated_gaussian_invariant(precision, dtype):
    """Exact for the true force, a bf16 force and a crude force alike: only the accept/reject energies must be exact
    (Neal 2011). The bf16 and crude forces are checked to differ from the true gradient, so the test is informative."""
    mvn, g = gaussian_target()
    m = 4000
    z0 = mvn.loc + (mvn.scale_tril @ torch.randn(m, 3, 1, generator=g, dtype=torch.float64)).squeeze(-1)
    z0 = z0.to(dtype)
    log_density = quadratic_log_density(mvn, dtype)
    exact = path_potential(log_density)
    potential = CrudeForce(log_density) if precision == "crude" else path_potential(log_density, precision=precision)
    step = (0.1 + 0.3 * torch.rand(m, 1, generator=g, dtype=torch.float64)).to(dtype)  # per-chain step sizes
    state, infos = run_chain(init_state(potential, z0.unsqueeze(1)), potential, 40, step)
    z = state.z.squeeze(1).double()
    acc = torch.stack([i.accept_prob for i in infos]).mean()
    assert 0.5 < acc < 1.0, "the test is only informative if the chains move"
    assert (z != z0.double()).any(-1).double().mean() > 0.9
    force_error = (potential.force(state.z)[1] - exact.force(state.z)[1]).abs().max()
    assert force_error == 0 if precision == "fp32" else force_error > 1e-4
    torch.testing.assert_close(state.log_f1, exact(state.z).log_f1)  # the state carries exact energies
    var = mvn.covariance_matrix.diagonal()
    z_ = z_crit(6)
    assert ((z.mean(0) - mvn.loc).abs() < z_ * (var / m).sqrt()).all()
    assert ((z.var(0) - var).abs() < z_ * var * (2 / (m - 1)) ** 0.5).all()
    assert state.z.grad_fn is None and not state.grad_f1.requires_grad and state.log_f1.grad_fn is None
    assert state.z.dtype == state.grad_f1.dtype == state.log_f1.dtype == dtype


def test_hmc_state_carries_exact_densities_and_gradients():
    mvn, g = gaussian_target()
    potential = path_potential(mvn.log_prob)
    z0 = torch.randn(50, 1, 3, generator=g, dtype=torch.float64)
    state, _ = run_chain(init_state(potential, z0), potential, 3, torch.full((50, 1), 0.3, dtype=torch.float64))
    fresh = potential(state.z)
    assert torch.allclose(state.log_f1, mvn.log_prob(state.z))
    assert torch.allclose(state.grad_f1, fresh.grad_f1)


def bad_log_density(z: torch.Tensor) -> torch.Tensor:
    """−½‖z‖², but NaN for z₀ > 1 and +inf for z₀ < −1 (a naive min(1, exp(−ΔH)) would accept +inf)."""
    base = -0.5 * z.pow(2).sum(-1)
    nan = torch.full_like(base, float("nan"))
    inf = torch.full_like(base, float("inf"))
    return torch.where(z[..., 0] > 1, nan, torch.where(z[..., 0] < -1, inf, base))


def test_non_finite_proposals_are_never_accepted():
    potential = path_potential(bad_log_density)
    g = torch.Generator().manual_seed(0)
    z0 = torch.rand(500, 1, 2, generator=g, dtype=torch.float64) - 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = torch.full((500, 1), 1.5, dtype=torch.float64)
        state, infos = run_chain(init_state(potential, z0), potential, 30, step)
    accepted = torch.stack([i.accepted for i in infos])
    assert accepted.any() and not accepted.all()
    assert torch.isfinite(state.z).all() and torch.isfinite(state.log_f1).all()
    assert (state.z[..., 0].abs() <= 1).all()
    for info in infos:
        assert torch.isfinite(info.accept_prob).all() and ((info.accept_prob >= 0) & (info.accept_prob <= 1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_energy_differences_do_not_overflow(dtype):
    """|ΔH| far beyond exp's range in both directions: from far out (ΔH ≪ 0) and from the mode (ΔH ≫ 0)."""
    scale = 1e30 if dtype == torch.float32 else 1e250
    potential = path_potential(lambda z: -scale * z.pow(2).sum(-1))
    z0 = torch.cat([torch.full((100, 1, 2), 1e-3, dtype=dtype), torch.zeros(100, 1, 2, dtype=dtype)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, infos = run_chain(init_state(potential, z0), potential, 3, torch.full((200, 1), 0.1, dtype=dtype))
    for info in infos:
        p = info.accept_prob
        assert torch.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
