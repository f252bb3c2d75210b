"""smvi: Score-Matching Variational Inference for deep latent variable models.

Train by maximizing ELBO(x) − λ·D_SM(q(z|x), p(z|x)) and measure what it buys: log-likelihood against the inference
gap. The public API is re-exported here (see ARCHITECTURE.md for where each piece lives; the README's "From
Python" section runs as written)::

    import smvi
    data = smvi.load_data("mnist")                 # or load_data("idx", DIR), or synthetic_images() for a smoke test
    result = smvi.train_run(smvi.load_config(sets=["train.epochs=2"]), "runs/x", data=data)
    run = smvi.load_run("runs/x")                  # run.model: a VAE in eval mode
    report = smvi.evaluate_run("runs/x", smvi.EvalConfig(n_test=50, n_train=0), data=data)

Names are imported on first use, so ``import smvi`` (and the ``smvi`` command's ``--help``) does not import torch, and
the torch-free modules (``smvi.report``, ``smvi.rundir``, ``smvi.records``) import without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (submodule, attribute). Training is ``train_run`` (not ``train``: that is the submodule smvi.train).
_EXPORTS: dict[str, tuple[str, str]] = {
    # configuration
    "ConfigError": ("config", "ConfigError"),
    "DataConfig": ("config", "DataConfig"),
    "ModelConfig": ("config", "ModelConfig"),
    "RunConfig": ("config", "RunConfig"),
    "TrainConfig": ("config", "TrainConfig"),
    "load_config": ("config", "load_config"),
    # data
    "DataError": ("data", "DataError"),
    "ImageData": ("data", "ImageData"),
    "load_data": ("data", "load_data"),
    "load_mnist": ("data", "load_mnist"),
    "load_idx_dir": ("data", "load_idx_dir"),
    "binarize_fixed": ("data", "binarize_fixed"),
    "dequantize_fixed": ("data", "dequantize_fixed"),
    "fixed_inputs": ("data", "fixed_inputs"),
    "fixed_subset": ("data", "fixed_subset"),
    "discrete_log_likelihood_bound": ("data", "discrete_log_likelihood_bound"),
    "synthetic_images": ("synthetic", "synthetic_images"),
    # models
    "VAE": ("models", "VAE"),
    "LatentVariableModel": ("models", "LatentVariableModel"),
    "LinearGaussian": ("models", "LinearGaussian"),
    # objectives and estimators
    "SMVITerms": ("objectives", "SMVITerms"),
    "elbo": ("objectives", "elbo"),
    "score_matching_divergence": ("objectives", "score_matching_divergence"),
    "smvi_objective": ("objectives", "smvi_objective"),
    "beta_vae_objective": ("objectives", "beta_vae_objective"),
    "BetaTerms": ("objectives", "BetaTerms"),
    "iwae_objective": ("objectives", "iwae_objective"),
    "IWAETerms": ("objectives", "IWAETerms"),
    "training_objective": ("objectives", "training_objective"),
    # posterior families and the gap split
    "make_family": ("posteriors", "make_family"),
    "DiagonalGaussian": ("posteriors", "DiagonalGaussian"),
    "FullGaussian": ("posteriors", "FullGaussian"),
    "CouplingFlow": ("posteriors", "CouplingFlow"),
    "gap_split": ("gaps", "gap_split"),
    "fit_local": ("gaps", "fit_local"),
    "GapResult": ("gaps", "GapResult"),
    "gaps_run": ("gaps", "gaps_run"),
    "GapConfig": ("settings", "GapConfig"),
    "iwae_bound": ("estimators", "iwae_bound"),
    "ais": ("estimators", "ais"),
    "AISResult": ("estimators", "AISResult"),
    "bdmc": ("estimators", "bdmc"),
    "BDMCResult": ("estimators", "BDMCResult"),
    "ais_ladder": ("estimators", "ais_ladder"),
    "LadderResult": ("estimators", "LadderResult"),
    "simulate": ("estimators", "simulate"),
    # runs: train, load, evaluate
    "train_run": ("train", "train"),
    "TrainResult": ("train", "TrainResult"),
    "load_run": ("trained", "load_run"),
    "LoadedRun": ("trained", "LoadedRun"),
    "RunError": ("rundir", "RunError"),
    "RunDir": ("rundir", "RunDir"),
    "fingerprint": ("rundir", "fingerprint"),
    "EvalConfig": ("settings", "EvalConfig"),
    "AISConfig": ("settings", "AISConfig"),
    "ConvergenceConfig": ("settings", "ConvergenceConfig"),
    "check_convergence": ("convergence", "check_convergence"),
    "evaluate_run": ("evaluate", "evaluate_run"),
    "SSLConfig": ("ssl", "SSLConfig"),
    "ssl_run": ("ssl", "ssl_run"),
    "PicturesConfig": ("settings", "PicturesConfig"),
    "pictures_run": ("pictures", "pictures_run"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use (PEP 562) and cache the name here."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'smvi' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig, load_config
    from .data import (DataError, ImageData, binarize_fixed, dequantize_fixed, discrete_log_likelihood_bound,
                       fixed_inputs, fixed_subset, load_data, load_idx_dir, load_mnist)
    from .estimators import AISResult, BDMCResult, LadderResult, ais, ais_ladder, bdmc, iwae_bound, simulate
    from .convergence import check_convergence
    from .evaluate import evaluate_run
    from .models import VAE, LatentVariableModel, LinearGaussian
    from .gaps import GapResult, fit_local, gap_split, gaps_run
    from .objectives import (BetaTerms, IWAETerms, SMVITerms, beta_vae_objective, elbo, iwae_objective,
                             score_matching_divergence, smvi_objective, training_objective)
    from .posteriors import CouplingFlow, DiagonalGaussian, FullGaussian, make_family
    from .ssl import SSLConfig, ssl_run
    from .synthetic import synthetic_images
    from .rundir import RunDir, RunError, fingerprint
    from .pictures import pictures_run
    from .settings import AISConfig, ConvergenceConfig, EvalConfig, GapConfig, PicturesConfig
    from .train import TrainResult
    from .train import train as train_run
    from .trained import LoadedRun, load_run
