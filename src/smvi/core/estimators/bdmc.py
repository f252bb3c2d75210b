"""Checks on AIS itself: bidirectional Monte Carlo (BDMC) on simulated data, and a ladder of AIS lengths.

References: Grosse, Ghahramani & Adams, "Sandwiching the marginal likelihood using bidirectional Monte Carlo" (2015);
Wu, Burda, Salakhutdinov & Grosse (2017), who use BDMC on data simulated from the model to bound the error of AIS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent

from smvi.core.estimators.ais import AISResult, ais, prior_of
from smvi.core.estimators.hmc import reparameterize
from smvi.core.estimators.precision import Precision

__all__ = ["simulate", "bdmc", "BDMCResult", "ais_ladder", "LadderResult"]


def _sample(dist: Distribution, g: torch.Generator) -> Tensor:
    """A draw from a Bernoulli or Gaussian ``dist`` using the local generator ``g``."""
    base = dist.base_dist if isinstance(dist, Independent) else dist
    if isinstance(base, Bernoulli):
        u = torch.rand(base.probs.shape, generator=g, dtype=base.probs.dtype, device=base.probs.device)
        return (u < base.probs).to(base.probs.dtype)
    loc = dist.mean
    return reparameterize(dist, torch.randn(loc.shape, generator=g, dtype=loc.dtype, device=loc.device))


@torch.no_grad()
def simulate(model, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Draw (x, z) from the model: z ~ p(z), x ~ p(x|z) via ``model.decode``; x ``[n, x_dim]``, z ``[n, z_dim]``.

    Each z is an exact sample of the posterior p(z|x) of its x, which is what reverse AIS needs (Grosse et al. 2015).
    Needs a Gaussian prior and a Bernoulli or Gaussian decoder. Uses a local generator seeded with ``seed``.
    """
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    g = torch.Generator(device=device).manual_seed(seed)
    eps = torch.randn(n, model.z_dim, generator=g, dtype=dtype, device=device)
    z = reparameterize(prior_of(model, dtype, device), eps)
    return _sample(model.decode(z), g), z


@dataclass(frozen=True)
class BDMCResult:
    """A sandwich of log p(x): ``lower`` ``[N]`` from forward AIS (stochastic lower bound), ``upper`` ``[N]`` from
    reverse AIS started at the true latents (stochastic upper bound), both float64; the full runs are kept."""

    forward: AISResult
    reverse: AISResult

    @property
    def lower(self) -> Tensor:
        return self.forward.log_px

    @property
    def upper(self) -> Tensor:
        return self.reverse.log_px

    @property
    def gap(self) -> Tensor:
        """upper − lower per point ``[N]``: bounds the error of either estimate on these data (up to noise)."""
        return self.upper - self.lower

    @property
    def lower_mean(self) -> float:
        return float(self.lower.mean())

    @property
    def upper_mean(self) -> float:
        return float(self.upper.mean())

    @property
    def gap_mean(self) -> float:
        return self.upper_mean - self.lower_mean


def bdmc(
    model,
    x: Tensor,
    z_true: Tensor,
    *,
    steps: int,
    chains: int = 16,
    precision: Precision = "fp32",
    **ais_options: Any,
) -> BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al. 2015) on simulated pairs (x ``[N, x_dim]``, z_true ``[N, z_dim]``).

    Forward AIS from f₀ to p(x, z) gives log p̂ with E[log p̂] ≤ log p(x); reverse AIS from z_true ~ p(z|x) back to
    f₀ gives −log mean w_rev with E ≥ log p(x) (both stochastic bounds, Jensen). The gap upper − lower shrinks to 0
    as ``steps`` grows; on simulated data it bounds how far AIS of that length is from log p(x) (Wu et al. 2017).
    ``ais_options`` go to both :func:`~smvi.core.estimators.ais.ais` runs (same seed; their noise streams differ).
    ``precision="bf16"`` runs both with the leapfrog force in bf16 and exact energies and weights, so both bounds stay
    valid (:func:`~smvi.core.estimators.ais.ais`; Neal 2011).
    """
    forward = ais(model, x, steps=steps, chains=chains, precision=precision, **ais_options)
    reverse = ais(model, x, steps=steps, chains=chains, reverse_from=z_true, precision=precision, **ais_options)
    return BDMCResult(forward=forward, reverse=reverse)


@dataclass(frozen=True)
class LadderResult:
    """AIS at increasing lengths. Per rung: ``means`` (mean log p̂ over points), ``sems`` (its standard error across
    points), ``results``. Per successive pair: ``diffs`` (mean change), ``diff_sems`` (paired standard error) and
    ``agree`` (|change| ≤ ``tol``)."""

    steps: tuple[int, ...]
    means: tuple[float, ...]
    sems: tuple[float, ...]
    diffs: tuple[float, ...]
    diff_sems: tuple[float, ...]
    agree: tuple[bool, ...]
    tol: float
    results: tuple[AISResult, ...]

    @property
    def converged(self) -> bool:
        """Whether the last two rungs agree within ``tol``."""
        return bool(self.agree) and self.agree[-1]

    def table(self) -> str:
        """One line per rung: steps, mean ± standard error, change from the previous rung, seconds."""
        lines = []
        for i, (s, m, e, r) in enumerate(zip(self.steps, self.means, self.sems, self.results, strict=True)):
            change = f"{self.diffs[i - 1]:+.3f} ± {self.diff_sems[i - 1]:.3f}" if i else ""
            lines.append(f"{s:>7d}  {m:10.3f} ± {e:.3f}  {change:>18s}  {r.seconds:8.1f}s")
        return "\n".join(lines)


def _paired(a: AISResult, b: AISResult) -> tuple[float, float]:
    d = b.log_px - a.log_px
    return float(d.mean()), float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else 0.0


def ais_ladder(
    model,
    x: Tensor,
    *,
    steps: Sequence[int] = (100, 300, 1000, 3000, 10000),
    chains: int = 16,
    tol: float = 0.1,
    stop_early: bool = False,
    precision: Precision = "fp32",
    **ais_options: Any,
) -> LadderResult:
    """Run AIS at each length in ``steps`` (increasing) on the same points and seed: the paper's convergence check.

    AIS is a stochastic lower bound rising toward log p(x) with more steps; when successive estimates of the mean
    log p(x) agree within ``tol`` nats, the longer one is taken as converged. ``stop_early`` stops at the first
    agreement. ``precision`` goes to every rung (:func:`~smvi.core.estimators.ais.ais`: a bf16 force, exact energies).
    Reference: Neal (2001); Wu et al. (2017).
    """
    if list(steps) != sorted(steps) or len(steps) < 1:
        raise ValueError(f"steps must be a non-empty increasing sequence, got {list(steps)}")
    results: list[AISResult] = []
    diffs: list[tuple[float, float]] = []
    for s in steps:
        results.append(ais(model, x, steps=s, chains=chains, precision=precision, **ais_options))
        if len(results) > 1:
            diffs.append(_paired(results[-2], results[-1]))
            if stop_early and abs(diffs[-1][0]) <= tol:
                break
    return LadderResult(
        steps=tuple(steps[: len(results)]),
        means=tuple(r.mean for r in results),
        sems=tuple(r.sem for r in results),
        diffs=tuple(d for d, _ in diffs),
        diff_sems=tuple(e for _, e in diffs),
        agree=tuple(abs(d) <= tol for d, _ in diffs),
        tol=tol,
        results=tuple(results),
    )
