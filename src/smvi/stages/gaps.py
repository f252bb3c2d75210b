"""The anatomy of the inference gap: approximation gap and amortization gap (Cremer, Li & Duvenaud, "Inference
suboptimality in variational autoencoders", ICML 2018).

For an image x, with q_φ(z|x) the encoder's (amortized) member of the variational family Q and q*_x the best member
of Q for this x alone (the "local" q):

    log p(x) − ELBO(q_φ)  =  [log p(x) − ELBO(q*_x)]  +  [ELBO(q*_x) − ELBO(q_φ)]
         the gap               approximation gap          amortization gap
                               (Q cannot represent        (the encoder does not find
                                the posterior)             the best member for x)

:func:`fit_local` finds q*_x by stochastic gradient ascent on the ELBO over the per-image free parameters of the
model's own family (:meth:`~smvi.core.families.PosteriorFamily.local_init`: the Gaussian's mean and Cholesky factor;
for the flow, its base, context *and* a private copy of every coupling weight), starting from the encoder's output.
:func:`gap_split` evaluates both ELBOs with the same draws (common random numbers) and splits the gap given log p(x)
(from AIS, or exact). :func:`gaps_run` does this for a trained run and writes its gaps record
(:class:`~smvi.store.records.GapsRecord`, through :class:`~smvi.store.rundir.RunDir`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from smvi.core.estimators import ais
from smvi.core.estimators.hmc import reparameterize
from smvi.core.objectives import check_batch, kl_to_prior, own_terms
from smvi.core.pointwise import elbo_per_point
from smvi.data.loading import ImageData, fixed_inputs, fixed_subset
from smvi.progress import note
from smvi.settings.objectives import knob_of
from smvi.settings.stages import GapConfig
from smvi.stages.trained import check_inputs, holds_run_lock, open_stage
from smvi.store.records import GapsFit, GapsPerImage, GapsRecord, make_header, nums
from smvi.store.rundir import RunError
from smvi.store.stats import MeanSE, mean_se

__all__ = ["LocalFit", "GapResult", "GapConfig", "fit_local", "gap_split", "gaps_run"]

_PER_IMAGE = ("log_px", "elbo_amortized", "elbo_local", "approximation", "amortization")


@dataclass(frozen=True)
class LocalFit:
    """The per-image members q*_x found by :func:`fit_local`: ``q`` (batch ``[N]``), its free parameters ``local``,
    the optimizer ``steps`` taken, whether the convergence check passed at the end (``converged``), the
    ELBO's mean over images at each check (``trace``), ``skipped`` non-finite steps and each image's gain over the
    last window (``last_gain``, nats: what the fit was still improving when it stopped)."""

    q: Distribution
    local: list[Tensor]
    steps: int
    converged: bool
    trace: list[float]
    skipped: int
    last_gain: Tensor  # [N]: each image's ELBO gain (fixed draws) over the last window


def _elbo_draws(model, q: Distribution, x: Tensor, n: int) -> Tensor:
    """ELBO ``[N]`` from ``n`` reparameterized draws: MC reconstruction, analytic KL where available. A posterior
    with its own estimators (rejection sampling) gives its reweighted ELBO from its own number of proposals."""
    if (own := own_terms(q, model, x, objective="smvi")) is not None:
        return own.elbo
    z = q.rsample((n,))
    return model.log_likelihood(x, z).mean(0) - kl_to_prior(model, q, z)


@torch.no_grad()
def _elbo_at(model, q: Distribution, x: Tensor, eps: Tensor) -> Tensor:
    """ELBO ``[N]`` at the fixed base draws ``eps`` ``[M, N, z_dim]`` (reconstruction at z = q's map of eps; a
    rejection posterior: its reweighted ELBO with the proposals q's base makes of eps)."""
    at = getattr(q, "elbo_at", None)
    if at is not None:
        return at(model, x, eps)
    z = reparameterize(q, eps)
    return model.log_likelihood(x, z).mean(0) - kl_to_prior(model, q, z)


def fit_local(
    model,
    x: Tensor,
    *,
    steps: int = 3000,
    lr: float = 1e-2,
    n_samples: int = 16,
    window: int = 100,
    tol: float = 0.05,
    seed: int = 0,
) -> LocalFit:
    """Optimize, for each image of x ``[N, x_dim]`` separately, the member of the model's family that maximizes the
    ELBO, starting from the encoder's output. The model's own parameters are not changed.

    Optimizer: Adam on Σₙ ELBO_n, estimated each step from ``n_samples`` fresh reparameterized draws per image
    (analytic KL where the family has one), for ``steps`` steps with the learning rate decayed from ``lr`` to 1 % of it
    (cosine), so the iterate settles instead of jittering at the noise level. Images share nothing but the schedule
    (Adam is element-wise, and each image's parameters enter only its own ELBO). Convergence check: every ``window``
    steps each image's ELBO is evaluated on one fixed set of 64 base draws (common random numbers: the change between
    two evaluations is nearly free of Monte Carlo noise); the fit is ``converged`` if in the last window no image
    gained ``tol`` nats or more. ``trace`` holds the mean of these evaluations. A step with a non-finite ELBO or
    gradient is skipped. Noise comes from ``seed`` (the global RNG is left as it was).
    """
    check_batch(model, x)
    family = model.family
    member = lambda local: family.bind(family.local_distribution(local), model, x)  # noqa: E731
    with torch.no_grad():
        local = [t.requires_grad_(True) for t in family.local_init(model.encoder_params(x))]
    opt = torch.optim.Adam(local, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    )
    trace: list[float] = []
    skipped, converged, gain = 0, False, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        eps = torch.randn(64, *x.shape[:-1], model.z_dim, dtype=x.dtype, device=x.device)
        last = _elbo_at(model, member(local), x, eps)
        for step in range(1, steps + 1):
            with torch.enable_grad():
                elbo = _elbo_draws(model, member(local), x, n_samples)
                grads = torch.autograd.grad(-elbo.sum(), local)
            if torch.isfinite(elbo).all() and all(bool(torch.isfinite(g).all()) for g in grads):
                for t, g in zip(local, grads, strict=True):
                    t.grad = g
                opt.step()
            else:
                skipped += 1
            sched.step()
            if step % window == 0 or step == steps:
                now = _elbo_at(model, member(local), x, eps)
                trace.append(float(now.mean()))
                gain, last = now - last, now
                converged = bool((gain < tol).all())
    local = [t.detach() for t in local]
    return LocalFit(member(local), local, steps, converged, trace, skipped, gain)


@torch.no_grad()
def elbo_estimate(
    model, q: Distribution, x: Tensor, *, n_samples: int = 1000, seed: int = 0, chunk: int = 100
) -> Tensor:
    """ELBO(q) per image, float64 ``[N]``: E_q[log p(x|z)] by ``n_samples`` draws (in chunks), minus KL(q ‖ p(z))
    (analytic where available, else from the same draws). Unbiased; ``seed`` fixes the draws, so two q's of the same
    Gaussian family evaluated with one seed share their noise (common random numbers). A posterior with its own
    keyed sampler (rejection sampling): exact draws and its estimated log Ẑ_T, by
    :func:`~smvi.core.pointwise.elbo_per_point` (a stochastic lower bound of its ELBO)."""
    if hasattr(q, "sample_keyed"):
        return elbo_per_point(model, x, n_samples=n_samples, seed=seed, chunk=chunk, q=q)
    total, done = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device), 0
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        while done < n_samples:
            n = min(chunk, n_samples - done)
            total += _elbo_draws(model, q, x, n).double() * n
            done += n
    return total / n_samples


