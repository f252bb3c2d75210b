"""``smvi evaluate``: the paper's first experiment for one trained run.

On fixed, seeded, once-binarized subsets of the test and training sets it computes, per data point, the ELBO (many
samples), D_SM, the IWAE bound and AIS log p(x), and the ELBO gap AIS − ELBO = KL(q(z|x) ‖ p(z|x)) (up to AIS's own
downward bias, so the gap is slightly underestimated). Means and standard errors across points go to ``eval.json``
in the run directory, with the settings, seconds and the work done (points × chains × steps × leapfrogs).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from .checkpoint import atomic_write_json
from .data import ImageData, binarize_fixed, fixed_subset, load_data
from .estimators import ais, iwae_bound
from .objectives import elbo, score_matching_divergence
from .train import RunError, load_run

__all__ = ["EvalConfig", "EVAL_PRESETS", "evaluate_run", "evaluation_set", "EVAL_FILE"]

EVAL_FILE = "eval.json"


class EvalConfig(BaseModel):
    """How much work ``smvi evaluate`` does. The defaults are the converged setting (see the README's evaluation
    section for the BDMC evidence); ``EVAL_PRESETS['quick']`` is for quick looks."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_test: int = Field(200, gt=0, description="test points (a fixed random subset)")
    n_train: int = Field(200, ge=0, description="training points (a fixed random subset); 0 skips the split")
    subset_seed: int = Field(0, ge=0, description="seed of the subsets (binarization uses data.eval_seed)")
    elbo_samples: int = Field(1000, gt=0, description="z samples per point for the ELBO")
    dsm_samples: int = Field(100, gt=0, description="z samples per point for D_SM")
    iwae_k: int = Field(1000, ge=0, description="importance samples of the IWAE bound; 0 skips it")
    ais_steps: int = Field(1000, gt=0, description="AIS intermediate distributions")
    ais_chains: int = Field(4, gt=0, description="AIS chains per point")
    ais_leapfrog: int = Field(5, gt=0, description="leapfrog steps per HMC transition")
    ais_start: Literal["prior", "encoder"] = Field("encoder", description="AIS initial distribution")
    ais_schedule: Literal["sigmoid", "linear"] = Field("sigmoid", description="β schedule")
    batch_size: int = Field(100, gt=0, description="points evaluated together")
    seed: int = Field(0, ge=0, description="seed of every estimator")


EVAL_PRESETS: dict[str, EvalConfig] = {
    "default": EvalConfig(),
    "quick": EvalConfig(n_test=100, n_train=100, elbo_samples=200, dsm_samples=20, iwae_k=200, ais_steps=100,
                        ais_chains=4, ais_leapfrog=5),
}


def evaluation_set(images: torch.Tensor, n: int, subset_seed: int, binarize_seed: int) -> torch.Tensor:
    """A fixed subset of ``n`` images, binarized once: the same binary images for every estimator and every run."""
    idx = fixed_subset(len(images), n, subset_seed)
    return binarize_fixed(images[idx], binarize_seed)


def _mean_se(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


def _chunked_mean(fn, total: int, chunk: int = 100) -> torch.Tensor:
    """Average of ``fn(n)`` (an unbiased per-point estimate from n samples) over ``total`` samples in chunks."""
    out, done = 0.0, 0
    while done < total:
        n = min(chunk, total - done)
        out = out + fn(n).double() * n
        done += n
    return out / total


def _score_split(model, x: torch.Tensor, cfg: EvalConfig, bar) -> dict:
    """Per-point estimates on one split, summarized as mean and standard error across points."""
    cols: dict[str, list[torch.Tensor]] = {"elbo": [], "d_sm": [], "iwae": [], "ais": []}
    acc, ess = [], []
    for start in range(0, len(x), cfg.batch_size):
        xb = x[start : start + cfg.batch_size]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + start)
            with torch.no_grad():  # D_SM still takes its z-gradients, on a detached z
                cols["elbo"].append(_chunked_mean(lambda n: elbo(model, xb, n_samples=n), cfg.elbo_samples))
                cols["d_sm"].append(_chunked_mean(lambda n: score_matching_divergence(model, xb, n_samples=n),
                                                  cfg.dsm_samples, chunk=20))
        if cfg.iwae_k:
            cols["iwae"].append(iwae_bound(model, xb, k=cfg.iwae_k, seed=cfg.seed))
        r = ais(model, xb, steps=cfg.ais_steps, chains=cfg.ais_chains, leapfrog_steps=cfg.ais_leapfrog,
                schedule=cfg.ais_schedule, start=cfg.ais_start, seed=cfg.seed)
        cols["ais"].append(r.log_px)
        acc.append(r.acceptance_per_point)
        ess.append(r.ess)
        bar.update(len(xb))
    v = {k: torch.cat(c) for k, c in cols.items() if c}
    out = {"n": len(x), **{k: _mean_se(t) for k, t in v.items()}, "gap": _mean_se(v["ais"] - v["elbo"])}
    if "iwae" in v:
        out["gap_iwae"] = _mean_se(v["iwae"] - v["elbo"])
    out["ais_acceptance"] = float(torch.cat(acc).mean())
    out["ais_ess"] = _mean_se(torch.cat(ess))
    return out


def evaluate_run(
    run_dir: str | Path,
    config: EvalConfig = EvalConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """Evaluate a trained run and write ``eval.json`` into its directory (atomically); returns what it wrote.

    An existing ``eval.json`` is an error unless ``overwrite``.
    """
    run_dir = Path(run_dir)
    out_path = run_dir / EVAL_FILE
    run = load_run(run_dir, device=device)
    if out_path.exists() and not overwrite:
        raise RunError(f"{out_path} exists: pass --overwrite to recompute it")
    data = data if data is not None else load_data(run.config.data.dataset, run.config.data.data_dir)
    bseed = run.config.data.eval_seed
    splits = {"test": evaluation_set(data.test_x, config.n_test, config.subset_seed, bseed)}
    if config.n_train:
        splits["train"] = evaluation_set(data.train_x, config.n_train, config.subset_seed, bseed)
    t0 = time.perf_counter()
    total = sum(len(x) for x in splits.values())
    result: dict = {"run": run_dir.name, "epoch": run.epoch, "lam": run.config.train.lam,
                    "settings": config.model_dump(), "splits": {}}
    with tqdm(total=total, disable=not progress, unit="pt", desc="evaluate", dynamic_ncols=True) as bar:
        for name, x in splits.items():
            t = time.perf_counter()
            result["splits"][name] = _score_split(run.model, x.to(next(run.model.parameters()).device), config, bar)
            result["splits"][name]["seconds"] = round(time.perf_counter() - t, 2)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["work"] = {"points": total, "chains": config.ais_chains, "steps": config.ais_steps,
                      "leapfrogs": config.ais_leapfrog,
                      "gradient_evaluations": total * config.ais_chains * config.ais_steps * config.ais_leapfrog}
    atomic_write_json(out_path, result)
    return result
