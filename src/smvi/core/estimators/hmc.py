"""Hamiltonian Monte Carlo as a pure transition ``(state, key) -> (state, info)``, and the noise it runs on.

The target is a point on a geometric path, log π_β(z) = (1 − β)·log f₀(z) + β·log f₁(z), so annealing can change β
without re-evaluating the model: the state carries both log-densities and their z-gradients at the current position,
and every leapfrog step costs one evaluation of the force (one forward and one backward pass). A single target is the
degenerate path f₀ = f₁ (:func:`path_potential` with one function). With ``precision="bf16"`` the force runs in bf16
and the log-densities take one full-precision forward pass per trajectory; the accept/reject stays exact
(:func:`hmc_step`). Reference: Neal, "MCMC using Hamiltonian dynamics" (2011); used inside AIS as in Wu et al. (2017).

Noise is counter-based: every draw is a hash of (seed, stream, counter, coordinate), with one stream per element of a
batch (e.g. per chain × data point, the point identified by a hash of its values). A chain's noise therefore does not
depend on which other chains or points share the batch, nor on chunking, and the global RNG is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, TransformedDistribution

from smvi.core.estimators.precision import PRECISIONS, force_autocast

__all__ = [
    "Key",
    "stream_key",
    "point_ids",
    "fold_in",
    "normal",
    "uniform",
    "reparameterize",
    "draw",
    "HMCState",
    "HMCInfo",
    "Potential",
    "ValueAndGrad",
    "PathPotential",
    "path_potential",
    "init_state",
    "hmc_step",
]

# ---- counter-based noise ------------------------------------------------------------------------------------------
# 32-bit arithmetic in int64 tensors: values stay in [0, 2³²) and multipliers below 2³¹, so no product overflows.
_M32 = 0xFFFFFFFF
_SALTS = (0x243F6A88, 0x05A308D3)  # digits of π: one per 32-bit word of a key


def _mix(x: Tensor) -> Tensor:
    """A bijective 32-bit integer hash with good avalanche (Wellons' hash prospector,
    ``[15 2c1b3c6d 12 297a2d39 15]``)."""
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    x = x ^ (x >> 12)
    x = (x * 0x297A2D39) & _M32
    return x ^ (x >> 15)


def _const(value: int, like: Tensor) -> Tensor:
    return _mix(torch.tensor(value & _M32, dtype=torch.int64, device=like.device))


class Key(NamedTuple):
    """A batch of independent random streams: ``words`` int64 ``[2, *batch]``, two 32-bit words per stream."""

    words: Tensor


def point_ids(x: Tensor) -> Tensor:
    """Two 32-bit hashes of each row's exact values (float64 bits), int64 ``[2, N]``: a data point's identity."""
    bits = x.detach().to(torch.float64).contiguous().view(torch.int32).to(torch.int64) & _M32  # [N, 2·x_dim]
    pos = torch.arange(bits.shape[-1], device=x.device)
    ids = [_mix(_mix(bits ^ _mix(pos + salt)).sum(-1) & _M32) for salt in _SALTS]
    return torch.stack(ids)


def stream_key(seed: int, ids: Tensor, rows: Tensor) -> Key:
    """One stream per (row, point), ``batch = [R, N]``: e.g. rows are chains or importance-sample indices.

    Distinct rows of one point always get distinct streams (the map row -> word is a bijection); streams of different
    points collide with probability ~2⁻⁶⁴ per pair.
    """
    words = []
    for i, salt in enumerate(_SALTS):
        s = _mix(_const(seed, rows) ^ _const((seed >> 32) + salt, rows))
        words.append(_mix(ids[i].unsqueeze(0) ^ _mix(rows.to(torch.int64) ^ s).unsqueeze(1)))
    return Key(torch.stack(words))


def fold_in(key: Key, data: int) -> Key:
    """A new, independent key for ``data`` (a step number, a purpose). Bijective per word: streams stay distinct."""
    w = key.words
    salts = torch.tensor([_SALTS[0] + data, _SALTS[1] - data], dtype=torch.int64, device=w.device) & _M32
    return Key(_mix(w ^ _mix(salts).view(2, *([1] * (w.dim() - 1)))))


def _bits(key: Key, n: int) -> Tensor:
    """32 random bits per stream and coordinate, int64 ``[*batch, n]``."""
    s = _mix(key.words[0] ^ _mix(key.words[1]))
    j = _mix(torch.arange(n, device=s.device) + _SALTS[0])
    return _mix(s.unsqueeze(-1) ^ j)


def uniform(key: Key, n: int | None = None) -> Tensor:
    """Uniform draws in the open interval (0, 1), float64 ``[*batch]`` (or ``[*batch, n]``)."""
    u = (_bits(key, n or 1).to(torch.float64) + 0.5) / 2.0**32
    return u if n is not None else u.squeeze(-1)


def normal(key: Key, n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Standard normal draws ``[*batch, n]`` by the inverse CDF (tails truncated beyond 6.2σ, mass 5·10⁻¹⁰)."""
    return torch.special.ndtri(uniform(key, n)).to(dtype)


