"""Variational families q(z|x): the paper's diagonal Gaussian, a full-covariance Gaussian and a conditional flow.

A family turns the encoder's output, one parameter vector per example (``[N, n_params]``), into a reparameterizable
``torch.distributions.Distribution`` with batch shape ``[N]`` and event shape ``[z_dim]`` (rsample and an exact,
z-differentiable log_prob, which D_SM needs), so every objective and estimator works unchanged:

- :class:`DiagonalGaussian` — N(μ, diag σ²), σ = exp(log σ); ``n_params = 2d`` (the paper's q; bit-identical to the
  VAE's encoder before families existed).
- :class:`FullGaussian` — N(μ, LLᵀ), L lower-triangular with diagonal exp(·) > 0 and free strictly-lower entries
  (the encoder's outputs times 1/√d, :attr:`FullGaussian.off_scale`); ``n_params = 2d + d(d−1)/2``. Off-diagonal
  zeros give the diagonal family exactly.
- :class:`CouplingFlow` — z = f_K ∘ … ∘ f_1(u), u ~ N(μ, diag σ²), each f_k an affine coupling layer (Dinh et al.,
  "Density estimation using Real NVP", 2017) whose shift and log-scale come from a small network of the other half of
  the coordinates and a context vector h(x) output by the encoder (conditioning as in IAF, Kingma et al. 2016).
  log q(z|x) = log N(u; μ, σ²) − Σ_k Σ log-scales, exact, evaluated at any z through the closed-form inverse (never
  through a cache, so autograd sees log q as a function of z). ``n_params = 2d + context``.

For the gap split (:mod:`smvi.stages.gaps`) a family also exposes its per-image free parameters: :meth:`local_init` copies
the amortized ones for N images (the flow's network weights included, one copy per image) and
:meth:`local_distribution` builds q from such copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Distribution, Independent, MultivariateNormal, Normal, Transform, TransformedDistribution, constraints,
    kl_divergence, register_kl,
)

from smvi.settings.run import FLOW_DEFAULTS

__all__ = ["PosteriorFamily", "DiagonalGaussian", "FullGaussian", "CouplingFlow", "FlowPosterior", "make_family",
           "family_size", "location", "FLOW_DEFAULTS"]

_MAX_LOG_SCALE = 3.0  # coupling log-scales are soft-clamped to (−3, 3): s = 3·tanh(raw/3)


def family_size(kind: str, z_dim: int, context: int = 0) -> int:
    """Encoder outputs per example for family ``kind``."""
    return {"diagonal": 2 * z_dim, "full": 2 * z_dim + z_dim * (z_dim - 1) // 2, "flow": 2 * z_dim + context}[kind]


class PosteriorFamily(nn.Module):
    """A variational family: ``distribution(params [N, n_params])`` -> q with batch ``[N]``, event ``[z_dim]``."""

    kind: str
    z_dim: int
    n_params: int

    def distribution(self, params: Tensor) -> Distribution:
        raise NotImplementedError

    def local_init(self, params: Tensor) -> list[Tensor]:
        """Per-image free parameters (each with leading dim N), detached copies starting at the amortized values."""
        return [params.detach().clone()]

    def local_distribution(self, local: list[Tensor]) -> Distribution:
        """q built from :meth:`local_init`-shaped tensors."""
        return self.distribution(local[0])


class DiagonalGaussian(PosteriorFamily):
    kind = "diagonal"

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim, self.n_params = z_dim, 2 * z_dim

    def distribution(self, params: Tensor) -> Distribution:
        mean, log_std = params.chunk(2, dim=-1)
        # no argument validation: a non-finite σ must reach the trainer's NaN guard, not raise inside torch
        return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)


class FullGaussian(PosteriorFamily):
    """N(μ, LLᵀ) with L = diag exp(params[d:2d]) + strictly-lower entries params[2d:]·:attr:`off_scale` (row-major).

    ``off_scale = 1/√d``, as in a fan-in init: Adam moves each encoder output by about the same amount per step
    whatever its role, and with unscaled entries the first steps add up to d − 1 such moves to each coordinate's
    variance (49 at d = 50), which drowns z in noise and collapses q onto the prior for many epochs (measured: 12 of
    30 epochs at λ = 0 on MNIST, against none for the diagonal family; the first step is tested in
    tests/test_posteriors.py). Scaled, a row's off-diagonal entries together move its variance about as much as its
    diagonal entry does. Learning them still slows training at Adam's lr 1e-3, whatever their scale
    (scripts/full_cov_probe.py; README). The family is the same set of distributions either way; a checkpoint keeps
    its scale (a buffer), and one saved before it was introduced is refused as not fitting the model.
    """

    kind = "full"

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim, self.n_params = z_dim, family_size("full", z_dim)
        self.register_buffer("off_scale", torch.tensor(z_dim ** -0.5))
        rows, cols = torch.tril_indices(z_dim, z_dim, -1)
        self.register_buffer("_off_index", rows * z_dim + cols, persistent=False)

    def scale_tril(self, params: Tensor) -> Tensor:
        """L ``[N, d, d]``: diag exp(params[d:2d]), strictly-lower entries params[2d:]·off_scale (row-major)."""
        d = self.z_dim
        off = params[..., 2 * d:] * self.off_scale
        flat = off.new_zeros(*off.shape[:-1], d * d).index_copy(-1, self._off_index, off)
        return flat.view(*off.shape[:-1], d, d) + torch.diag_embed(params[..., d:2 * d].exp())

    def distribution(self, params: Tensor) -> Distribution:
        if params.dtype in (torch.bfloat16, torch.float16):  # under autocast: triangular solves need fp32 on CPU
            params = params.float()
        return MultivariateNormal(params[..., :self.z_dim], scale_tril=self.scale_tril(params), validate_args=False)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal(q: MultivariateNormal, p: Independent) -> Tensor:
    """KL(N(μ, LLᵀ) ‖ N(m, diag s²)) in closed form (torch registers only MVN–MVN), so the ELBO of the full family
    uses the analytic KL against the N(0, I) prior, as the diagonal family does."""
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    loc, scale = torch.broadcast_tensors(p.base_dist.loc, p.base_dist.scale)
    return kl_divergence(q, MultivariateNormal(loc, scale_tril=torch.diag_embed(scale), validate_args=False))


# ---- the conditional affine-coupling flow ---------------------------------------------------------------------------
def _linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """h ``[..., N, in]`` through shared weights ``[out, in]`` or per-image weights ``[N, out, in]`` (bias ``[N, out]``)."""
    if weight.dim() == 2:
        return F.linear(h, weight, bias)
    return torch.einsum("...ni,noi->...no", h, weight) + bias


class _AffineCoupling(Transform):
    """y_B = u_B·exp(s) + t, y_A = u_A, with (t, s) = net([u_A, h]); s soft-clamped to (−3, 3). Never cached."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, keep: Tensor, change: Tensor, weights: list[tuple[Tensor, Tensor]], context: Tensor):
        super().__init__(cache_size=0)
        self.keep, self.change, self.weights, self.context = keep, change, weights, context
        self.inverse_perm = torch.argsort(torch.cat([keep, change]))

    def _broadcast(self, u: Tensor) -> Tensor:
        """u ``[..., d]`` broadcast against the images' batch (the context's leading shape)."""
        return u.expand(*torch.broadcast_shapes(u.shape[:-1], self.context.shape[:-1]), u.shape[-1])

    def _shift_log_scale(self, u_keep: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.cat([u_keep, self.context.expand(*u_keep.shape[:-1], self.context.shape[-1])], -1)
        for i, (w, b) in enumerate(self.weights):
            h = _linear(h, w, b)
            if i < len(self.weights) - 1:
                h = torch.tanh(h)
        shift, raw = h.chunk(2, dim=-1)
        return shift, _MAX_LOG_SCALE * torch.tanh(raw / _MAX_LOG_SCALE)

    def _assemble(self, kept: Tensor, changed: Tensor) -> Tensor:
        return torch.cat([kept, changed], -1)[..., self.inverse_perm]

    def _call(self, u: Tensor) -> Tensor:
        u = self._broadcast(u)
        u_keep = u[..., self.keep]
        shift, log_scale = self._shift_log_scale(u_keep)
        return self._assemble(u_keep, u[..., self.change] * log_scale.exp() + shift)

    def _inverse(self, y: Tensor) -> Tensor:
        y = self._broadcast(y)
        y_keep = y[..., self.keep]
        shift, log_scale = self._shift_log_scale(y_keep)
        return self._assemble(y_keep, (y[..., self.change] - shift) * torch.exp(-log_scale))

    def log_abs_det_jacobian(self, u: Tensor, y: Tensor) -> Tensor:
        return self._shift_log_scale(self._broadcast(u)[..., self.keep])[1].sum(-1)


class FlowPosterior(TransformedDistribution):
    """q(z|x) of :class:`CouplingFlow`: a diagonal Gaussian base pushed through affine coupling layers.

    ``location`` is the image of the base mean under the flow (a deterministic summary, used as the encoder feature
    for SSL); the flow's mean E_q[z] has no closed form, so ``mean`` is not defined.
    """

    def __init__(self, base: Distribution, transforms: list[Transform]):
        super().__init__(base, transforms, validate_args=False)

    @property
    def location(self) -> Tensor:
        z = self.base_dist.mean
        for t in self.transforms:
            z = t(z)
        return z


class CouplingFlow(PosteriorFamily):
    """``layers`` affine coupling layers conditioned on a context h(x) of size ``context``; the coordinates kept fixed
    alternate between the even and the odd ones. Each layer's network: [d_keep + context, *hidden, 2·d_change], tanh
    between, last layer initialized to zero (the flow starts as the identity)."""

    kind = "flow"

    def __init__(self, z_dim: int, layers: int, hidden: tuple[int, ...], context: int):
        super().__init__()
        if z_dim < 2:
            raise ValueError(f"a coupling flow needs z_dim >= 2, got {z_dim}")
        self.z_dim, self.context_dim, self.n_params = z_dim, context, family_size("flow", z_dim, context)
        idx = torch.arange(z_dim)
        self.splits = [(idx[idx % 2 == k % 2], idx[idx % 2 != k % 2]) for k in range(layers)]  # (keep, change)
        self.nets = nn.ModuleList()
        for keep, change in self.splits:
            sizes = [len(keep) + context, *hidden, 2 * len(change)]
            lins = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
            for lin in lins[:-1]:
                nn.init.xavier_normal_(lin.weight)
                nn.init.zeros_(lin.bias)
            nn.init.zeros_(lins[-1].weight)
            nn.init.zeros_(lins[-1].bias)
            self.nets.append(nn.ModuleList(lins))

    def _weights(self) -> list[list[tuple[Tensor, Tensor]]]:
        return [[(lin.weight, lin.bias) for lin in net] for net in self.nets]

    def _build(self, params: Tensor, weights: list[list[tuple[Tensor, Tensor]]]) -> FlowPosterior:
        d = self.z_dim
        base = Independent(Normal(params[..., :d], params[..., d:2 * d].exp(), validate_args=False), 1,
                           validate_args=False)
        context = params[..., 2 * d:]
        transforms = [_AffineCoupling(keep.to(params.device), change.to(params.device), w, context)
                      for (keep, change), w in zip(self.splits, weights)]
        return FlowPosterior(base, transforms)

    def distribution(self, params: Tensor) -> Distribution:
        return self._build(params, self._weights())

    def local_init(self, params: Tensor) -> list[Tensor]:
        n = params.shape[0]
        copies = [t.detach().expand(n, *t.shape).clone() for layer in self._weights() for wb in layer for t in wb]
        return [params.detach().clone(), *copies]

    def local_distribution(self, local: list[Tensor]) -> Distribution:
        params, rest = local[0], iter(local[1:])
        weights = [[(next(rest), next(rest)) for _ in net] for net in self.nets]
        return self._build(params, weights)


def make_family(kind: str, z_dim: int, *, flow_layers: int | None = None, flow_hidden: tuple[int, ...] | None = None,
                flow_context: int | None = None) -> PosteriorFamily:
    """The family named ``kind`` ("diagonal", "full" or "flow"; flow settings default to :data:`FLOW_DEFAULTS`)."""
    if kind == "diagonal":
        return DiagonalGaussian(z_dim)
    if kind == "full":
        return FullGaussian(z_dim)
    if kind == "flow":
        return CouplingFlow(z_dim, flow_layers or FLOW_DEFAULTS["flow_layers"],
                            tuple(flow_hidden or FLOW_DEFAULTS["flow_hidden"]),
                            FLOW_DEFAULTS["flow_context"] if flow_context is None else flow_context)
    raise ValueError(f"unknown posterior family {kind!r}: use 'diagonal', 'full' or 'flow'")


def location(q) -> Tensor:
    """A deterministic summary of q(z|x), ``[N, z_dim]``: its mean, or for a flow (no closed-form mean) its
    ``location``, the base mean pushed through the flow. The encoder feature of SSL and of the active-units count."""
    return q.location if hasattr(q, "location") else q.mean
