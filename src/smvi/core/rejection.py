"""Variational rejection sampling: an unnormalized posterior family over any base family (Grover, Gummadi,
Lazaro-Gredilla, Schuurmans & Ermon, "Variational rejection sampling", AISTATS 2018).

With a base q(z|x) (the encoder's member of a normalized family: :mod:`smvi.core.posteriors`), the log ratio
ℓ(z) = log p(x, z) − log q(z|x) and a threshold T (per x), the posterior is

    q_T(z|x) = q(z|x)·a_T(z|x) / Z_T(x),     a_T = σ(ℓ(z) + T),     Z_T(x) = E_q[a_T] ∈ (0, 1].

Exact draws: propose z ~ q, accept with probability a_T (expected proposals per draw 1/Z_T; Z_T is the acceptance
rate). T → +∞ gives q_T = q; T → −∞ gives q_T → p(z|x) (a_T ≈ e^T p(x, z)/q). T is fixed (``threshold``) or chosen
per x (``acceptance``) as the T at which the Monte Carlo acceptance of ℓ at a set of proposals equals the target:
mean_m σ(ℓ_m + T) = γ (monotone in T: bisection). In training, that T is a function of the parameters through the
proposals' ℓ, and its gradient comes by implicit differentiation (:func:`implicit_threshold`), so the trainer ascends
one function, the estimated ELBO of q_{T(θ, φ)}, a lower bound at every step; a T held constant made it chase a moving
bound and diverge (issue 27). A fixed T has no gradient.

Formulas (``[N]`` per example; proposals z_m = reparameterized draws of q, ``[M, N, d]``; ℓ_m, a_m at z_m):

- **score** (closed form, no normalizer): ∇_z log q_T = ∇_z log q + ∇_z log a_T, with ∇_z log σ(u) = 1 − σ(u):
  ∇_z log q_T = ∇_z log q + (1 − a_T)·(∇_z log p(x, z) − ∇_z log q)   (:meth:`RejectionPosterior.score`).
- **D_SM(q_T, p)**: the score gap is ∇log q_T − ∇log p(x, z) = −a_T·g with g = ∇_z log p(x, z) − ∇_z log q, so
  D_SM(q_T, p(z|x)) = E_{q_T}[a_T² ‖g‖²] = E_q[a_T³ ‖g‖²] / Z_T. Estimated by self-normalized reweighting of the
  proposals, D̂ = Σ_m w_m a_m² ‖g_m‖² with w_m = a_m / Σ_k a_k. Bias: a ratio of two unbiased averages, O(1/M):
  E[D̂] − D_SM ≈ (D_SM·Var(â) − Cov(N̂, â)) / Z_T² (delta method; N̂ = mean a³‖g‖², â = mean a), sign not fixed;
  consistent as M → ∞. Its gradient is autograd's through z_m = μ + σ⊙ε (φ), through a_m and g_m (θ and φ, by
  second-order autograd as in :func:`~smvi.core.objectives.score_matching_divergence`): the gradient of this smooth
  function of reparameterized averages, consistent for ∇D_SM with the same O(1/M) bias. T → +∞: D̂ is the diagonal
  estimator on the same draws exactly; T → −∞: D̂ → 0.
- **ELBO(q_T)** = E_{q_T}[log p(x, z) − log q_T] = E_{q_T}[ℓ − log a_T] + log Z_T = E_{q_T}[softplus(ℓ + T)] − T +
  log Z_T, with the normalizer estimated as in VRS from the proposals, Ẑ_T = mean_m a_m, and the expectation
  self-normalized: ÊLBO = Σ_m w_m softplus(ℓ_m + T) − T + log Ẑ_T. Bias: E[log Ẑ_T] ≤ log Z_T (Jensen; ≈ −Var(a)/(2M
  Z_T²)) plus the O(1/M) self-normalization bias of the first term. T → +∞: the ELBO of q on the same draws; T → −∞:
  IWAE's L_M on the same draws (w ∝ p/q, ℓ − log a → −T). Reconstruction Σ_m w_m log p(x|z_m); KL(q_T ‖ p(z)) is
  the reconstruction minus the ELBO.

At evaluation (no parameter gradients) q_T is used through the generic paths: exact draws by rejection with
counter-based noise (:meth:`RejectionPosterior.sample_keyed`), and :meth:`RejectionPosterior.log_prob` = log q +
log a_T − log Ẑ_T with Ẑ_T from :data:`NORMALIZER_DRAWS` keyed proposals (the only estimated part: E log Ẑ ≤ log Z,
so ELBO, IWAE and AIS estimates that add log Ẑ_T stay stochastic lower bounds; log_prob's z-gradient is exact).
Draws that reach the proposal cap are the cap's last proposal (a draw of q, not of q_T): they are counted in
:attr:`RejectionPosterior.last_sampling` and announced with a warning, never silent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints

from smvi.core.estimators.hmc import Key, fold_in, normal, point_ids, reparameterize, stream_key, uniform
from smvi.core.families.base import PosteriorFamily, location, make_family, register_family

__all__ = [
    "RejectionFamily",
    "RejectionPosterior",
    "RejectionTerms",
    "SamplingStats",
    "threshold_for_acceptance",
    "implicit_threshold",
    "reweighted_terms",
    "rejection_objective",
    "NORMALIZER_DRAWS",
    "THRESHOLD_DRAWS",
]

NORMALIZER_DRAWS = 1024  # keyed proposals per x for log Ẑ_T at evaluation (log_prob)
THRESHOLD_DRAWS = 256  # keyed proposals per x that choose T for a target acceptance at evaluation
_THRESHOLD_STREAM, _NORMALIZER_STREAM, _SAMPLE_STREAM = 0x7A11, 0x2A7E, 0x5A3D
_CHUNK = 128


def log_sigmoid(u: Tensor) -> Tensor:
    """log σ(u) = min(u, 0) − log(1 + e^−|u|), exact and stable for any u (torch's ``logsigmoid`` is the same
    function, but orders of magnitude slower on some CPU builds)."""
    return torch.clamp(u, max=0) - torch.log1p(torch.exp(-u.abs()))


def threshold_for_acceptance(log_ratio: Tensor, target: float, iters: int = 60) -> Tensor:
    """T ``[N]`` with mean_m σ(ℓ_m + T) = ``target`` for ℓ ``[M, N]`` (float64 bisection, detached).

    The bracket is exact: at T = logit(γ) − max ℓ every σ(ℓ_m + T) ≤ γ, at T = logit(γ) − min ℓ every one ≥ γ."""
    ell = log_ratio.detach().double()
    logit = math.log(target / (1 - target))
    lo, hi = logit - ell.max(0).values, logit - ell.min(0).values
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = torch.sigmoid(ell + mid).mean(0) > target
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return ((lo + hi) / 2).to(log_ratio.dtype)


def implicit_threshold(log_ratio: Tensor, t: Tensor) -> Tensor:
    """T ``[N]`` (the value of ``t``, which solves mean_m σ(ℓ_m + T) = γ for ℓ = ``log_ratio`` ``[M, N]``) with the
    gradient of that solution T(ℓ), by the implicit function theorem: ∂T/∂ℓ_m = −a_m(1 − a_m) / Σ_k a_k(1 − a_k),
    a_m = σ(ℓ_m + T). Training through it maximizes one function of the parameters, the estimated ELBO of
    q_{T(θ, φ)} -- at every step a lower bound on log p(x) -- where a T held constant made each step ascend the bound
    of the previous T, and the trainer chased a moving bound: on MNIST, at a target acceptance of 0.5, log p(x|z)
    fell from −206 to −3800 nats within 60 Adam steps (issue 27); with this gradient it trains like the base family."""
    ell = log_ratio
    a = torch.sigmoid(ell.detach() + t.detach())
    c = a * (1 - a)
    c = c / c.sum(0).clamp_min(torch.finfo(c.dtype).tiny)
    return t.detach() - (c * (ell - ell.detach())).sum(0)


@dataclass(frozen=True)
class SamplingStats:
    """What exact sampling cost: ``proposals`` per draw (int64, the draws' shape) and ``capped`` (bool, same shape:
    the draw hit the cap and is the cap's last proposal, a draw of q rather than q_T)."""

    proposals: Tensor
    capped: Tensor
    cap: int

    @property
    def proposals_per_sample(self) -> float:
        return float(self.proposals.double().mean())

    @property
    def n_capped(self) -> int:
        return int(self.capped.sum())


class RejectionPosterior(Distribution):
    """q_T(z|x) ∝ q(z|x)·σ(log p(x, z) − log q(z|x) + T) (module docstring), batch ``[N]``, event ``[z_dim]``.

    ``base`` is q; ``model`` gives log p(x, z) = ``model.log_prior(z) + model.log_likelihood(x, z)`` for the batch ``x``
    ``[N, x_dim]`` (which also identifies the points for keyed noise). Exactly one of ``threshold`` (T) and
    ``acceptance`` (a target in (0, 1)) is given. No ``rsample`` (the
    accept step is not differentiable): training uses :func:`reweighted_terms`."""

    arg_constraints: dict = {}
    support = constraints.real_vector  # pyright: ignore[reportAssignmentType] -- torch's own subclasses override the property so
    has_rsample = False

    def __init__(
        self,
        base: Distribution,
        model,
        x: Tensor,
        *,
        threshold: float | None = None,
        acceptance: float | None = None,
        cap: int = 1000,
        proposals: int = 16,
    ):
        if (threshold is None) == (acceptance is None):
            raise ValueError("give exactly one of threshold (T) and acceptance (a target in (0, 1))")
        if acceptance is not None and not 0 < acceptance < 1:
            raise ValueError(f"acceptance must be in (0, 1), got {acceptance}")
        if cap < 1 or proposals < 1:
            raise ValueError(f"cap and proposals must be >= 1, got {cap}, {proposals}")
        self.base, self.model, self.x = base, model, x
        self.fixed_threshold, self.acceptance, self.cap, self.proposals = threshold, acceptance, cap, proposals
        self._threshold: Tensor | None = None
        self._log_normalizer: Tensor | None = None
        self.last_sampling: SamplingStats | None = None
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def log_joint(self, z: Tensor) -> Tensor:
        """log p(x, z) ``[..., N]`` for z ``[..., N, z_dim]``."""
        return self.model.log_prior(z) + self.model.log_likelihood(self.x, z)

    # ---- the density, up to Z_T -------------------------------------------------------------------------------------
    def log_ratio(self, z: Tensor) -> Tensor:
        """ℓ(z) = log p(x, z) − log q(z|x), ``[..., N]``."""
        return self.log_joint(z) - self.base.log_prob(z)

    def threshold_from(self, log_ratio: Tensor) -> Tensor:
        """T ``[N]``: the fixed T, or the one at which the acceptance of ``log_ratio`` ``[M, N]`` is the target."""
        if self.fixed_threshold is not None:
            return log_ratio.new_full(log_ratio.shape[-1:], self.fixed_threshold)
        assert self.acceptance is not None  # exactly one of the two is set (__init__)
        return threshold_for_acceptance(log_ratio, self.acceptance)

    @property
    def threshold(self) -> Tensor:
        """T ``[N]`` used by sampling and log_prob: fixed, or chosen from :data:`THRESHOLD_DRAWS` keyed proposals."""
        if self._threshold is None:
            if self.fixed_threshold is not None:
                self._threshold = self.x.new_full(self.batch_shape, self.fixed_threshold)
            else:
                with torch.no_grad():
                    ell = torch.cat(
                        [
                            self.log_ratio(self._keyed_proposals(_THRESHOLD_STREAM, a, b))
                            for a, b in _chunks(THRESHOLD_DRAWS)
                        ]
                    )
                self._threshold = self.threshold_from(ell).detach()
        return self._threshold

    def log_acceptance(self, z: Tensor) -> Tensor:
        """log a_T(z) = log σ(ℓ(z) + T), ``[..., N]``."""
        return log_sigmoid(self.log_ratio(z) + self.threshold)

    def unnormalized_log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) + log a_T(z|x) = log q_T(z|x) + log Z_T(x), ``[..., N]``: exact, differentiable in z."""
        return self.base.log_prob(z) + self.log_acceptance(z)

    def score(self, z: Tensor) -> Tensor:
        """∇_z log q_T = ∇_z log q + (1 − a_T)(∇_z log p(x, z) − ∇_z log q), ``[..., N, z_dim]`` (closed form from
        the two scores; no normalizer). Not differentiable further (evaluation)."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_q, log_p = self.base.log_prob(z), self.log_joint(z)
            g_q, g_p = torch.autograd.grad(log_q.sum(), z, retain_graph=True)[0], torch.autograd.grad(log_p.sum(), z)[0]
        a = torch.sigmoid(log_p - log_q + self.threshold).detach()
        return g_q + (1 - a).unsqueeze(-1) * (g_p - g_q)

    # ---- the normalizer, estimated ----------------------------------------------------------------------------------
    @property
    def log_normalizer(self) -> Tensor:
        """log Ẑ_T ``[N]`` = log mean_m a_T(z_m) over :data:`NORMALIZER_DRAWS` keyed proposals z_m ~ q; Ẑ_T is
        unbiased for Z_T (the acceptance rate), log Ẑ_T biased low by ≈ Var(a)/(2·n·Z_T²) (Jensen)."""
        if self._log_normalizer is None:
            with torch.no_grad():
                parts = [
                    self.log_acceptance(self._keyed_proposals(_NORMALIZER_STREAM, a, b))
                    for a, b in _chunks(NORMALIZER_DRAWS)
                ]
                self._log_normalizer = (torch.logsumexp(torch.cat(parts).double(), 0) - math.log(NORMALIZER_DRAWS)).to(
                    self.x.dtype
                )
        return self._log_normalizer

    def log_prob(self, z: Tensor) -> Tensor:
        """log q_T(z|x) ≈ log q + log a_T − log Ẑ_T ``[..., N]``: exact up to the per-x constant error of log Ẑ_T
        (:attr:`log_normalizer`); its z-gradient (the score) is exact."""
        return self.unnormalized_log_prob(z) - self.log_normalizer

    @property
    def location(self) -> Tensor:
        """The base's location ``[N, z_dim]`` (E_{q_T}[z] has no closed form): the encoder feature of SSL."""
        return location(self.base)

    def objective_terms(
        self,
        model,
        x: Tensor,
        *,
        objective: str,
        lam: float = 0.0,
        beta: float | None = None,
        n_samples: int = 1,
        compute_d_sm: bool | None = None,
    ) -> RejectionTerms:
        """The objectives of :mod:`smvi.core.objectives` on q_T: :func:`rejection_objective` from
        ``n_samples × proposals`` proposals per example."""
        return rejection_objective(
            model,
            x,
            self,
            objective=objective,
            lam=lam,
            beta=beta,
            compute_d_sm=compute_d_sm,
            n_proposals=self.proposals * n_samples,
        )

    def elbo_at(self, model, x: Tensor, eps: Tensor) -> Tensor:
        """ÊLBO(q_T) ``[N]`` reweighted from the proposals the base makes of standard normal ``eps`` ``[M, N, d]``
        (fixed draws: common random numbers for :mod:`smvi.stages.gaps`' convergence check)."""
        return reweighted_terms(model, self, x, reparameterize(self.base, eps), d_sm=False)["elbo"]

    # ---- exact sampling ---------------------------------------------------------------------------------------------
    def _keyed_proposals(self, stream: int, first: int, last: int) -> Tensor:
        rows = torch.arange(first, last, device=self.x.device)
        eps = normal(fold_in(stream_key(0, point_ids(self.x), rows), stream), self.event_shape[0], self.x.dtype)
        return reparameterize(self.base, eps)

    def _reject(self, propose: Callable[[int], tuple[Tensor, Tensor]]) -> Tensor:
        """Rejection loop: ``propose(j)`` gives proposal j's z ``[*S, N, d]`` and log-uniform ``[*S, N]``, for every
        stream; the decoder (log p(x|z)) runs only on the streams still waiting, so the cost is the proposals made."""
        t = self.threshold
        z = accepted = proposals = None
        for j in range(self.cap):
            z_j, log_u = propose(j)
            if z is None:
                z = z_j.clone()
                accepted = torch.zeros(z_j.shape[:-1], dtype=torch.bool, device=z_j.device)
                proposals = torch.zeros(z_j.shape[:-1], dtype=torch.int64, device=z_j.device)
                points = torch.arange(z_j.shape[-2], device=z_j.device).expand(z_j.shape[:-1])
            assert accepted is not None and proposals is not None and points is not None
            wait = ~accepted
            zw = z_j[wait]  # [P, d]: the waiting streams, each with its own point
            n = points[wait]
            with torch.no_grad():
                ell = (
                    self.model.log_prior(zw) + self.model.log_likelihood(self.x[n], zw) - self.base.log_prob(z_j)[wait]
                )
                take = log_u[wait] < log_sigmoid(ell + t[n])
            z[wait] = zw  # a capped stream keeps its last proposal
            proposals[wait] += 1
            accepted[wait] = take
            if bool(accepted.all()):
                break
        assert z is not None and accepted is not None and proposals is not None  # the loop ran at least once
        capped = ~accepted
        self.last_sampling = SamplingStats(proposals, capped, self.cap)
        if bool(capped.any()):
            warnings.warn(
                f"rejection sampling: {int(capped.sum())} of {capped.numel()} draws hit the cap of "
                f"{self.cap} proposals and are draws of the base q, not q_T (acceptance too low for T): "
                "raise model.rejection_cap or T",
                RuntimeWarning,
                stacklevel=3,
            )
        return z.detach()

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Exact draws of q_T ``[*sample_shape, N, z_dim]`` from the global RNG (proposals from q, accept w.p. a_T);
        the cost is in :attr:`last_sampling`."""
        shape = torch.Size(sample_shape)

        def propose(j):
            z_j = self.base.sample(shape)
            return z_j, torch.rand(z_j.shape[:-1], dtype=torch.float64, device=z_j.device).log().to(z_j.dtype)

        return self._reject(propose)

    @torch.no_grad()
    def sample_keyed(self, key: Key) -> Tensor:
        """Exact draws ``[*key's batch, z_dim]`` (batch ``[R, N]``) from counter-based noise: draw r of a point is a
        function of the key's stream only (:mod:`smvi.core.estimators.hmc`). Cost in :attr:`last_sampling`."""
        key = fold_in(key, _SAMPLE_STREAM)

        def propose(j):
            eps = normal(fold_in(key, 2 * j), self.event_shape[0], self.x.dtype)
            return reparameterize(self.base, eps), uniform(fold_in(key, 2 * j + 1)).log().to(self.x.dtype)

        return self._reject(propose)


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(a, min(a + _CHUNK, n)) for a in range(0, n, _CHUNK)]


