"""Latent variable models and the protocol every objective and estimator in smvi relies on.

The protocol (:class:`LatentVariableModel`) is four members:

- ``z_dim: int``
- ``log_prior(z)``: z ``[..., z_dim]`` -> ``[...]``
- ``log_likelihood(x, z)``: log p(x|z); x ``[N, x_dim]``, z ``[..., N, z_dim]`` -> ``[..., N]``
- ``encode(x)``: q(z|x), a reparameterizable ``torch.distributions.Distribution`` with batch shape ``[N]`` and event
  shape ``[z_dim]``

Optional members that estimators use when present: ``prior`` (a Distribution, for analytic KL) and ``decode(z)``
(a Distribution over x, for simulating data in BDMC).

Two models implement it: :class:`VAE` (the paper's) and :class:`LinearGaussian` (closed-form posterior, for tests and
for checking estimators).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from .config import ModelConfig

__all__ = ["LatentVariableModel", "VAE", "LinearGaussian", "standard_normal_log_prob"]

_LOG_2PI = math.log(2 * math.pi)


@runtime_checkable
class LatentVariableModel(Protocol):
    z_dim: int

    def log_prior(self, z: Tensor) -> Tensor: ...

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor: ...

    def encode(self, x: Tensor) -> Distribution: ...


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


_ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _mlp(sizes: list[int], activation: str, last_scale: float = 1.0) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them; He-normal init (fan-in, gain √2), zero
    biases, the last layer's weights multiplied by ``last_scale``."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(n_in, n_out)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    with torch.no_grad():
        layers[-1].weight.mul_(last_scale)
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian mean-field encoder q(z|x) = N(μ_φ(x), diag σ_φ(x)²), prior N(0, I), and a Bernoulli (logits) or
    diagonal-Gaussian decoder p_θ(x|z). The encoder outputs the mean and log σ.
    """

    def __init__(self, x_dim: int = 784, config: ModelConfig | None = None):
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.x_dim = x_dim
        self.z_dim = cfg.z_dim
        out = x_dim if cfg.likelihood == "bernoulli" else 2 * x_dim
        self.encoder = _mlp([x_dim, *cfg.encoder_hidden, 2 * cfg.z_dim], cfg.activation, cfg.encoder_last_scale)
        self.decoder = _mlp([cfg.z_dim, *cfg.decoder_hidden, out], cfg.activation, cfg.decoder_last_scale)

    @property
    def prior(self) -> Distribution:
        p = next(self.parameters())
        zeros = torch.zeros(self.z_dim, dtype=p.dtype, device=p.device)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def log_prior(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def encode(self, x: Tensor) -> Distribution:
        mean, log_std = self.encoder(x).chunk(2, dim=-1)
        # no argument validation: a non-finite σ must reach the trainer's NaN guard, not raise inside torch
        return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) as a Distribution with event shape [x_dim]."""
        h = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return Independent(Bernoulli(logits=h), 1)
        mean, log_std = h.chunk(2, dim=-1)
        return Independent(Normal(mean, log_std.exp()), 1)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        h = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            x = x.expand_as(h)
            return -F.binary_cross_entropy_with_logits(h, x, reduction="none").sum(-1)
        mean, log_std = h.chunk(2, dim=-1)
        sq = ((x - mean) * torch.exp(-log_std)).pow(2)
        return -(0.5 * sq + log_std + 0.5 * _LOG_2PI).sum(-1)


class LinearGaussian(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s²I), with an amortized Gaussian encoder q(z|x) = N(Ax + c, diag σ²).

    Everything is closed form: log p(x) = log N(x; b, WWᵀ + s²I); the posterior is N(m(x), Σ) with
    Σ = (I + WᵀW/s²)⁻¹ and m(x) = Σ Wᵀ(x − b)/s². Used to check objectives and estimators against exact values.
    """

    def __init__(self, W: Tensor, b: Tensor, s: float, A: Tensor, c: Tensor, log_sigma: Tensor):
        super().__init__()
        self.W, self.b = nn.Parameter(W.clone()), nn.Parameter(b.clone())
        self.log_s = nn.Parameter(torch.tensor(math.log(s), dtype=W.dtype))
        self.A, self.c = nn.Parameter(A.clone()), nn.Parameter(c.clone())
        self.log_sigma = nn.Parameter(log_sigma.clone())
        self.x_dim, self.z_dim = W.shape

    @classmethod
    def random(cls, x_dim: int, z_dim: int, *, s: float = 0.7, seed: int = 0, dtype=torch.float64) -> "LinearGaussian":
        g = torch.Generator().manual_seed(seed)
        r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
        return cls(r(x_dim, z_dim), 0.3 * r(x_dim), s, 0.3 * r(z_dim, x_dim), 0.1 * r(z_dim), -0.5 + 0.1 * r(z_dim))

    @property
    def prior(self) -> Distribution:
        zeros = torch.zeros(self.z_dim, dtype=self.W.dtype)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def log_prior(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        mean = z @ self.W.T + self.b
        s2 = torch.exp(2 * self.log_s)
        return -0.5 * (((x - mean) ** 2).sum(-1) / s2 + self.x_dim * (_LOG_2PI + 2 * self.log_s))

    def encode(self, x: Tensor) -> Distribution:
        mean = x @ self.A.T + self.c
        return Independent(Normal(mean, self.log_sigma.exp().expand_as(mean)), 1)

    def decode(self, z: Tensor) -> Distribution:
        mean = z @ self.W.T + self.b
        return Independent(Normal(mean, self.log_s.exp().expand_as(mean)), 1)

    # ---- closed forms -------------------------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> Distribution:
        """The exact posterior p(z|x) (full covariance), batch shape [N]."""
        s2 = torch.exp(2 * self.log_s)
        eye = torch.eye(self.z_dim, dtype=self.W.dtype)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / s2)
        mean = (x - self.b) @ self.W @ cov / s2
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x), shape [N]."""
        s2 = torch.exp(2 * self.log_s)
        cov = self.W @ self.W.T + s2 * torch.eye(self.x_dim, dtype=self.W.dtype)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def exact_kl(self, x: Tensor) -> Tensor:
        """KL(q(z|x) ‖ p(z|x)), shape [N]."""
        q = self.encode(x)
        q_full = torch.distributions.MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))
        return torch.distributions.kl_divergence(q_full, self.posterior(x))

    def exact_score_matching(self, x: Tensor) -> Tensor:
        """Closed-form D_SM(q, p(z|x)) = E_q‖∇log q(z) − ∇log p(z|x)‖², shape [N].

        With z = μ + σ⊙ε, ∇log q = −ε/σ and ∇log p(z|x) = −P(z − m) with P = Σ⁻¹, the difference is
        d(ε) = P(μ − m) + (P diag σ − diag(1/σ)) ε, so E‖d‖² = ‖P(μ − m)‖² + ‖P diag σ − diag(1/σ)‖_F².
        """
        q, post = self.encode(x), self.posterior(x)
        prec = post.precision_matrix
        mu, sigma = q.mean, q.stddev
        bias = torch.einsum("...i,...ij->...j", mu - post.mean, prec).pow(2).sum(-1)
        M = prec * sigma.unsqueeze(-2) - torch.diag_embed(1.0 / sigma)
        return bias + M.pow(2).sum((-2, -1))
