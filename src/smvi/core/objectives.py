"""Training objectives: the ELBO, the score-matching divergence D_SM, the SMVI objective ELBO − λ·D_SM, and the two
baselines trained in the same loop — the β-VAE and IWAE — each registered by name (:func:`register_objective`;
its knob and settings live in :data:`smvi.settings.objectives.OBJECTIVES`) and called through
:func:`training_objective`, the trainer's one dispatch.

All functions take any :class:`~smvi.core.models.LatentVariableModel` and a batch ``x`` of shape ``[N, x_dim]`` and
return per-example values of shape ``[N]``: reduce them yourself. A posterior without reparameterized draws brings its
own estimators of these terms (``objective_terms``: the rejection-sampling family, :mod:`smvi.core.rejection`).
Reference: Levy & Ermon, "Trading-off Learning and Inference in Deep Latent Variable Models" (the paper in this
repository's shared folder), eq. (6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from smvi.settings.objectives import OBJECTIVES as SPECS

__all__ = [
    "elbo",
    "score_matching_divergence",
    "smvi_objective",
    "SMVITerms",
    "beta_vae_objective",
    "BetaTerms",
    "iwae_objective",
    "IWAETerms",
    "training_objective",
    "OBJECTIVES",
    "register_objective",
    "backward",
    "DSM_GRADS",
    "check_batch",
    "kl_to_prior",
    "log_lik_and_score_gap",
    "own_terms",
]


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


def check_batch(model, x) -> None:
    """Refuse, with one clear line, a batch the model cannot score: not a tensor, not ``[N, x_dim]`` (when the model
    states ``x_dim``), not floating-point, or of another dtype or device than the model's parameters."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    x_dim = getattr(model, "x_dim", None)
    if x.dim() != 2 or (x_dim is not None and x.shape[1] != x_dim):
        raise ValueError(f"x must have shape [N, {x_dim if x_dim is not None else 'x_dim'}], got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating-point (binary images as 0./1.), got {x.dtype}")
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if param is not None and (x.dtype != param.dtype or x.device != param.device):
        raise ValueError(
            f"x is {x.dtype} on {x.device} but the model is {param.dtype} on {param.device}: "
            f"use x.to(model's dtype and device)"
        )


def kl_to_prior(model, q: Distribution, z: Tensor) -> Tensor:
    """KL(q(z|x) ‖ p(z)): analytic when the model exposes ``prior`` and torch knows the pair, else a Monte Carlo
    average over the samples ``z`` ``[S, N, z_dim]``."""
    prior = getattr(model, "prior", None)
    if prior is not None:
        try:
            return kl_divergence(q, prior)
        except NotImplementedError:
            pass
    return (q.log_prob(z) - model.log_prior(z)).mean(0)


def own_terms(q: Distribution, model, x: Tensor, **settings):
    """The terms from q's own estimators when q brings them (a posterior without reparameterized draws:
    :class:`smvi.core.rejection.RejectionPosterior`), else None."""
    own = getattr(q, "objective_terms", None)
    return own(model, x, **settings) if own is not None else None


