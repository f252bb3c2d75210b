"""Training objectives: the ELBO, the score-matching divergence D_SM, and the SMVI objective ELBO − λ·D_SM.

All functions take any :class:`~smvi.models.LatentVariableModel` and a batch ``x`` of shape ``[N, x_dim]`` and return
per-example values of shape ``[N]``: reduce them yourself. Reference: Levy & Ermon, "Trading-off Learning and
Inference in Deep Latent Variable Models" (the paper in this repository's shared folder), eq. (6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from .models import VAE

__all__ = ["elbo", "score_matching_divergence", "smvi_objective", "SMVITerms"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class SMVITerms:
    """Per-example terms of the SMVI objective, each ``[N]``.

    ``loss = −(elbo − λ·d_sm)`` is what training minimizes (its mean). ``elbo = log_likelihood − kl``, where
    ``log_likelihood`` is the reconstruction term E_q log p(x|z). ``d_sm`` is ``None`` when it was not computed
    (λ = 0 and not requested).
    """

    loss: Tensor
    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor
    d_sm: Tensor | None

    def means(self) -> dict[str, float]:
        """Batch means as Python floats, for logging."""
        out = {"loss": self.loss, "elbo": self.elbo, "log_likelihood": self.log_likelihood, "kl": self.kl}
        if self.d_sm is not None:
            out["d_sm"] = self.d_sm
        return {k: float(v.detach().mean()) for k, v in out.items()}


def _kl(model, q: Distribution, z: Tensor) -> Tensor:
    """KL(q(z|x) ‖ p(z)): analytic when the model exposes ``prior`` and torch knows the pair, else a Monte Carlo
    average over the samples ``z`` ``[S, N, z_dim]``."""
    prior = getattr(model, "prior", None)
    if prior is not None:
        try:
            return kl_divergence(q, prior)
        except NotImplementedError:
            pass
    return (q.log_prob(z) - model.log_prior(z)).mean(0)


def _log_lik_and_score_gap(model, q: Distribution, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """log p(x|z) ``[S, N]`` and ‖∇_z log q(z|x) − ∇_z log p(x, z)‖² ``[S, N]`` from one decoder pass.

    With gradients enabled (and z requiring them) both are differentiable: the squared norm through the decoder's
    input-gradient to θ (second order), and through z = μ + σ⊙ε and q's own score to φ. Under ``torch.no_grad`` (or
    for a z that does not require gradients) they are computed but detached. The paper's VAE takes an explicit
    forward/backward pass through its MLP decoder (:func:`_mlp_log_lik_and_score_gap`); any other model the generic
    autograd one (:func:`_autograd_log_lik_and_score_gap`). Both compute the same function of (θ, φ, z).
    """
    layers = _mlp_decoder(model, q)
    if layers is None:
        return _autograd_log_lik_and_score_gap(model, q, x, z)
    train = torch.is_grad_enabled() and z.requires_grad
    with torch.set_grad_enabled(train):
        return _mlp_log_lik_and_score_gap(layers, model.config.likelihood, q.base_dist, x, z)


def _autograd_log_lik_and_score_gap(model, q: Distribution, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """The generic path, for any model: both scores from one backward pass, the gradient with respect to z of
    ``log q(z|x) − log p(z) − log p(x|z)`` (q's parameters are not downstream of z), with ``create_graph`` when
    training so that the squared norm can be differentiated again."""
    train = torch.is_grad_enabled() and z.requires_grad
    with torch.enable_grad():
        if not train:
            z = z.detach().requires_grad_(True)
        log_lik = model.log_likelihood(x, z)
        gap = q.log_prob(z) - model.log_prior(z) - log_lik
        (g,) = torch.autograd.grad(gap.sum(), z, create_graph=train)
    sq = g.pow(2).sum(-1)
    if not train:
        log_lik, sq = log_lik.detach(), sq.detach()
    return log_lik, sq


# ---- the fast path for the paper's VAE ----------------------------------------------------------------------------
def _softplus(a: Tensor) -> tuple[Tensor, Tensor]:
    return F.softplus(a), torch.sigmoid(a)


def _tanh(a: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(a)
    return t, 1 - t * t


def _relu(a: Tensor) -> tuple[Tensor, Tensor]:
    return F.relu(a), (a > 0).to(a.dtype)


def _elu(a: Tensor) -> tuple[Tensor, Tensor]:
    e = F.elu(a)
    return e, torch.where(a > 0, 1.0, e + 1)


# activation module type -> a ↦ (f(a), f'(a)), for modules in their default configuration (see _plain_activation)
_ACTIVATIONS: dict[type, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    nn.Softplus: _softplus, nn.Tanh: _tanh, nn.ReLU: _relu, nn.ELU: _elu,
}


def _plain_activation(m: nn.Module) -> bool:
    if type(m) not in _ACTIVATIONS:
        return False
    if type(m) is nn.Softplus:
        return (m.beta, m.threshold) == (1.0, 20.0)
    return type(m) is not nn.ELU or m.alpha == 1.0


def _mlp_decoder(model, q: Distribution) -> list[nn.Module] | None:
    """The decoder's modules when the explicit pass applies: a :class:`~smvi.models.VAE` whose scoring methods are
    the library's own, a diagonal-Gaussian q, and a decoder of Linear layers with supported activations between them
    (and no hooks). Otherwise ``None``."""
    if not isinstance(model, VAE) or not isinstance(q, Independent) or not isinstance(q.base_dist, Normal):
        return None
    cls = type(model)
    if (cls.log_likelihood, cls.log_prior) != (VAE.log_likelihood, VAE.log_prior):
        return None
    layers = list(model.decoder) if type(model.decoder) is nn.Sequential else []
    if len(layers) % 2 == 0:
        return None
    for i, m in enumerate(layers):
        ok = type(m) is nn.Linear if i % 2 == 0 else _plain_activation(m)
        if not ok or m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
            return None
    return layers


def _mlp_log_lik_and_score_gap(
    layers: list[nn.Module], likelihood: str, q: Normal, x: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """log p(x|z) and ‖∇_z log q − ∇_z log p(z) − ∇_z log p(x|z)‖² for an MLP decoder, without double backward.

    The forward pass keeps each activation's derivative f'(a); the input-gradient is then written out as tensor ops,
    δ_out = ∂log p(x|z)/∂(decoder output), δ ← (δ W) ⊙ f'(a) layer by layer, ∇_z log p(x|z) = δ W₁, and the two
    Gaussian scores are closed form: ∇_z log q = −(z − μ)/σ², ∇_z log p(z) = −z. Differentiating the result is then
    ordinary first-order autograd through these ops — the same function autograd's double backward differentiates,
    with fewer and larger kernels.
    """
    h, derivs = z, []
    for lin, act in zip(layers[0:-1:2], layers[1::2]):
        h, d = _ACTIVATIONS[type(act)](F.linear(h, lin.weight, lin.bias))
        derivs.append(d)
    out = F.linear(h, layers[-1].weight, layers[-1].bias)
    if likelihood == "bernoulli":
        log_lik = -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        delta = x - torch.sigmoid(out)
    else:
        mean, log_std = out.chunk(2, dim=-1)
        inv_std = torch.exp(-log_std)
        r = (x - mean) * inv_std
        log_lik = -(0.5 * r.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)
        delta = torch.cat([r * inv_std, r.pow(2) - 1], dim=-1)
    for lin, d in zip(reversed(layers[2::2]), reversed(derivs)):
        delta = torch.matmul(delta, lin.weight) * d
    score_lik = torch.matmul(delta, layers[0].weight)
    gap = z - (z - q.loc) / q.scale.pow(2) - score_lik
    return log_lik, gap.pow(2).sum(-1)


def elbo(model, x: Tensor, *, n_samples: int = 1) -> Tensor:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), ``[N]``.

    Monte Carlo over ``n_samples`` reparameterized draws for the reconstruction term (unbiased); the KL is analytic
    when available (see :func:`_kl`), otherwise estimated from the same draws. Differentiable in θ and φ.
    """
    q = model.encode(x)
    z = q.rsample((n_samples,))
    return model.log_likelihood(x, z).mean(0) - _kl(model, q, z)


def score_matching_divergence(model, x: Tensor, *, n_samples: int = 1) -> Tensor:
    """D_SM(q(z|x), p(z|x)) = E_q ‖∇_z log q(z|x) − ∇_z log p(x, z)‖², ``[N]``.

    ∇_z log p(z|x) = ∇_z log p(x, z) because the normalizer p(x) does not depend on z. Estimated without bias by
    averaging over ``n_samples`` reparameterized draws z ~ q. Its gradient reaches both the decoder (θ, through the
    score ∇_z log p(x|z), by second-order autograd) and the encoder (φ, through z and q's score). No ½ factor.
    """
    q = model.encode(x)
    z = q.rsample((n_samples,))
    return _log_lik_and_score_gap(model, q, x, z)[1].mean(0)


def smvi_objective(
    model, x: Tensor, *, lam: float, n_samples: int = 1, compute_d_sm: bool | None = None
) -> SMVITerms:
    """The SMVI objective ELBO(x) − λ·D_SM(q(z|x), p(z|x)) for any real λ, as named per-example terms.

    One set of draws z ~ q serves both terms, and one decoder pass gives log p(x|z) and its z-gradient. With
    ``lam == 0`` and ``compute_d_sm`` not set, D_SM is skipped and ``loss == −elbo`` exactly: the plain VAE.
    ``compute_d_sm=True`` computes D_SM (and, with gradients enabled, keeps it differentiable) even at λ = 0.
    """
    if compute_d_sm is None:
        compute_d_sm = lam != 0
    elif lam != 0 and not compute_d_sm:
        raise ValueError(f"compute_d_sm=False is only possible with lam == 0 (got lam={lam})")
    q = model.encode(x)
    z = q.rsample((n_samples,))
    if compute_d_sm:
        log_lik, sq = _log_lik_and_score_gap(model, q, x, z)
        d_sm = sq.mean(0)
    else:
        log_lik, d_sm = model.log_likelihood(x, z), None
    rec = log_lik.mean(0)
    kl = _kl(model, q, z)
    elbo_ = rec - kl
    loss = -elbo_ if lam == 0 else -(elbo_ - lam * d_sm)
    return SMVITerms(loss=loss, elbo=elbo_, log_likelihood=rec, kl=kl, d_sm=d_sm)
