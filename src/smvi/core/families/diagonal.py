"""The paper's q: N(μ, diag σ²), σ = exp(log σ); ``n_params = 2d`` (bit-identical to the VAE's encoder before families
existed)."""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from smvi.core.families.base import PosteriorFamily, register_family

__all__ = ["DiagonalGaussian"]


@register_family("diagonal")
class DiagonalGaussian(PosteriorFamily):
    """N(μ, diag exp(log σ)²) from params ``[N, 2d]`` = [μ, log σ]."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim, self.n_params = z_dim, 2 * z_dim

    def distribution(self, params: Tensor) -> Distribution:
        mean, log_std = params.chunk(2, dim=-1)
        # no argument validation: a non-finite σ must reach the trainer's NaN guard, not raise inside torch
        return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)
