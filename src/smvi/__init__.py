"""smvi: Score-Matching Variational Inference for deep latent variable models.

Train by maximizing ELBO(x) − λ·D_SM(q(z|x), p(z|x)) and measure what it buys: log-likelihood against the inference
gap. The public API is re-exported here; see ARCHITECTURE.md for where each piece lives.
"""

from .config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig, load_config
from .models import VAE, LatentVariableModel, LinearGaussian
from .estimators import AISResult, BDMCResult, LadderResult, ais, ais_ladder, bdmc, iwae_bound, simulate
from .objectives import (
    BetaTerms, IWAETerms, SMVITerms, beta_vae_objective, elbo, iwae_objective, score_matching_divergence,
    smvi_objective, training_objective,
)
from .posteriors import CouplingFlow, DiagonalGaussian, FullGaussian, make_family
from .gaps import GapResult, fit_local, gap_split

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "VAE",
    "LatentVariableModel",
    "LinearGaussian",
    "SMVITerms",
    "elbo",
    "score_matching_divergence",
    "smvi_objective",
    "beta_vae_objective",
    "BetaTerms",
    "iwae_objective",
    "IWAETerms",
    "training_objective",
    "make_family",
    "DiagonalGaussian",
    "FullGaussian",
    "CouplingFlow",
    "gap_split",
    "fit_local",
    "GapResult",
    "iwae_bound",
    "ais",
    "AISResult",
    "bdmc",
    "BDMCResult",
    "ais_ladder",
    "LadderResult",
    "simulate",
]
