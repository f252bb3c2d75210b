"""Latent variable models and the protocol every objective and estimator in smvi relies on.

The protocol (:class:`LatentVariableModel`) is four members:

- ``z_dim: int``
- ``log_prior(z)``: z ``[..., z_dim]`` -> ``[...]``
- ``log_likelihood(x, z)``: log p(x|z); x ``[N, x_dim]``, z ``[..., N, z_dim]`` -> ``[..., N]``
- ``encode(x)``: q(z|x), a reparameterizable ``torch.distributions.Distribution`` with batch shape ``[N]`` and event
  shape ``[z_dim]``

Optional members that estimators use when present: ``prior`` (a Distribution, for analytic KL), ``decode(z)``
(a Distribution over x, for simulating data in BDMC) and ``log_likelihood_and_grad(x, z, *, precision, grad)``
(log p(x|z) ``[..., N]`` and ∇_z log p(x|z) ``[..., N, z_dim]`` without autograd, for AIS's leapfrog force and IWAE's
bf16 pass; ``precision`` "fp32" gives ``log_likelihood``'s value). Training with ``train.dsm_grad`` other than "both"
needs ``decoder_parameters()``: the generative model's parameters θ (every other parameter is the encoder's φ). The gap
split (:mod:`smvi.stages.gaps`) also needs ``family`` (a :class:`~smvi.core.families.PosteriorFamily`) and
``encoder_params(x)`` (``[N, family.n_params]``), with ``encode(x) == family.distribution(encoder_params(x))``.

Two models implement it: :class:`VAE` (the paper's) and :class:`LinearGaussian` (closed-form posterior, for tests and
for checking estimators).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, MultivariateNormal, Normal

from smvi.core.explicit import mlp_log_likelihood, supports
from smvi.core.families import DiagonalGaussian, PosteriorFamily, make_family
from smvi.settings.families import family_settings
from smvi.settings.run import ModelConfig

__all__ = ["LatentVariableModel", "VAE", "LinearGaussian"]

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
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        lin = nn.Linear(n_in, n_out)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    last = layers[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.mul_(last_scale)
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder q(z|x) from the family ``config.posterior`` (the paper's mean-field N(μ_φ(x), diag σ_φ(x)²) by
    default; see :mod:`smvi.core.families`), prior N(0, I), and a Bernoulli (logits) or diagonal-Gaussian decoder
    p_θ(x|z). The encoder outputs the family's parameters (mean and log σ for the diagonal family).
    """

    def __init__(self, x_dim: int = 784, config: ModelConfig | None = None):
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.x_dim = x_dim
        self.z_dim = cfg.z_dim
        out = x_dim if cfg.likelihood == "bernoulli" else 2 * x_dim
        family = make_family(cfg.posterior, cfg.z_dim, **family_settings(cfg))
        self.encoder = _mlp([x_dim, *cfg.encoder_hidden, family.n_params], cfg.activation, cfg.encoder_last_scale)
        self.decoder = _mlp([cfg.z_dim, *cfg.decoder_hidden, out], cfg.activation, cfg.decoder_last_scale)
        if family.n_context:  # a context h(x) (the flow's) keeps the full He init: only q's own parameters start small
            last = self.encoder[-1]
            assert isinstance(last, nn.Linear)
            with torch.no_grad():
                last.weight[family.n_params - family.n_context :].div_(cfg.encoder_last_scale)
        self.family = family  # registered last: the diagonal family has no parameters, so state and order are as before

    @property
    def prior(self) -> Distribution:
        p = next(self.parameters())
        zeros = torch.zeros(self.z_dim, dtype=p.dtype, device=p.device)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def log_prior(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def encoder_params(self, x: Tensor) -> Tensor:
        """The family's parameters for each example, ``[N, family.n_params]``."""
        return self.encoder(x)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """θ, the parameters of p(x|z) (the prior has none); the encoder's and the flow's are φ."""
        return list(self.decoder.parameters())

    def encode(self, x: Tensor) -> Distribution:
        return self.family.bind(self.family.distribution(self.encoder(x)), self, x)

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

    def log_likelihood_and_grad(
        self, x: Tensor, z: Tensor, *, precision: str = "fp32", grad: bool = True, exact_value: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """log p(x|z) ``[..., N]`` and ∇_z log p(x|z) ``[..., N, z_dim]`` (None unless ``grad``) in one explicit pass
        through the decoder (:func:`smvi.core.explicit.mlp_log_likelihood`: fp32, or bf16 products; with
        ``exact_value`` the forward in full precision and the backward's products in ``precision``); by autograd for
        a decoder that pass does not cover. No graph survives the call."""
        if supports(self.decoder):
            return mlp_log_likelihood(
                self.decoder, self.config.likelihood, x, z, precision=precision, grad=grad, exact_value=exact_value
            )
        if exact_value and precision != "fp32":
            value = self.log_likelihood_and_grad(x, z, grad=False)[0]
            return value, self.log_likelihood_and_grad(x, z, precision=precision)[1] if grad else None
        with torch.enable_grad(), torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            z = z.detach().requires_grad_(grad)
            value = self.log_likelihood(x, z)
            g = torch.autograd.grad(value.sum(), z)[0].to(z.dtype) if grad else None
        return value.detach().to(z.dtype), g


class LinearGaussian(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s²I), with an amortized encoder q(z|x) from ``family`` (diagonal by
    default): mean Ax + c, log σ shared across x, and the family's other parameters (full: the strictly-lower
    Cholesky entries; flow: the context) as Ex + e.

    Everything is closed form: log p(x) = log N(x; b, WWᵀ + s²I); the posterior is N(m(x), Σ) with
    Σ = (I + WᵀW/s²)⁻¹ and m(x) = Σ Wᵀ(x − b)/s². Used to check objectives and estimators against exact values.
    """

    def __init__(
        self,
        W: Tensor,
        b: Tensor,
        s: float,
        A: Tensor,
        c: Tensor,
        log_sigma: Tensor,
        *,
        family: PosteriorFamily | None = None,
        E: Tensor | None = None,
        e: Tensor | None = None,
    ):
        super().__init__()
        self.W, self.b = nn.Parameter(W.clone()), nn.Parameter(b.clone())
        self.log_s = nn.Parameter(torch.tensor(math.log(s), dtype=W.dtype))
        self.A, self.c = nn.Parameter(A.clone()), nn.Parameter(c.clone())
        self.log_sigma = nn.Parameter(log_sigma.clone())
        self.x_dim, self.z_dim = W.shape
        self.family = (family or DiagonalGaussian(self.z_dim)).to(W.dtype)
        extra = self.family.n_params - 2 * self.z_dim
        self.E = nn.Parameter(E.clone() if E is not None else W.new_zeros(extra, self.x_dim))
        self.e = nn.Parameter(e.clone() if e is not None else W.new_zeros(extra))

    @classmethod
    def random(
        cls,
        x_dim: int,
        z_dim: int,
        *,
        s: float = 0.7,
        seed: int = 0,
        dtype=torch.float64,
        posterior: str = "diagonal",
        **settings,
    ) -> LinearGaussian:
        """Random parameters from ``seed`` for the family ``posterior`` with its ``settings`` (e.g. flow_layers):
        random weights for the family's own parameters, random shared values for its extra encoder outputs, and
        random x-dependence for a context (a flow's): "full" gets random shared off-diagonal Cholesky entries."""
        g = torch.Generator().manual_seed(seed)
        r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
        args = (r(x_dim, z_dim), 0.3 * r(x_dim), s, 0.3 * r(z_dim, x_dim), 0.1 * r(z_dim), -0.5 + 0.1 * r(z_dim))
        family = make_family(posterior, z_dim, **settings).to(dtype)
        extra = family.n_params - 2 * z_dim
        for p in family.parameters():
            with torch.no_grad():
                p.copy_(0.3 * r(*p.shape))
        return cls(
            *args,
            family=family,
            E=0.1 * r(extra, x_dim) if family.n_context else None,
            e=0.3 * r(extra) if extra else None,
        )

    def decoder_parameters(self) -> list[nn.Parameter]:
        """θ = (W, b, log s), the parameters of p(x|z); the rest (A, c, log σ, E, e, the family's) are φ."""
        return [self.W, self.b, self.log_s]

    def encoder_params(self, x: Tensor) -> Tensor:
        """``[N, family.n_params]``: [Ax + c, log σ, Ex + e]."""
        mean = x @ self.A.T + self.c
        return torch.cat([mean, self.log_sigma.expand_as(mean), x @ self.E.T + self.e], -1)

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
        return self.family.bind(self.family.distribution(self.encoder_params(x)), self, x)

    def log_likelihood_and_grad(
        self, x: Tensor, z: Tensor, *, precision: str = "fp32", grad: bool = True, exact_value: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """log p(x|z) and its closed-form z-gradient Wᵀ(x − Wz − b)/s²; ``precision="bf16"`` takes both products'
        inputs in bfloat16 (as the VAE's explicit pass does; ``exact_value``: the first product in full precision),
        the rest in the model's dtype."""
        lowp = (lambda t: t.to(torch.bfloat16)) if precision == "bf16" else (lambda t: t)  # noqa: E731
        first = (lambda t: t) if exact_value else lowp  # noqa: E731
        mean = (first(z) @ first(self.W).T).to(z.dtype) + self.b
        s2 = torch.exp(2 * self.log_s)
        value = -0.5 * (((x - mean) ** 2).sum(-1) / s2 + self.x_dim * (_LOG_2PI + 2 * self.log_s))
        return value, (lowp(x - mean) @ lowp(self.W)).to(z.dtype) / s2 if grad else None

    def decode(self, z: Tensor) -> Distribution:
        mean = z @ self.W.T + self.b
        return Independent(Normal(mean, self.log_s.exp().expand_as(mean)), 1)

    # ---- closed forms -------------------------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> MultivariateNormal:
        """The exact posterior p(z|x) (full covariance), batch shape [N]."""
        s2 = torch.exp(2 * self.log_s)
        eye = torch.eye(self.z_dim, dtype=self.W.dtype)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / s2)
        mean = (x - self.b) @ self.W @ cov / s2
        return MultivariateNormal(mean, covariance_matrix=cov)

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x), shape [N]."""
        s2 = torch.exp(2 * self.log_s)
        cov = self.W @ self.W.T + s2 * torch.eye(self.x_dim, dtype=self.W.dtype)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def _q_gaussian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x)'s mean ``[N, d]`` and Cholesky factor ``[N, d, d]`` (Gaussian families only)."""
        q = self.encode(x)
        if isinstance(q, torch.distributions.MultivariateNormal):
            return q.mean, q.scale_tril
        if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
            return q.mean, torch.diag_embed(q.stddev)
        raise TypeError(f"closed forms need a Gaussian q, got {type(q).__name__}")

    def exact_kl(self, x: Tensor) -> Tensor:
        """KL(q(z|x) ‖ p(z|x)), shape [N] (Gaussian q)."""
        mean, L = self._q_gaussian(x)
        q_full = torch.distributions.MultivariateNormal(mean, scale_tril=L)
        return torch.distributions.kl_divergence(q_full, self.posterior(x))

    def exact_score_matching(self, x: Tensor) -> Tensor:
        """Closed-form D_SM(q, p(z|x)) = E_q‖∇log q(z) − ∇log p(z|x)‖², shape [N] (Gaussian q = N(μ, LLᵀ)).

        With z = μ + Lε, ∇log q = −L⁻ᵀε and ∇log p(z|x) = −P(z − m) with P = Σ⁻¹, the difference is
        d(ε) = P(μ − m) + (PL − L⁻ᵀ) ε, so E‖d‖² = ‖P(μ − m)‖² + ‖PL − L⁻ᵀ‖_F² (diagonal L = diag σ:
        ‖P diag σ − diag(1/σ)‖_F²). Both terms vanish exactly when q is the posterior (μ = m, LLᵀ = Σ).
        """
        mu, L = self._q_gaussian(x)
        post = self.posterior(x)
        prec = post.precision_matrix
        bias = torch.einsum("...i,...ij->...j", mu - post.mean, prec).pow(2).sum(-1)
        eye = torch.eye(self.z_dim, dtype=L.dtype).expand_as(L)
        L_inv_T = torch.linalg.solve_triangular(L, eye, upper=False).transpose(-2, -1)
        M = prec @ L - L_inv_T
        return bias + M.pow(2).sum((-2, -1))

    def best_diagonal_gap(self) -> Tensor:
        """min over diagonal Gaussians q of KL(q ‖ p(z|x)) = ½(Σᵢ log Pᵢᵢ − log det P), P = Σ⁻¹ (the same for every
        x; attained at q = N(m(x), diag 1/Pᵢᵢ)): the approximation gap of the diagonal family."""
        s2 = torch.exp(2 * self.log_s)
        prec = torch.eye(self.z_dim, dtype=self.W.dtype) + self.W.T @ self.W / s2
        return 0.5 * (prec.diagonal().log().sum() - torch.logdet(prec))