@register_family("rejection")
class RejectionFamily(PosteriorFamily):
    """The rejection-sampling family over ``base`` (its parameters are the base's: ``n_params = base.n_params``).

    ``distribution(params)`` is the base q (the proposal: local fits in :mod:`smvi.stages.gaps` move its parameters);
    :meth:`bind` turns it into q_T for a model and a batch x, which ``model.encode(x)`` returns."""

    kind = "rejection"

    def __init__(
        self,
        base: PosteriorFamily,
        *,
        threshold: float | None = None,
        acceptance: float | None = None,
        proposals: int = 16,
        cap: int = 1000,
    ):
        super().__init__()
        if threshold is None and acceptance is None:
            acceptance = 0.5
        if threshold is not None and acceptance is not None:
            raise ValueError("give one of threshold (T) and acceptance (a target in (0, 1)), not both")
        self.base = base
        self.z_dim, self.n_params = base.z_dim, base.n_params
        self.threshold, self.acceptance, self.proposals, self.cap = threshold, acceptance, proposals, cap

    @classmethod
    def from_settings(
        cls,
        z_dim: int,
        *,
        rejection_base: str,
        rejection_threshold: float | None,
        rejection_acceptance: float | None,
        rejection_proposals: int,
        rejection_cap: int,
    ) -> RejectionFamily:
        """From ``model.rejection_*`` (target acceptance 0.5 when neither T nor an acceptance is set)."""
        return cls(
            make_family(rejection_base, z_dim),
            threshold=rejection_threshold,
            acceptance=rejection_acceptance,
            proposals=rejection_proposals,
            cap=rejection_cap,
        )

    def distribution(self, params: Tensor) -> Distribution:
        return self.base.distribution(params)

    def local_init(self, params: Tensor) -> list[Tensor]:
        return self.base.local_init(params)

    def local_distribution(self, local: list[Tensor]) -> Distribution:
        return self.base.local_distribution(local)

    def bind(self, q: Distribution, model, x: Tensor) -> RejectionPosterior:
        return RejectionPosterior(
            q, model, x, threshold=self.threshold, acceptance=self.acceptance, cap=self.cap, proposals=self.proposals
        )