def reparameterize(dist: Distribution, eps: Tensor) -> Tensor:
    """Map standard normal noise ``[..., d]`` to a sample of a Gaussian ``dist`` (diagonal or full covariance), or of
    a Gaussian pushed through transforms (a normalizing flow such as :class:`~smvi.core.families.FlowPosterior`)."""
    if isinstance(dist, TransformedDistribution):
        z = reparameterize(dist.base_dist, eps)
        for t in dist.transforms:
            z = t(z)
        return z  # pyright: ignore[reportReturnType]  # torch's Transform.__call__ is unannotated
    base = dist.base_dist if isinstance(dist, Independent) else dist
    if isinstance(base, Normal):
        return base.loc + base.scale * eps
    if isinstance(base, MultivariateNormal):
        return base.loc + (base.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    raise TypeError(f"need a Gaussian distribution to sample with counter-based noise, got {type(dist).__name__}")


def draw(dist: Distribution, key: Key, z_dim: int, dtype: torch.dtype) -> Tensor:
    """Draws ``[*key's batch, z_dim]`` of ``dist`` from the streams of ``key``: :func:`reparameterize` of standard
    normal noise, or the distribution's own keyed sampler when it has one (``sample_keyed``: the rejection-sampling
    posterior of :mod:`smvi.core.rejection`, whose draws take a variable number of proposals)."""
    own = getattr(dist, "sample_keyed", None)
    return own(key) if own is not None else reparameterize(dist, normal(key, z_dim, dtype))


# ---- the HMC transition -------------------------------------------------------------------------------------------
class HMCState(NamedTuple):
    """Position ``z`` ``[*batch, d]`` with log f₀, log f₁ ``[*batch]`` and their z-gradients ``[*batch, d]``."""

    z: Tensor
    log_f0: Tensor
    log_f1: Tensor
    grad_f0: Tensor
    grad_f1: Tensor


class HMCInfo(NamedTuple):
    """Per-chain diagnostics of one transition, ``[*batch]``: acceptance probability and whether it moved."""

    accept_prob: Tensor
    accepted: Tensor


Potential = Callable[[Tensor], HMCState]
ValueAndGrad = Callable[[Tensor, str, bool], tuple[Tensor, Tensor]]
"""(z, precision, exact) -> (log f(z) ``[*batch]``, ∇_z log f(z) ``[*batch, d]``) computed without autograd's tape;
``exact=True`` asks for the value in full precision (the gradient may then come from that full-precision forward)."""


class PathPotential:
    """Both ends of a geometric path at a position: exact log-densities and the leapfrog force.

    Calling it at ``z`` ``[*batch, d]`` gives the :class:`HMCState`: log f₀, log f₁ in the model's dtype (never
    autocast), and the force ∇_z log f₀, ∇_z log f₁ (one backward pass each). :meth:`force` gives the force alone,
    which is all an interior leapfrog step needs. With ``precision="fp32"`` the values come free with the gradients.
    With ``"bf16"`` the force runs under bf16 autocast (the decoder's matrix products in bfloat16, the gradient
    returned in z's dtype) and the values take one more full-precision forward pass, made only where the HMC test
    needs them (the trajectory's end): see :func:`hmc_step` for why this keeps HMC exact.

    ``grad_f1`` (a :data:`ValueAndGrad`, e.g. a model's explicit decoder pass) replaces autograd for log f₁'s value and
    force; it is given the precision and must return the value in full precision when asked for ``"fp32"``.
    """

    def __init__(
        self,
        log_f0: Callable[[Tensor], Tensor],
        log_f1: Callable[[Tensor], Tensor] | None = None,
        precision: str = "fp32",
        grad_f1: ValueAndGrad | None = None,
    ):
        self.log_f0, self.log_f1, self.precision, self.grad_f1 = log_f0, log_f1, precision, grad_f1

    def _grad(
        self, log_f: Callable[[Tensor], Tensor], z: Tensor, explicit: ValueAndGrad | None = None
    ) -> tuple[Tensor, Tensor]:
        """log f(z) (in the force's precision) and ∇_z log f(z): by ``explicit`` when given, else by autograd on a
        fresh leaf; no graph survives the call."""
        if explicit is not None:
            value, grad = explicit(z.detach(), self.precision, False)
            return value, grad.to(z.dtype)
        with torch.enable_grad(), force_autocast(self.precision, z.device):
            z = z.detach().requires_grad_(True)
            value = log_f(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
        return value.detach(), grad.to(z.dtype)

    def _exact(self, log_f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
        with torch.no_grad(), force_autocast("fp32", z.device):
            return log_f(z.detach())

    def force(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(∇_z log f₀, ∇_z log f₁) at ``z``, each ``[*batch, d]`` in z's dtype."""
        g0 = self._grad(self.log_f0, z)[1]
        return (g0, g0) if self.log_f1 is None else (g0, self._grad(self.log_f1, z, self.grad_f1)[1])

    def __call__(self, z: Tensor) -> HMCState:
        if self.precision != "fp32":
            if self.log_f1 is not None and self.grad_f1 is not None:  # one exact forward gives value and force
                b, g1 = self.grad_f1(z.detach(), self.precision, True)
                return HMCState(
                    z.detach(), self._exact(self.log_f0, z), b, self._grad(self.log_f0, z)[1], g1.to(z.dtype)
                )
            g0, g1 = self.force(z)
            a = self._exact(self.log_f0, z)
            b = a if self.log_f1 is None else self._exact(self.log_f1, z)
            return HMCState(z.detach(), a, b, g0, g1)
        a, ga = self._grad(self.log_f0, z)
        if self.log_f1 is None:
            return HMCState(z.detach(), a, a, ga, ga)
        b, gb = self._grad(self.log_f1, z, self.grad_f1)
        return HMCState(z.detach(), a, b, ga, gb)


def path_potential(
    log_f0: Callable[[Tensor], Tensor],
    log_f1: Callable[[Tensor], Tensor] | None = None,
    *,
    precision: str = "fp32",
    grad_f1: ValueAndGrad | None = None,
) -> PathPotential:
    """Evaluate both ends of the path (one backward pass each) at a position; ``log_f1=None`` means f₁ = f₀;
    ``grad_f1`` computes log f₁ and its gradient without autograd (:class:`PathPotential`).

    ``precision="bf16"`` computes the force under bf16 autocast and the log-densities in full precision
    (:class:`PathPotential`); validate it first with :func:`smvi.core.estimators.precision.check_precision`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return PathPotential(log_f0, log_f1, precision, grad_f1)


def init_state(potential: Potential, z: Tensor) -> HMCState:
    """The state at positions ``z`` ``[*batch, d]``."""
    return potential(z)


def _log_density(state: HMCState, beta: float) -> Tensor:
    if beta in (0, 1):
        return state.log_f1 if beta else state.log_f0
    return torch.lerp(state.log_f0, state.log_f1, beta)


def _score(grad_f0: Tensor, grad_f1: Tensor, beta: float) -> Tensor:
    if beta in (0, 1):
        return grad_f1 if beta else grad_f0
    return torch.lerp(grad_f0, grad_f1, beta)


def _leapfrog(state: HMCState, p: Tensor, potential: Potential, beta: float, eps: Tensor, n: int):
    """``n`` leapfrog steps of size ``eps`` ``[*batch, 1]``: n force evaluations, and the exact log-densities at the
    end only (for a :class:`PathPotential`; a plain callable is evaluated in full at every step)."""
    force = getattr(potential, "force", None)
    p = torch.addcmul(p, eps, _score(state.grad_f0, state.grad_f1, beta), value=0.5)
    z = state.z
    for i in range(n):
        z = torch.addcmul(z, eps, p)
        if i < n - 1:
            g0, g1 = force(z) if force is not None else potential(z)[3:]
            p = torch.addcmul(p, eps, _score(g0, g1, beta), value=1.0)
        else:
            state = potential(z)
            p = torch.addcmul(p, eps, _score(state.grad_f0, state.grad_f1, beta), value=0.5)
    return state, p


def _log_accept(old: HMCState, new: HMCState, p0: Tensor, p1: Tensor, beta: float) -> Tensor:
    """min(0, −ΔH) in log space, −inf for any proposal with a non-finite position, density or momentum."""
    log_pi0, log_pi1 = _log_density(old, beta), _log_density(new, beta)
    k0, k1 = 0.5 * p0.pow(2).sum(-1), 0.5 * p1.pow(2).sum(-1)
    delta = (log_pi1 - k1) - (log_pi0 - k0)
    ok = torch.isfinite(log_pi1) & torch.isfinite(k1) & torch.isfinite(new.z).all(-1) & ~torch.isnan(delta)
    return torch.where(ok, delta.clamp(max=0.0), torch.full_like(delta, -float("inf")))


def _select(accept: Tensor, new: HMCState, old: HMCState) -> HMCState:
    vec = accept.unsqueeze(-1)
    return HMCState(
        torch.where(vec, new.z, old.z),
        torch.where(accept, new.log_f0, old.log_f0),
        torch.where(accept, new.log_f1, old.log_f1),
        torch.where(vec, new.grad_f0, old.grad_f0),
        torch.where(vec, new.grad_f1, old.grad_f1),
    )


def hmc_step(
    state: HMCState, key: Key, *, potential: Potential, beta: float, step_size: Tensor, n_leapfrog: int
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition leaving π_β ∝ f₀^(1−β) f₁^β invariant, batched over ``[*batch]`` independent chains.

    Momentum p ~ N(0, I); ``n_leapfrog`` leapfrog steps of per-chain size ``step_size`` (broadcastable to
    ``[*batch]``), reusing the gradient carried in ``state``, so n_leapfrog potential evaluations; accept with
    probability min(1, exp(−ΔH)), H(z, p) = −log π_β(z) + ½‖p‖², decided in log space (no exp overflow) against
    log u, u ~ U(0, 1). A proposal whose position, density or momentum is NaN or ±inf is never accepted. No autograd
    graph outlives the call. ``key`` supplies the noise. Reference: Neal (2011), "MCMC using Hamiltonian dynamics".

    Exact with a reduced-precision force (``path_potential(..., precision="bf16")``): HMC leaves π_β invariant for
    *any* deterministic, volume-preserving and reversible proposal map, provided the accept/reject uses the true
    Hamiltonian (Neal 2011: the proof of detailed balance uses only the proposal map's reversibility and volume
    preservation and the Metropolis test on H, never that the dynamics follow ∇ log π_β exactly). Leapfrog
    with a force F(z) that is merely *some* deterministic function of z, not the exact ∇ log π_β, is still a
    composition of shears (each of Jacobian determinant 1) and, with the momentum flip, its own inverse. Only the
    energies of the test must be exact: here log π_β comes from a full-precision forward pass and the kinetic energy,
    positions and momenta stay in z's dtype. A worse force only lowers the acceptance rate; it never biases the chain.

    The force at a trajectory's two ends may even be another function than at its interior points (a model's explicit
    pass gives the ends' force from the full-precision forward that the exact energy needs anyway, the interior's from
    an all-bf16 pass): the half-kicks at both ends use F_end and every interior kick F_int, so the reversed
    trajectory applies the same functions at the same points; each kick is still a shear and the map stays
    reversible and volume-preserving.
    """
    p0 = normal(fold_in(key, 0), state.z.shape[-1], state.z.dtype)
    new, p1 = _leapfrog(state, p0, potential, beta, step_size.unsqueeze(-1), n_leapfrog)
    log_acc = _log_accept(state, new, p0, p1, beta)
    accept = uniform(fold_in(key, 1)).log() < log_acc
    return _select(accept, new, state), HMCInfo(log_acc.exp(), accept)
