"""ELBO and D_SM per data point with counter-based noise, for evaluation.

The same estimators as :func:`smvi.core.objectives.elbo` and :func:`smvi.core.objectives.score_matching_divergence`
(unbiased Monte Carlo over z ~ q(z|x)), but sample i of a point is drawn from a stream keyed by (``seed``, the point's
values, i) -- the mechanism of :mod:`smvi.core.estimators.hmc`, used by AIS and IWAE -- so a point's estimate does not
depend on its batch-mates, the batch size or the chunking, and the global RNG is never touched. No gradients with
respect to the parameters (D_SM still takes its z-gradients). Both return float64 ``[N]``. A rejection posterior
(:mod:`smvi.core.rejection`) is drawn exactly (its own keyed sampler) and its KL is the Monte Carlo one with its
estimated log Ẑ_T (the ELBO stays a stochastic lower bound); its D_SM is unbiased (the score needs no normalizer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smvi.core.estimators.ais import model_dtype
from smvi.core.estimators.hmc import draw, fold_in, point_ids, stream_key
from smvi.core.objectives import kl_to_prior, log_lik_and_score_gap

__all__ = ["elbo_per_point", "d_sm_per_point"]

_ELBO_STREAM, _DSM_STREAM = 0xE1B0, 0xD5A1  # separate these draws from AIS's and IWAE's at the same seed


def _draws(model, x: Tensor, q, seed: int, stream: int, first: int, last: int) -> Tensor:
    rows = torch.arange(first, last, device=x.device)
    return draw(q, fold_in(stream_key(seed, point_ids(x), rows), stream), model.z_dim, x.dtype)  # [last-first, N, d]


def _average(model, x: Tensor, n_samples: int, chunk: int, term, q=None) -> Tensor:
    if x.dim() != 2 or n_samples < 1 or chunk < 1:
        raise ValueError(
            f"need x [N, x_dim], n_samples >= 1 and chunk >= 1; got {tuple(x.shape)}, {n_samples}, {chunk}"
        )
    x = x.to(model_dtype(model, x))
    q = model.encode(x) if q is None else q
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for first in range(0, n_samples, chunk):
        last = min(first + chunk, n_samples)
        total += term(q, x, first, last).double().sum(0)
    return total / n_samples


@torch.no_grad()
def elbo_per_point(model, x: Tensor, *, n_samples: int, seed: int, chunk: int = 100, q=None) -> Tensor:
    """ELBO(x) = E_q[log p(x|z)] − KL(q ‖ p(z)) per point (KL analytic when the model exposes ``prior``), of
    ``model.encode(x)`` or of the given ``q`` (batch ``[N]``)."""

    def term(q, x, first, last):
        z = _draws(model, x, q, seed, _ELBO_STREAM, first, last)
        return model.log_likelihood(x, z) - kl_to_prior(model, q, z).unsqueeze(0)

    return _average(model, x, n_samples, chunk, term, q)


@torch.no_grad()
def d_sm_per_point(model, x: Tensor, *, n_samples: int, seed: int, chunk: int = 20) -> Tensor:
    """D_SM(q(z|x), p(z|x)) = E_q ‖∇_z log q(z|x) − ∇_z log p(x, z)‖² per point (no ½ factor)."""

    def term(q, x, first, last):
        z = _draws(model, x, q, seed, _DSM_STREAM, first, last)
        return log_lik_and_score_gap(model, q, x, z)[1]

    return _average(model, x, n_samples, chunk, term)
