"""The importance-weighted bound (IWAE) on log p(x), streamed over chunks of samples so that k can be large.

Reference: Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders" (ICLR 2016).
"""

from __future__ import annotations

import math
import secrets

import torch
from torch import Tensor

from smvi.core.estimators.ais import model_dtype
from smvi.core.estimators.hmc import draw, fold_in, point_ids, stream_key
from smvi.core.estimators.precision import (
    Precision,
    check_precision,
    exact_matmul,
    force_autocast,
    resolve_precision,
)

__all__ = ["iwae_bound"]

_IWAE_STREAM = 0x1BAE  # separates IWAE's noise from AIS's at the same seed
CHUNK_ROWS = 1024
"""Decoder rows (samples × points) per chunk when ``chunk_size`` is not given: a hidden layer's activations stay near
the core's cache (4 MB in fp32 at width 1024) whatever the batch, where 64 samples × 100 points made 26 MB. On a
loaded machine the measured difference was within its noise (benchmarks/README.md, evaluation.py): the bound is what
this fixes, not a measured speed-up."""


def _log_likelihood(model, x: Tensor, z: Tensor, precision: str) -> Tensor:
    """log p(x|z): in fp32 the model's own ``log_likelihood``; in bf16 its explicit pass when it has one (bf16
    products, the likelihood and its sum in fp32), else ``log_likelihood`` under bf16 autocast."""
    explicit = getattr(model, "log_likelihood_and_grad", None)
    if precision != "fp32" and explicit is not None:
        return explicit(x, z, precision=precision, grad=False)[0]
    with force_autocast(precision, x.device):
        return model.log_likelihood(x, z)


@torch.no_grad()
def iwae_bound(
    model,
    x: Tensor,
    *,
    k: int,
    chunk_size: int | None = None,
    seed: int | None = None,
    precision: Precision = "fp32",
) -> Tensor:
    """L_k(x) = log (1/k) Σᵢ p(x, zᵢ) / q(zᵢ|x), zᵢ ~ q(z|x) i.i.d.: x ``[N, x_dim]`` -> float64 ``[N]``.

    E[L_k] ≤ E[L_k'] ≤ log p(x) for k ≤ k' (a stochastic lower bound, tight as k → ∞); L_1 is the single-sample ELBO
    (Burda et al. 2016). Samples are drawn ``chunk_size`` at a time (default: :data:`CHUNK_ROWS` decoder rows, i.e.
    ⌈1024 / N⌉ samples) and combined by a running float64 log-sum-exp, so memory is O(chunk_size · N · decoder width)
    whatever k. Sample i of a point is a function of (``seed``, the
    point's values, i) only: the result does not depend on ``chunk_size`` or on the other points in ``x``, and L_k and
    L_k' share their first k samples. ``seed=None`` draws a fresh seed. Needs a Gaussian q (diagonal or full
    covariance, or a flow over a Gaussian), or a rejection posterior (:mod:`smvi.core.rejection`: exact draws, and
    log q_T with an estimated log Ẑ_T, so L_k stays a stochastic lower bound). No gradients.

    ``precision="bf16"`` runs the decoder's pass in bf16: the model's explicit ``log_likelihood_and_grad`` when it has
    one (:mod:`smvi.core.explicit`: bf16 products, the likelihood and its sum in fp32), else ``log_likelihood`` under
    bf16 autocast; the encoder, the samples,
    log p(z) and log q(z|x) stay in the model's dtype and every log-weight is summed and combined in fp64. Unlike AIS's
    force this changes the value itself: each log p(x|z) is the bf16 network's. Its error is measured against fp32
    on the same samples (tests/test_estimators_precision.py; benchmarks/run.py, section ``precision``).
    """
    if chunk_size is None and x.dim() == 2:
        chunk_size = max(1, -(-CHUNK_ROWS // max(x.shape[0], 1)))
    if x.dim() != 2 or k < 1 or chunk_size is None or chunk_size < 1:
        raise ValueError(f"need x [N, x_dim], k >= 1 and chunk_size >= 1; got {tuple(x.shape)}, {k}, {chunk_size}")
    seed = secrets.randbits(63) if seed is None else seed
    dtype = model_dtype(model, x)
    precision = resolve_precision(precision, x.device)
    check_precision(precision, x.device, dtype)
    x = x.to(dtype)
    with force_autocast("fp32", x.device), exact_matmul():  # only the decoder's pass below follows `precision`
        q = model.encode(x)
        ids = point_ids(x)
        total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for first in range(0, k, chunk_size):
            rows = torch.arange(first, min(first + chunk_size, k), device=x.device)
            z = draw(q, fold_in(stream_key(seed, ids, rows), _IWAE_STREAM), model.z_dim, x.dtype)  # [c, N, z_dim]
            log_lik = _log_likelihood(model, x, z, precision)
            log_w = model.log_prior(z).double() + log_lik.double() - q.log_prob(z).double()
            total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
    return total - math.log(k)