@dataclass(frozen=True)
class GapResult:
    """Per-image values, float64 ``[N]``: ``log_px`` (given), ``elbo_amortized`` (the encoder's q), ``elbo_local``
    (q*_x), ``approximation = log_px − elbo_local``, ``amortization = elbo_local − elbo_amortized``; their sum is the
    ELBO gap log_px − elbo_amortized. ``fit`` describes the local optimization."""

    log_px: Tensor
    elbo_amortized: Tensor
    elbo_local: Tensor
    approximation: Tensor
    amortization: Tensor
    fit: dict[str, Any]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, MeanSE]:
        """Mean ± SE over images (:func:`smvi.store.stats.mean_se`) of every per-image value and of the total
        ``gap``."""
        out = {k: mean_se(_values(getattr(self, k))) for k in _PER_IMAGE}
        return {**out, "gap": mean_se(_values(self.log_px - self.elbo_amortized))}


def gap_split(model, x: Tensor, log_px: Tensor, *, eval_samples: int = 1000, seed: int = 0, **fit) -> GapResult:
    """Split each image's ELBO gap into approximation and amortization gaps (module docstring).

    x ``[N, x_dim]``; ``log_px`` ``[N]`` (AIS, or exact for a closed-form model); ``fit`` goes to :func:`fit_local`.
    Both ELBOs are :func:`elbo_estimate` with ``eval_samples`` draws and the same ``seed``. Bias: an unconverged fit
    under-states the amortization gap and over-states the approximation gap by the same amount; AIS's downward bias
    under-states the approximation gap. The amortization gap is ≥ 0 up to this Monte Carlo noise (the fit starts at
    the amortized q and only keeps improving it in expectation).
    """
    t0 = time.perf_counter()
    log_px = log_px.to(device=x.device, dtype=torch.float64)
    if log_px.shape != (x.shape[0],):
        raise ValueError(f"log_px must be [N] = [{x.shape[0]}], got {list(log_px.shape)}")
    with torch.no_grad():
        amortized = model.encode(x)
    elbo_amortized = elbo_estimate(model, amortized, x, n_samples=eval_samples, seed=seed)
    local = fit_local(model, x, seed=seed + 1, **fit)
    elbo_local = elbo_estimate(model, local.q, x, n_samples=eval_samples, seed=seed)
    settings = {"eval_samples": eval_samples, "seed": seed, **fit}
    diag = {
        "steps": local.steps,
        "converged": local.converged,
        "skipped": local.skipped,
        "last_gain_max": float(local.last_gain.max()),
        "last_gain_mean": float(local.last_gain.mean()),
        "trace": [round(v, 4) for v in local.trace],
    }
    return GapResult(
        log_px,
        elbo_amortized,
        elbo_local,
        log_px - elbo_local,
        elbo_local - elbo_amortized,
        diag,
        time.perf_counter() - t0,
        settings,
    )


