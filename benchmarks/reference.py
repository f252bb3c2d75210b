"""Plain reference implementations that the benchmark measures smvi against.

They are written the obvious way, as a first implementation from the paper would be: the score-matching term with
two ``torch.autograd.grad(..., create_graph=True)`` calls, and AIS as a loop over data points with the chains of one
point batched and an HMC transition whose gradients come from ``autograd.grad``. No tuning. They compute the same
quantities as smvi (same objective, same AIS path, schedule, transition and step-size rule) so that results can be
compared, not only speed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Normal

__all__ = ["reference_loss", "reference_ais"]


def reference_loss(model, x: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """(mean loss, per-example ELBO) of ELBO − λ·D_SM for a Bernoulli-decoder VAE, one z sample per example."""
    mu, log_std = model.encoder(x).chunk(2, dim=-1)
    std = log_std.exp()
    z = mu + std * torch.randn_like(mu)
    log_px_z = -F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(-1)
    kl = 0.5 * (mu.pow(2) + std.pow(2) - 1 - 2 * log_std).sum(-1)
    elbo = log_px_z - kl
    if lam == 0:
        return -elbo.mean(), elbo
    log_q = Normal(mu, std).log_prob(z).sum(-1)
    log_joint = Normal(0.0, 1.0).log_prob(z).sum(-1) + log_px_z
    (score_q,) = torch.autograd.grad(log_q.sum(), z, create_graph=True)
    (score_p,) = torch.autograd.grad(log_joint.sum(), z, create_graph=True)
    d_sm = (score_q - score_p).pow(2).sum(-1)
    return -(elbo - lam * d_sm).mean(), elbo


def _sigmoid_schedule(steps: int, delta: float = 4.0) -> list[float]:
    s = torch.sigmoid(delta * torch.linspace(-1.0, 1.0, steps + 1, dtype=torch.float64))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


def reference_ais(
    model,
    x: Tensor,
    *,
    steps: int,
    chains: int,
    leapfrog_steps: int = 10,
    init_step_size: float = 0.05,
    target_accept: float = 0.65,
    pilot_chains: int = 2,
    seed: int = 0,
) -> Tensor:
    """AIS from the prior to p(z|x) with HMC, one data point at a time, chains batched: log p̂(x) ``[N]`` float64.

    The same path (p(z)·p(x|z)^β), sigmoid schedule, HMC transition and step-size rule as
    :func:`smvi.core.estimators.ais` with ``start="prior"``: one step size per point, ×1.02 / ×0.98 toward
    ``target_accept`` on a 0.9-decayed average of the acceptance of ``pilot_chains`` extra chains whose weights are
    discarded. Noise from a seeded ``torch.Generator``.
    """
    gen = torch.Generator().manual_seed(seed)
    betas = _sigmoid_schedule(steps)
    rows = chains + pilot_chains
    out = []
    for xi in x:
        xi = xi.unsqueeze(0).expand(rows, -1)

        def log_lik(z, xi=xi):
            return -F.binary_cross_entropy_with_logits(model.decoder(z), xi, reduction="none").sum(-1)

        def energy_and_grad(z, beta):
            z = z.detach().requires_grad_(True)
            u = 0.5 * z.pow(2).sum(-1) - beta * log_lik(z)
            (g,) = torch.autograd.grad(u.sum(), z)
            return u.detach(), g

        z = torch.randn(rows, model.z_dim, generator=gen)
        log_w = torch.zeros(chains, dtype=torch.float64)
        step, avg = init_step_size, target_accept
        for t in range(1, steps + 1):
            with torch.no_grad():
                log_w += (betas[t] - betas[t - 1]) * log_lik(z)[:chains].double()
            if t == steps:
                break
            u0, g = energy_and_grad(z, betas[t])
            p0 = torch.randn(z.shape, generator=gen)
            p = p0 - 0.5 * step * g
            zn = z
            for i in range(leapfrog_steps):
                zn = zn + step * p
                u1, g = energy_and_grad(zn, betas[t])
                p = p - (step if i < leapfrog_steps - 1 else 0.5 * step) * g
            log_acc = (u0 + 0.5 * p0.pow(2).sum(-1) - u1 - 0.5 * p.pow(2).sum(-1)).clamp(max=0.0)
            log_acc = torch.nan_to_num(log_acc, nan=-math.inf)
            accept = torch.rand(rows, generator=gen).log() < log_acc
            z = torch.where(accept.unsqueeze(-1), zn, z)
            if pilot_chains:
                avg = 0.9 * avg + 0.1 * float(log_acc[chains:].exp().mean())
                step = min(max(step * (1.02 if avg > target_accept else 0.98), 1e-5), 1.0)
        out.append(torch.logsumexp(log_w, 0) - math.log(chains))
    return torch.stack(out)