def log_lik_and_score_gap(model, q: Distribution, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """log p(x|z) ``[S, N]`` and ‖∇_z log q(z|x) − ∇_z log p(x, z)‖² ``[S, N]`` from one decoder pass.

    Both scores come from one backward pass: the gradient with respect to z of ``log q(z|x) − log p(z) − log p(x|z)``
    (z is held as the variable; q's parameters are not downstream of z). When gradients are enabled the backward pass
    builds a graph (``create_graph``), so the squared norm can be differentiated again — through the decoder's
    input-gradient to θ, and through z = μ + σ⊙ε and q's own score to φ. Under ``torch.no_grad`` the scores are still
    computed (on a detached z) but nothing is differentiable.
    """
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


def elbo(model, x: Tensor, *, n_samples: int = 1) -> Tensor:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), ``[N]``.

    Monte Carlo over ``n_samples`` reparameterized draws for the reconstruction term (unbiased); the KL is analytic
    when available (see :func:`kl_to_prior`), otherwise estimated from the same draws. Differentiable in θ and φ.
    """
    check_batch(model, x)
    q = model.encode(x)
    if (own := own_terms(q, model, x, objective="smvi", n_samples=n_samples)) is not None:
        return own.elbo
    z = q.rsample((n_samples,))
    return model.log_likelihood(x, z).mean(0) - kl_to_prior(model, q, z)


def score_matching_divergence(model, x: Tensor, *, n_samples: int = 1) -> Tensor:
    """D_SM(q(z|x), p(z|x)) = E_q ‖∇_z log q(z|x) − ∇_z log p(x, z)‖², ``[N]``.

    ∇_z log p(z|x) = ∇_z log p(x, z) because the normalizer p(x) does not depend on z. Estimated without bias by
    averaging over ``n_samples`` reparameterized draws z ~ q. Its gradient reaches both the decoder (θ, through the
    score ∇_z log p(x|z), by second-order autograd) and the encoder (φ, through z and q's score). No ½ factor.
    """
    check_batch(model, x)
    q = model.encode(x)
    if (own := own_terms(q, model, x, objective="smvi", n_samples=n_samples, compute_d_sm=True)) is not None:
        return own.d_sm
    z = q.rsample((n_samples,))
    return log_lik_and_score_gap(model, q, x, z)[1].mean(0)


def smvi_objective(model, x: Tensor, *, lam: float, n_samples: int = 1, compute_d_sm: bool | None = None) -> SMVITerms:
    """The SMVI objective ELBO(x) − λ·D_SM(q(z|x), p(z|x)) for any real λ, as named per-example terms.

    One set of draws z ~ q serves both terms, and one decoder pass gives log p(x|z) and its z-gradient. With
    ``lam == 0`` and ``compute_d_sm`` not set, D_SM is skipped and ``loss == −elbo`` exactly: the plain VAE.
    ``compute_d_sm=True`` computes D_SM (and, with gradients enabled, keeps it differentiable) even at λ = 0.
    """
    check_batch(model, x)
    if compute_d_sm is None:
        compute_d_sm = lam != 0
    elif lam != 0 and not compute_d_sm:
        raise ValueError(f"compute_d_sm=False is only possible with lam == 0 (got lam={lam})")
    q = model.encode(x)
    if (
        own := own_terms(q, model, x, objective="smvi", lam=lam, n_samples=n_samples, compute_d_sm=compute_d_sm)
    ) is not None:
        return own
    z = q.rsample((n_samples,))
    if compute_d_sm:
        log_lik, sq = log_lik_and_score_gap(model, q, x, z)
        d_sm = sq.mean(0)
    else:
        log_lik, d_sm = model.log_likelihood(x, z), None
    rec = log_lik.mean(0)
    kl = kl_to_prior(model, q, z)
    elbo_ = rec - kl
    loss = -elbo_ if lam == 0 or d_sm is None else -(elbo_ - lam * d_sm)
    return SMVITerms(loss=loss, elbo=elbo_, log_likelihood=rec, kl=kl, d_sm=d_sm)


DSM_GRADS = ("both", "encoder", "decoder")


def backward(model, terms: SMVITerms | BetaTerms | IWAETerms, *, lam: float = 0.0, dsm_grad: str = "both") -> None:
    """Accumulate the training gradient of the batch-mean loss into the parameters' ``.grad``, the D_SM penalty's
    part reaching only the side ``dsm_grad`` names. With θ the decoder's parameters (``model.decoder_parameters()``)
    and φ all the others (the encoder's, a flow's), L̄ = mean(−ELBO) and D̄ = mean(D_SM) over the batch:

    - "both" (the paper's SMVI): θ and φ get ∇(L̄ + λ·D̄) — exactly ``terms.loss.mean().backward()``;
    - "encoder": θ gets ∇_θ L̄ (the VAE's decoder gradient at the same draws), φ gets ∇_φ(L̄ + λ·D̄);
    - "decoder": θ gets ∇_θ(L̄ + λ·D̄), φ gets ∇_φ L̄ (the VAE's encoder gradient).

    Split, this is no longer the gradient of one objective: each side follows its own (θ the ELBO and φ the SMVI
    objective, or the reverse). Each part is a partial derivative at the current (θ, φ): ∇_φ D̄ runs through
    z = μ_φ + σ_φ⊙ε and q's score, ∇_θ D̄ through the decoder's input-gradient (second-order autograd, see
    :func:`log_lik_and_score_gap`). Two backward passes over one forward graph: L̄'s (the graph retained), then
    λ·D̄'s, accumulated only into the chosen side's parameters (``inputs=``). When ``terms`` has no D_SM (λ = 0, or
    another objective) there is no penalty and ``dsm_grad`` changes nothing.
    """
    if dsm_grad not in DSM_GRADS:
        raise ValueError(f"unknown dsm_grad {dsm_grad!r}: use one of {list(DSM_GRADS)}")
    d_sm = getattr(terms, "d_sm", None)
    if dsm_grad == "both" or d_sm is None or lam == 0:
        terms.loss.mean().backward()
        return
    theta = model.decoder_parameters()
    if dsm_grad == "encoder":
        decoder = {id(p) for p in theta}
        side = [p for p in model.parameters() if id(p) not in decoder and p.requires_grad]
    else:
        side = [p for p in theta if p.requires_grad]
    (-terms.elbo.mean()).backward(retain_graph=True)
    (lam * d_sm.mean()).backward(inputs=side)


@dataclass(frozen=True)
class BetaTerms:
    """Per-example terms of the β-VAE objective, each ``[N]``: ``loss = −(log_likelihood − β·kl)``; ``elbo`` is the
    unweighted ``log_likelihood − kl`` (the bound it no longer maximizes when β ≠ 1)."""

    loss: Tensor
    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor

    def means(self) -> dict[str, float]:
        """Batch means as Python floats, for logging."""
        return {k: float(getattr(self, k).detach().mean()) for k in ("loss", "elbo", "log_likelihood", "kl")}


def beta_vae_objective(model, x: Tensor, *, beta: float, n_samples: int = 1) -> BetaTerms:
    """The β-VAE objective E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z)) (Higgins et al. 2017), as named per-example terms.

    The same draws and KL as :func:`smvi_objective` (Monte Carlo reconstruction over ``n_samples``; analytic KL where
    available): β = 1 gives the VAE's loss bit for bit. Differentiable in θ and φ.
    """
    check_batch(model, x)
    q = model.encode(x)
    if (own := own_terms(q, model, x, objective="beta", beta=beta, n_samples=n_samples)) is not None:
        return own
    z = q.rsample((n_samples,))
    rec = model.log_likelihood(x, z).mean(0)
    kl = kl_to_prior(model, q, z)
    return BetaTerms(loss=-(rec - beta * kl), elbo=rec - kl, log_likelihood=rec, kl=kl)


@dataclass(frozen=True)
class IWAETerms:
    """Per-example terms of IWAE training, each ``[N]``: ``loss = −iwae``; ``iwae`` = L_k; ``elbo``,
    ``log_likelihood`` and ``kl`` are the single-sample ELBO and its parts averaged over the same k draws (an unbiased
    ELBO estimate, KL by Monte Carlo; k = 1: exactly the VAE's terms, analytic KL)."""

    loss: Tensor
    iwae: Tensor
    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor

    def means(self) -> dict[str, float]:
        """Batch means as Python floats, for logging."""
        return {k: float(getattr(self, k).detach().mean()) for k in ("loss", "iwae", "elbo", "log_likelihood", "kl")}


def iwae_objective(model, x: Tensor, *, k: int) -> IWAETerms:
    """Importance-weighted bound L_k(x) = log (1/k) Σᵢ p(x, zᵢ)/q(zᵢ|x), zᵢ ~ q(z|x) reparameterized (Burda et al.
    2016), as named per-example terms; training maximizes it (``loss = −L_k``).

    L_k is what :func:`~smvi.core.estimators.iwae_bound` computes (same log-weights; here in the model's dtype and
    differentiable in θ and φ through the reparameterized draws). E[L_1] ≤ E[L_k] ≤ log p(x). k = 1 is the VAE: the
    single-sample ELBO, computed exactly as :func:`smvi_objective` at λ = 0 (analytic KL where available, so the loss
    is bit-identical to the VAE's); for k ≥ 2 every term is a Monte Carlo average over the k draws.
    """
    check_batch(model, x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = model.encode(x)
    if (own := own_terms(q, model, x, objective="iwae")) is not None:  # refuses: smvi.core.rejection
        return own
    z = q.rsample((k,))
    log_lik = model.log_likelihood(x, z)
    if k == 1:
        rec, kl = log_lik.mean(0), kl_to_prior(model, q, z)
        return IWAETerms(loss=-(rec - kl), iwae=rec - kl, elbo=rec - kl, log_likelihood=rec, kl=kl)
    log_ratio = q.log_prob(z) - model.log_prior(z)  # [k, N]
    log_w = log_lik - log_ratio
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    return IWAETerms(loss=-bound, iwae=bound, elbo=log_w.mean(0), log_likelihood=log_lik.mean(0), kl=log_ratio.mean(0))


# ---- the objective registry -----------------------------------------------------------------------------------------
Terms = SMVITerms | BetaTerms | IWAETerms

OBJECTIVES: dict[str, Callable[..., Any]] = {}
"""Every training objective's function by ``train.objective`` name (the names of
:data:`smvi.settings.objectives.OBJECTIVES`, where its knob, settings and display name live)."""

_F = TypeVar("_F", bound=Callable[..., Any])


def register_objective(name: str) -> Callable[[_F], _F]:
    """Decorator: register ``fn(model, x, *, <its arguments by their train.* names>, n_samples)`` as the training
    objective ``name`` (an entry of :data:`smvi.settings.objectives.OBJECTIVES`; ``n_samples`` only if that entry
    reads it). ``fn`` returns named per-example terms with a ``loss`` ``[N]`` to minimize and ``means()``."""
    if name not in SPECS:
        raise ValueError(f"objective {name!r} has no entry in smvi.settings.objectives.OBJECTIVES: add one there")

    def register(fn: _F) -> _F:
        if OBJECTIVES.get(name, fn) is not fn:
            raise ValueError(f"objective {name!r} is registered twice")
        OBJECTIVES[name] = fn
        return fn

    return register


register_objective("smvi")(smvi_objective)
register_objective("beta")(beta_vae_objective)


@register_objective("iwae")
def _iwae_training(model, x: Tensor, *, iwae_k: int) -> IWAETerms:
    """:func:`iwae_objective` with k = ``train.iwae_k``."""
    return iwae_objective(model, x, k=iwae_k)


def training_objective(model, x: Tensor, *, objective: str = "smvi", n_samples: int = 1, **settings: Any) -> Terms:
    """The trainer's one dispatch: the terms of the registered ``objective`` ("smvi": ELBO − λ·D_SM, "beta": the
    β-VAE, "iwae": L_k) with its own settings, by their ``train.*`` names (``lam``, ``beta``, ``iwae_k``); every
    result has a per-example ``loss`` and ``means()``. A setting of another objective away from its unused value
    (λ ≠ 0 outside SMVI, β or k for another objective), the objective's required knob unset, or ``n_samples`` for an
    objective that draws its own samples, is refused."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: use one of {list(OBJECTIVES)}")
    spec = SPECS[objective]
    owners = {key: other for other in SPECS.values() for key in other.settings}
    for key, value in settings.items():
        if key not in owners:
            raise ValueError(f"{key} is not a setting of any objective (objective settings: {', '.join(owners)})")
        if owners[key] is not spec and value != owners[key].settings[key]:
            raise ValueError(f"{key}={value} is only used by the {owners[key].name!r} objective, not {objective!r}")
    if spec.settings[spec.knob] is None and settings.get(spec.knob) is None:
        raise ValueError(f"objective {objective!r} needs {spec.knob} (e.g. {spec.knob}={spec.example})")
    if not spec.n_samples and n_samples != 1:
        raise ValueError(f"n_samples={n_samples} is not used by {objective!r}, which draws {spec.knob} samples")
    args = {key: settings.get(key, spec.settings[key]) for key in spec.arguments}
    return OBJECTIVES[objective](model, x, **args, **({"n_samples": n_samples} if spec.n_samples else {}))
