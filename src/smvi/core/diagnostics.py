"""Posterior-collapse diagnostics."""

from __future__ import annotations

import torch
from torch import Tensor

from smvi.core.families import location

__all__ = ["active_units"]


@torch.no_grad()
def active_units(model, x: Tensor, *, threshold: float = 0.01) -> int:
    """The number of active latent units: dimensions u with Cov_x(E_q[z_u | x]) > ``threshold`` over the points ``x``
    ``[N, x_dim]`` (Burda, Grosse & Salakhutdinov 2016, "Importance weighted autoencoders", §5.2). A collapsed
    posterior (q(z|x) = p(z) for every x) has none; the measure needs N ≥ 2 points."""
    if x.shape[0] < 2:
        raise ValueError(f"active_units needs at least 2 points, got {x.shape[0]}")
    mean = location(model.encode(x))  # E_q[z|x]; a flow's location
    return int((mean.var(0) > threshold).sum())
