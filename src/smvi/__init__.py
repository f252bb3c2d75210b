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
the torch-free modules (``smvi.report.page``, ``smvi.store.rundir``, ``smvi.store.records``) import without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (submodule, attribute). Training is ``train_run`` (not ``train``: that is the submodule
# smvi.stages.train).
_EXPORTS: dict[str, tuple[str, str]] = {
    # configuration
    "ConfigError": ("settings.run", "ConfigError"),
    "DataConfig": ("settings.run", "DataConfig"),
    "ModelConfig": ("settings.run", "ModelConfig"),
    "RunConfig": ("settings.run", "RunConfig"),
    "TrainConfig": ("settings.run", "TrainConfig"),
    "load_config": ("settings.run", "load_config"),
    # data
    "DataError": ("data.loading", "DataError"),
    "ImageData": ("data.loading", "ImageData"),
    "load_data": ("data.loading", "load_data"),
    "load_mnist": ("data.loading", "load_mnist"),
    "load_idx_dir": ("data.loading", "load_idx_dir"),
    "binarize_fixed": ("data.loading", "binarize_fixed"),
    "dequantize_fixed": ("data.loading", "dequantize_fixed"),
    "fixed_inputs": ("data.loading", "fixed_inputs"),
    "fixed_subset": ("data.loading", "fixed_subset"),
    "discrete_log_likelihood_bound": ("data.loading", "discrete_log_likelihood_bound"),
    "synthetic_images": ("data.synthetic", "synthetic_images"),
    # models
    "VAE": ("core.models", "VAE"),
    "LatentVariableModel": ("core.models", "LatentVariableModel"),
    "LinearGaussian": ("core.models", "LinearGaussian"),
    # objectives and estimators
    "SMVITerms": ("core.objectives", "SMVITerms"),
    "elbo": ("core.objectives", "elbo"),
    "score_matching_divergence": ("core.objectives", "score_matching_divergence"),
    "smvi_objective": ("core.objectives", "smvi_objective"),
    "beta_vae_objective": ("core.objectives", "beta_vae_objective"),
    "BetaTerms": ("core.objectives", "BetaTerms"),
    "iwae_objective": ("core.objectives", "iwae_objective"),
    "IWAETerms": ("core.objectives", "IWAETerms"),
    "training_objective": ("core.objectives", "training_objective"),
    # posterior families and the gap split
    "make_family": ("core.families", "make_family"),
    "DiagonalGaussian": ("core.families", "DiagonalGaussian"),
    "FullGaussian": ("core.families", "FullGaussian"),
    "CouplingFlow": ("core.families", "CouplingFlow"),
    "RejectionFamily": ("core.rejection", "RejectionFamily"),
    "RejectionPosterior": ("core.rejection", "RejectionPosterior"),
    "gap_split": ("stages.gaps", "gap_split"),
    "fit_local": ("stages.gaps", "fit_local"),
    "GapResult": ("stages.gaps", "GapResult"),
    "gaps_run": ("stages.gaps", "gaps_run"),
    "GapConfig": ("settings.stages", "GapConfig"),
    "iwae_bound": ("core.estimators", "iwae_bound"),
    "ais": ("core.estimators", "ais"),
    "AISResult": ("core.estimators", "AISResult"),
    "bdmc": ("core.estimators", "bdmc"),
    "BDMCResult": ("core.estimators", "BDMCResult"),
    "ais_ladder": ("core.estimators", "ais_ladder"),
    "LadderResult": ("core.estimators", "LadderResult"),
    "simulate": ("core.estimators", "simulate"),
    # runs: train, load, evaluate
    "train_run": ("stages.train", "train"),
    "TrainResult": ("stages.train", "TrainResult"),
    "load_run": ("stages.trained", "load_run"),
    "LoadedRun": ("stages.trained", "LoadedRun"),
    "RunError": ("store.rundir", "RunError"),
    "RunDir": ("store.rundir", "RunDir"),
    "fingerprint": ("store.rundir", "fingerprint"),
    "EvalConfig": ("settings.stages", "EvalConfig"),
    "AISConfig": ("settings.stages", "AISConfig"),
    "ConvergenceConfig": ("settings.stages", "ConvergenceConfig"),
    "check_convergence": ("stages.convergence", "check_convergence"),
    "evaluate_run": ("stages.evaluate", "evaluate_run"),
    "SSLConfig": ("stages.ssl", "SSLConfig"),
    "ssl_run": ("stages.ssl", "ssl_run"),
    "ssl_refined_run": ("stages.ssl_refined", "ssl_refined_run"),
    "RefinedSSLConfig": ("settings.stages", "RefinedSSLConfig"),
    "rescore": ("stages.ssl_robust", "rescore"),
    "PicturesConfig": ("settings.stages", "PicturesConfig"),
    "pictures_run": ("stages.pictures", "pictures_run"),
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
    from smvi.core.estimators import AISResult, BDMCResult, LadderResult, ais, ais_ladder, bdmc, iwae_bound, simulate
    from smvi.core.families import CouplingFlow, DiagonalGaussian, FullGaussian, make_family
    from smvi.core.models import VAE, LatentVariableModel, LinearGaussian
    from smvi.core.objectives import (
        BetaTerms,
        IWAETerms,
        SMVITerms,
        beta_vae_objective,
        elbo,
        iwae_objective,
        score_matching_divergence,
        smvi_objective,
        training_objective,
    )
    from smvi.core.rejection import RejectionFamily, RejectionPosterior
    from smvi.data.loading import (
        DataError,
        ImageData,
        binarize_fixed,
        dequantize_fixed,
        discrete_log_likelihood_bound,
        fixed_inputs,
        fixed_subset,
        load_data,
        load_idx_dir,
        load_mnist,
    )
    from smvi.data.synthetic import synthetic_images
    from smvi.settings.run import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig, load_config
    from smvi.settings.stages import (
        AISConfig,
        ConvergenceConfig,
        EvalConfig,
        GapConfig,
        PicturesConfig,
        RefinedSSLConfig,
    )
    from smvi.stages.convergence import check_convergence
    from smvi.stages.evaluate import evaluate_run
    from smvi.stages.gaps import GapResult, fit_local, gap_split, gaps_run
    from smvi.stages.ssl import SSLConfig, ssl_run
    from smvi.stages.ssl_refined import ssl_refined_run
    from smvi.stages.ssl_robust import rescore
    from smvi.stages.train import TrainResult
    from smvi.stages.train import train as train_run
    from smvi.stages.trained import LoadedRun, load_run
    from smvi.store.rundir import RunDir, RunError, fingerprint
