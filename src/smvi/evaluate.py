"""``smvi evaluate``: the paper's first experiment for one trained run.

On fixed, seeded, once-binarized subsets of the test and training sets it computes, per data point, the ELBO (many
samples), D_SM, the IWAE bound and AIS log p(x), and the ELBO gap AIS − ELBO = KL(q(z|x) ‖ p(z|x)) (up to AIS's own
downward bias, so the gap is slightly underestimated). Every estimator draws its noise per point (counter-based), so a
point's values do not depend on its batch-mates. The run's :class:`~smvi.records.EvalRecord` keeps, per split, the
images' indices and every per-image value, and their means ± SE (:func:`smvi.stats.mean_se`).

With ``cfg.iwae_full_test_k > 0`` it also computes the IWAE bound on every test image (:func:`full_test_set` says how
they are binarized: the subset's images exactly as above, so their values equal the subset's IWAE at the same k), in
batches of ``cfg.batch_size`` images and chunks of 64 samples, so memory does not grow with k or the test set.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .data import ImageData, fixed_inputs, fixed_subset
from .estimators import ais, iwae_bound
from .pointwise import d_sm_per_point, elbo_per_point
from .progress import Progress
from .records import EvalRecord, EvalSplit, FullTestIWAE, PerImage, make_header
from .rundir import RunError
from .settings import EvalConfig
from .stats import mean_se
from .trained import open_stage

__all__ = ["EvalConfig", "evaluate_run", "evaluation_set", "evaluation_indices", "full_test_set"]

_REST_SEED = 0x5E7  # offsets the binarization seed of the test images outside the subset


def evaluation_indices(n_images: int, n: int, subset_seed: int) -> torch.Tensor:
    """The indices of the fixed evaluation subset of ``n`` of ``n_images`` images."""
    return fixed_subset(n_images, n, subset_seed)


def evaluation_set(images: torch.Tensor, n: int, subset_seed: int, binarize_seed: int,
                   transform: str = "binarize") -> torch.Tensor:
    """A fixed subset of ``n`` images, binarized (or dequantized: ``transform``, the run's ``data.transform``) once
    with ``binarize_seed``: the same inputs for every estimator and every run."""
    return fixed_inputs(images[evaluation_indices(len(images), n, subset_seed)], transform, binarize_seed)


def full_test_set(images: torch.Tensor, n: int, subset_seed: int, binarize_seed: int, transform: str = "binarize"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``images``, binarized (or dequantized: ``transform``) once, as (indices, inputs): first the evaluation subset of ``n``
    exactly as :func:`evaluation_set` binarizes it, then the other images (sorted) binarized with the seed
    ``binarize_seed + 0x5E7``. So a subset image is the same binary image in both, and every estimator, whose noise
    is a function of the point's values, gives it the same value."""
    idx = evaluation_indices(len(images), n, subset_seed)
    keep = torch.ones(len(images), dtype=torch.bool)
    keep[idx] = False
    rest = torch.nonzero(keep).flatten()
    x = torch.cat([fixed_inputs(images[idx], transform, binarize_seed),
                   fixed_inputs(images[rest], transform, binarize_seed + _REST_SEED)])
    return torch.cat([idx, rest]), x


def _full_test(model, images: torch.Tensor, cfg: EvalConfig, bseed: int, bar, transform: str = "binarize"
               ) -> FullTestIWAE:
    """IWAE with ``cfg.iwae_full_test_k`` samples on every image of the test split (see :func:`full_test_set`)."""
    t = time.perf_counter()
    idx, x = full_test_set(images, cfg.n_test, cfg.subset_seed, bseed, transform)
    dev = next(model.parameters()).device
    values = []
    for start in range(0, len(x), cfg.batch_size):
        xb = x[start : start + cfg.batch_size].to(dev)
        values.append(iwae_bound(model, xb, k=cfg.iwae_full_test_k, seed=cfg.seed, precision=cfg.ais.precision))
        bar.update(len(xb))
    v = _values(torch.cat(values))
    return FullTestIWAE(k=cfg.iwae_full_test_k, n=len(v), precision=cfg.ais.precision, indices=idx.tolist(),
                        iwae=mean_se(v), per_image=v, seconds=round(time.perf_counter() - t, 2))


def _values(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.double().cpu()]


def _score_split(model, x: torch.Tensor, idx: torch.Tensor, cfg: EvalConfig, bar) -> EvalSplit:
    """Per-point estimates on one split, with their means and standard errors across points."""
    cols: dict[str, list[torch.Tensor]] = {"elbo": [], "d_sm": [], "iwae": [], "ais": []}
    acc, ess = [], []
    for start in range(0, len(x), cfg.batch_size):
        xb = x[start : start + cfg.batch_size]
        cols["elbo"].append(elbo_per_point(model, xb, n_samples=cfg.elbo_samples, seed=cfg.seed))
        cols["d_sm"].append(d_sm_per_point(model, xb, n_samples=cfg.dsm_samples, seed=cfg.seed))
        if cfg.iwae_k:
            cols["iwae"].append(iwae_bound(model, xb, k=cfg.iwae_k, seed=cfg.seed, precision=cfg.ais.precision))
        r = ais(model, xb, **cfg.ais.kwargs(), seed=cfg.seed)
        cols["ais"].append(r.log_px)
        acc.append(r.acceptance_per_point)
        ess.append(r.ess)
        bar.update(len(xb))
    v = {k: _values(torch.cat(c)) for k, c in cols.items() if c}
    gap = [a - e for a, e in zip(v["ais"], v["elbo"])]
    gap_iwae = [i - e for i, e in zip(v["iwae"], v["elbo"])] if "iwae" in v else None
    return EvalSplit(
        n=len(x), indices=[int(i) for i in idx], elbo=mean_se(v["elbo"]), d_sm=mean_se(v["d_sm"]),
        iwae=mean_se(v["iwae"]) if "iwae" in v else None, ais=mean_se(v["ais"]), gap=mean_se(gap),
        gap_iwae=mean_se(gap_iwae) if gap_iwae is not None else None,
        ais_acceptance=float(torch.cat(acc).double().mean()), ais_ess=mean_se(_values(torch.cat(ess))),
        per_image=PerImage(elbo=v["elbo"], d_sm=v["d_sm"], iwae=v.get("iwae"), ais=v["ais"], gap=gap),
    )


def evaluate_run(
    run_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> EvalRecord:
    """Evaluate a trained run and write its eval record (atomically); returns the record as written.

    Checked before any work: the run (config, checkpoint and their identity), an existing record (an error unless
    ``overwrite``) and that the directory is writable. A failed write is one-line :class:`~smvi.rundir.RunError`.
    """
    rd, run, data = open_stage(run_dir, "eval", data=data, overwrite=overwrite, device=device)
    bseed = run.config.data.eval_seed
    wanted = {"test": (data.test_x, cfg.n_test), "train": (data.train_x, cfg.n_train)}
    splits = {}
    for name, (images, n) in wanted.items():
        if n:
            if n > len(images):
                raise RunError(f"n_{name} = {n} but the {name} split has {len(images)} images; lower it")
            idx = evaluation_indices(len(images), n, cfg.subset_seed)
            splits[name] = (idx, fixed_inputs(images[idx], run.config.data.transform, bseed))
    t0 = time.perf_counter()
    total = sum(len(i) for i, _ in splits.values())
    n_full = len(data.test_x) if cfg.iwae_full_test_k else 0
    dev = next(run.model.parameters()).device
    scored = {}
    label = f"evaluate {rd.path.name}"
    with Progress(label, total + n_full, unit="image", enabled=progress) as bar:
        for name, (idx, x) in splits.items():
            bar.relabel(f"{label}: {name} split (ELBO, D_SM, IWAE, AIS)")
            t = time.perf_counter()
            split = _score_split(run.model, x.to(dev), idx, cfg, bar)
            scored[name] = split.model_copy(update={"seconds": round(time.perf_counter() - t, 2)})
        if n_full:
            bar.relabel(f"{label}: whole test set (IWAE k={cfg.iwae_full_test_k})")
        full = _full_test(run.model, data.test_x, cfg, bseed, bar, run.config.data.transform) if n_full else None
    a = cfg.ais
    record = EvalRecord(
        header=make_header("eval", run.fingerprint, run.epoch, cfg, device=str(dev)), run=rd.path.name,
        lam=run.config.train.lam,
        splits=scored, full_test=full, seconds=round(time.perf_counter() - t0, 2),
        work={"points": total, "chains": a.chains, "steps": a.steps, "leapfrog_steps": a.leapfrog_steps,
              "gradient_evaluations": total * a.chains * a.steps * a.leapfrog_steps},
    )
    return rd.write_record("eval", record)