# ---- training: self-normalized reweighting of reparameterized proposals ---------------------------------------------
@dataclass(frozen=True)
class RejectionTerms:
    """Per-example terms ``[N]`` of an objective on q_T: ``loss`` (minimized), ``elbo`` (ÊLBO(q_T)),
    ``log_likelihood`` (Σ w log p(x|z)), ``kl`` (log_likelihood − elbo), ``d_sm`` (D̂_SM(q_T, p) or None), and the
    diagnostics ``acceptance`` (Ẑ_T, the acceptance rate; 1/Ẑ_T proposals per exact draw) and ``threshold`` (T)."""

    loss: Tensor
    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor
    d_sm: Tensor | None
    acceptance: Tensor
    threshold: Tensor

    def means(self) -> dict[str, float]:
        """Batch means as Python floats, for logging (``proposals_per_sample`` is the mean of 1/Ẑ_T)."""
        out = {k: getattr(self, k) for k in ("loss", "elbo", "log_likelihood", "kl", "acceptance", "threshold")}
        if self.d_sm is not None:
            out["d_sm"] = self.d_sm
        out["proposals_per_sample"] = 1 / self.acceptance
        return {k: float(v.detach().float().mean()) for k, v in out.items()}


def reweighted_terms(model, q: RejectionPosterior, x: Tensor, z: Tensor, *, d_sm: bool) -> dict[str, Tensor]:
    """The module docstring's self-normalized estimators from proposals z ``[M, N, z_dim]`` of q (reparameterized
    for training, or any fixed draws): ``elbo``, ``log_likelihood``, ``kl``, ``d_sm`` (when asked), ``acceptance``
    (Ẑ_T) and ``threshold``, each ``[N]``. Differentiable in every parameter z, q and the model depend on; a T
    chosen for a target acceptance carries its implicit gradient in training (:func:`implicit_threshold`), a fixed
    T none. The weighting is done in at least float32 (under bf16 autocast too)."""
    train = torch.is_grad_enabled() and z.requires_grad
    with torch.enable_grad():
        if not train:
            z = z.detach().requires_grad_(True)
        log_lik = model.log_likelihood(x, z)
        ell = model.log_prior(z) + log_lik - q.base.log_prob(z)
        g = torch.autograd.grad(ell.sum(), z, create_graph=train)[0] if d_sm else None
    if not train:
        log_lik, ell, g = log_lik.detach(), ell.detach(), (g.detach() if g is not None else None)
    dtype = torch.promote_types(ell.dtype, torch.float32)
    ell, log_lik = ell.to(dtype), log_lik.to(dtype)
    t = q.threshold_from(ell)
    if train and q.fixed_threshold is None:
        t = implicit_threshold(ell, t)
    logit = ell + t
    log_a = log_sigmoid(logit)
    w = torch.softmax(log_a, 0)
    log_z = torch.logsumexp(log_a, 0) - math.log(z.shape[0])
    elbo = (w * F.softplus(logit)).sum(0) - t + log_z
    rec = (w * log_lik).sum(0)
    out = {
        "elbo": elbo,
        "log_likelihood": rec,
        "kl": rec - elbo,
        "acceptance": log_z.detach().exp(),
        "threshold": t.detach(),
    }
    if g is not None:
        out["d_sm"] = (w * torch.exp(2 * log_a) * g.to(dtype).pow(2).sum(-1)).sum(0)
    return out


