"""Estimators of log p(x) for evaluation: the IWAE bound, annealed importance sampling with HMC, and BDMC.

All work on any model with the small protocol of :mod:`smvi.core.models` (``z_dim``, ``log_prior``, ``log_likelihood``,
``encode``; ``prior`` and ``decode`` where used), return per-data-point float64 tensors, take a ``seed`` and never
touch the global RNG. ``precision="bf16"`` puts the decoder's passes in bf16 where that keeps the estimate exact (AIS's
leapfrog force) or measurably close (IWAE's log-likelihood): :mod:`smvi.core.estimators.precision`.
"""

from smvi.core.estimators.ais import AISResult, ais, linear_schedule, sigmoid_schedule
from smvi.core.estimators.bdmc import BDMCResult, LadderResult, ais_ladder, bdmc, simulate
from smvi.core.estimators.hmc import HMCInfo, HMCState, Key, hmc_step, init_state, path_potential, stream_key
from smvi.core.estimators.iwae import iwae_bound
from smvi.core.estimators.precision import PRECISIONS, Precision, check_precision, native_bf16

__all__ = [
    "iwae_bound",
    "ais",
    "AISResult",
    "sigmoid_schedule",
    "linear_schedule",
    "bdmc",
    "BDMCResult",
    "simulate",
    "ais_ladder",
    "LadderResult",
    "hmc_step",
    "init_state",
    "path_potential",
    "HMCState",
    "HMCInfo",
    "Key",
    "stream_key",
    "Precision",
    "PRECISIONS",
    "check_precision",
    "native_bf16",
]
