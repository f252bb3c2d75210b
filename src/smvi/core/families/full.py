"""N(μ, LLᵀ): a full-covariance Gaussian, ``n_params = 2d + d(d−1)/2``. Off-diagonal zeros give the diagonal family
exactly; its KL to the diagonal-Gaussian prior is analytic (registered with torch.distributions here)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence, register_kl

from smvi.core.families.base import PosteriorFamily, register_family

__all__ = ["FullGaussian"]


@register_family("full")
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

    off_scale: Tensor  # buffers (registered in __init__)
    _off_index: Tensor

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim, self.n_params = z_dim, 2 * z_dim + z_dim * (z_dim - 1) // 2
        self.register_buffer("off_scale", torch.tensor(z_dim**-0.5))
        rows, cols = torch.tril_indices(z_dim, z_dim, -1)
        self.register_buffer("_off_index", rows * z_dim + cols, persistent=False)

    def scale_tril(self, params: Tensor) -> Tensor:
        """L ``[N, d, d]``: diag exp(params[d:2d]), strictly-lower entries params[2d:]·off_scale (row-major)."""
        d = self.z_dim
        off = params[..., 2 * d :] * self.off_scale
        flat = off.new_zeros(*off.shape[:-1], d * d).index_copy(-1, self._off_index, off)
        return flat.view(*off.shape[:-1], d, d) + torch.diag_embed(params[..., d : 2 * d].exp())

    def distribution(self, params: Tensor) -> Distribution:
        if params.dtype in (torch.bfloat16, torch.float16):  # under autocast: triangular solves need fp32 on CPU
            params = params.float()
        return MultivariateNormal(params[..., : self.z_dim], scale_tril=self.scale_tril(params), validate_args=False)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal(q: MultivariateNormal, p: Independent) -> Tensor:
    """KL(N(μ, LLᵀ) ‖ N(m, diag s²)) in closed form (torch registers only MVN–MVN), so the ELBO of the full family
    uses the analytic KL against the N(0, I) prior, as the diagonal family does."""
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    loc, scale = torch.broadcast_tensors(p.base_dist.loc, p.base_dist.scale)
    return kl_divergence(q, MultivariateNormal(loc, scale_tril=torch.diag_embed(scale), validate_args=False))