def rejection_objective(
    model,
    x: Tensor,
    q: RejectionPosterior,
    *,
    objective: str = "smvi",
    lam: float = 0.0,
    beta: float | None = None,
    compute_d_sm: bool | None = None,
    n_proposals: int | None = None,
) -> RejectionTerms:
    """The training terms on q_T from ``n_proposals`` (default ``q.proposals``) reparameterized proposals per example:

    - ``"smvi"``: loss = −(ÊLBO(q_T) − λ·D̂_SM(q_T, p)); D̂ skipped at λ = 0 unless ``compute_d_sm``.
    - ``"beta"``: loss = −(Σ w log p(x|z) − β·K̂L(q_T ‖ p(z))), K̂L = reconstruction − ÊLBO.
    - ``"iwae"`` is refused: L_k needs k exact, reparameterized draws of q_T and log q_T itself, and rejection
      sampling has neither (its accept step has no reparameterization; Z_T is only estimated). As T → −∞ the
      ÊLBO above is already IWAE's L_M of the base q on the same M proposals.
    """
    if objective == "iwae":
        raise ValueError(
            "objective 'iwae' cannot train posterior='rejection' (IWAE needs reparameterized exact draws "
            "of q_T and log q_T; rejection sampling has neither): use 'smvi' or 'beta' — as T → −∞ the "
            "rejection ELBO is IWAE's bound of the base q with model.rejection_proposals samples"
        )
    if compute_d_sm is None:
        compute_d_sm = objective == "smvi" and lam != 0
    z = q.base.rsample((n_proposals or q.proposals,))
    t = reweighted_terms(model, q, x, z, d_sm=compute_d_sm)
    if objective == "smvi":
        loss = -t["elbo"] if lam == 0 else -(t["elbo"] - lam * t["d_sm"])
    elif objective == "beta":
        assert beta is not None  # TrainConfig requires train.beta with objective="beta"
        loss = -(t["log_likelihood"] - beta * t["kl"])
    else:
        raise ValueError(f"unknown objective {objective!r}: use 'smvi' or 'beta' with posterior='rejection'")
    return RejectionTerms(
        loss=loss,
        elbo=t["elbo"],
        log_likelihood=t["log_likelihood"],
        kl=t["kl"],
        d_sm=t.get("d_sm"),
        acceptance=t["acceptance"],
        threshold=t["threshold"],
    )