def _values(t: Tensor) -> list[float]:
    return [float(v) for v in t.double().cpu()]


def _knob(train) -> dict[str, float]:
    """The run's knob along its objective: ``{"lam": λ}``, ``{"beta": β}`` or ``{"iwae_k": k}``; for a learned λ,
    ``{"target": ε}`` (train.constraint.target)."""
    if train.constraint.target is not None:
        return {"target": train.constraint.target}
    return knob_of(train)


@holds_run_lock
def gaps_run(
    run_dir: str | Path,
    cfg: GapConfig = GapConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    other_data: bool = False,
) -> GapsRecord:
    """The gap split of a trained run on a fixed test subset; writes the run's gaps record (atomically) and returns
    it as written. ``seconds`` covers everything (AIS included).

    log p(x) is AIS (``cfg.ais``, from the encoder by default) on the same fixed inputs (the run's ``data.transform``
    with its ``data.eval_seed``); the record holds the run's family, objective and knob, mean ± SE of every quantity
    (:func:`smvi.store.stats.mean_se`), the per-image values and the fit's diagnostics. Checked before any work: the run
    (config, checkpoint and their identity), an existing record (an error unless ``overwrite``) and that the directory
    is writable. A failed write is one-line :class:`~smvi.store.rundir.RunError`.
    """
    t0 = time.perf_counter()
    cfg = check_inputs(run_dir, cfg, GapConfig, data=data, device=device)
    rd, run, data = open_stage(run_dir, "gaps", data=data, overwrite=overwrite, device=device, other_data=other_data)
    if cfg.n_points > len(data.test_x):
        raise RunError(f"n_points = {cfg.n_points} but the test split has {len(data.test_x)} images; lower it")
    idx = fixed_subset(len(data.test_x), cfg.n_points, cfg.subset_seed)
    x_all = fixed_inputs(data.test_x[idx], run.config.data.transform, run.config.data.eval_seed)
    x_all = x_all.to(next(run.model.parameters()).device)
    parts, acceptance = [], []
    batches = range(0, len(x_all), cfg.batch_size)
    for b, start in enumerate(batches, 1):
        x = x_all[start : start + cfg.batch_size]
        label = f"gaps {rd.path.name}, batch {b}/{len(batches)}"
        r = ais(run.model, x, **cfg.ais.kwargs(), seed=cfg.seed, progress=f"{label}: AIS" if progress else False)
        acceptance.append(r.acceptance_per_point)
        note(f"{label}: local fit ({cfg.steps} Adam steps at most)", progress)
        parts.append(
            gap_split(run.model, x, r.log_px, eval_samples=cfg.eval_samples, seed=cfg.seed, **cfg.fit_kwargs())
        )
    per = {k: _values(torch.cat([getattr(p, k) for p in parts])) for k in _PER_IMAGE}
    fit = GapsFit(
        steps=[p.fit["steps"] for p in parts],
        converged=all(p.fit["converged"] for p in parts),
        skipped=sum(p.fit["skipped"] for p in parts),
        last_gain_max=max(p.fit["last_gain_max"] for p in parts),
        traces=[p.fit["trace"] for p in parts],
    )
    tc = run.config.train
    # the means of _PER_IMAGE go in by name through **, which a type checker cannot match to the fields (the ignore)
    record = GapsRecord(
        header=make_header("gaps", run.fingerprint, run.epoch, cfg, device=str(x_all.device), data=run.other_data),
        run=rd.path.name,
        posterior=run.config.model.posterior,
        objective=tc.objective,
        knob=_knob(tc),
        n=len(idx),
        indices=[int(i) for i in idx],
        **{k: mean_se(v) for k, v in per.items()},  # pyright: ignore[reportArgumentType]
        gap=mean_se([a - e for a, e in zip(per["log_px"], per["elbo_amortized"], strict=True)]),
        fit=fit,
        ais_acceptance=float(torch.cat(acceptance).double().mean()),
        seconds=round(time.perf_counter() - t0, 2),
        per_image=GapsPerImage(**{k: nums(v) for k, v in per.items()}),
    )
    return rd.write_record("gaps", record)
