"""A conditional affine-coupling flow: z = f_K ∘ … ∘ f_1(u), u ~ N(μ, diag σ²), each f_k an affine coupling layer
(Dinh et al., "Density estimation using Real NVP", 2017) whose shift and log-scale come from a small network of the
other half of the coordinates and a context vector h(x) output by the encoder (conditioning as in IAF, Kingma et al.
2016). log q(z|x) = log N(u; μ, σ²) − Σ_k Σ log-scales, exact, evaluated at any z through the closed-form inverse
(never through a cache, so autograd sees log q as a function of z). ``n_params = 2d + context``. Settings:
``model.flow_layers``, ``model.flow_hidden``, ``model.flow_context``.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, Transform, TransformedDistribution, constraints

from smvi.core.families.base import PosteriorFamily, register_family

__all__ = ["CouplingFlow", "FlowPosterior"]

_MAX_LOG_SCALE = 3.0  # coupling log-scales are soft-clamped to (−3, 3): s = 3·tanh(raw/3)


def _linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """h ``[..., N, in]`` through shared weights ``[out, in]`` or per-image weights ``[N, out, in]`` (bias ``[N,
    out]``)."""
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
        return z  # pyright: ignore[reportReturnType]  # torch's Transform.__call__ is unannotated


@register_family("flow")
class CouplingFlow(PosteriorFamily):
    """``layers`` affine coupling layers conditioned on a context h(x) of size ``context``; the coordinates kept fixed
    alternate between the even and the odd ones. Each layer's network: [d_keep + context, *hidden, 2·d_change], tanh
    between, last layer initialized to zero (the flow starts as the identity)."""

    def __init__(self, z_dim: int, layers: int, hidden: tuple[int, ...], context: int):
        super().__init__()
        if z_dim < 2:
            raise ValueError(f"a coupling flow needs z_dim >= 2, got {z_dim}")
        self.z_dim, self.context_dim, self.n_params = z_dim, context, 2 * z_dim + context
        self.n_context = context
        idx = torch.arange(z_dim)
        self.splits = [(idx[idx % 2 == k % 2], idx[idx % 2 != k % 2]) for k in range(layers)]  # (keep, change)
        self.nets = nn.ModuleList()
        for keep, change in self.splits:
            sizes = [len(keep) + context, *hidden, 2 * len(change)]
            lins = [nn.Linear(a, b) for a, b in pairwise(sizes)]
            for lin in lins[:-1]:
                nn.init.xavier_normal_(lin.weight)
                nn.init.zeros_(lin.bias)
            nn.init.zeros_(lins[-1].weight)
            nn.init.zeros_(lins[-1].bias)
            self.nets.append(nn.ModuleList(lins))

    @classmethod
    def from_settings(cls, z_dim: int, **settings: Any) -> CouplingFlow:
        """From ``model.flow_layers``, ``model.flow_hidden`` and ``model.flow_context``."""
        return cls(z_dim, settings["flow_layers"], tuple(settings["flow_hidden"]), settings["flow_context"])

    def _weights(self) -> list[list[tuple[Tensor, Tensor]]]:
        # nets: a ModuleList of ModuleLists of nn.Linear, which torch types as Module items
        return [[(lin.weight, lin.bias) for lin in net] for net in self.nets]  # pyright: ignore[reportGeneralTypeIssues]

    def _build(self, params: Tensor, weights: list[list[tuple[Tensor, Tensor]]]) -> FlowPosterior:
        d = self.z_dim
        base = Independent(
            Normal(params[..., :d], params[..., d : 2 * d].exp(), validate_args=False), 1, validate_args=False
        )
        context = params[..., 2 * d :]
        transforms: list[Transform] = [
            _AffineCoupling(keep.to(params.device), change.to(params.device), w, context)
            for (keep, change), w in zip(self.splits, weights, strict=True)
        ]
        return FlowPosterior(base, transforms)

    def distribution(self, params: Tensor) -> Distribution:
        return self._build(params, self._weights())

    def local_init(self, params: Tensor) -> list[Tensor]:
        n = params.shape[0]
        copies = [t.detach().expand(n, *t.shape).clone() for layer in self._weights() for wb in layer for t in wb]
        return [params.detach().clone(), *copies]

    def local_distribution(self, local: list[Tensor]) -> Distribution:
        params, rest = local[0], iter(local[1:])
        weights = [[(next(rest), next(rest)) for _ in net] for net in self.nets]  # pyright: ignore[reportGeneralTypeIssues]
        return self._build(params, weights)
