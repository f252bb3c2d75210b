"""smvi: Score-Matching Variational Inference for deep latent variable models.

Train by maximizing ELBO(x) − λ·D_SM(q(z|x), p(z|x)) and measure what it buys: log-likelihood against the inference
gap. The public API is re-exported here; see ARCHITECTURE.md for where each piece lives. Names are imported on first
use, so the torch-free modules (``smvi.report``, ``smvi.rundir``, ``smvi.records``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "config": ["ConfigError", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "load_config"],
    "models": ["VAE", "LatentVariableModel", "LinearGaussian"],
    "estimators": ["AISResult", "BDMCResult", "LadderResult", "ais", "ais_ladder", "bdmc", "iwae_bound", "simulate"],
    "objectives": ["SMVITerms", "elbo", "score_matching_divergence", "smvi_objective"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'smvi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
