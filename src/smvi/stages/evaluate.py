"""``smvi evaluate``: the paper's first experiment for one trained run.

On fixed, seeded, once-binarized subsets of the test and training sets it computes, per data point, the ELBO (many
samples), D_SM, the IWAE bound and AIS log p(x), and the ELBO gap AIS − ELBO = KL(q(z|x) ‖ p(z|x)) (up to AIS's own
downward bias, so the gap is slightly underestimated). Every estimator draws its noise per point (counter-based), so a
point's values do not depend on its batch-mates. The run's :class:`~smvi.store.records.EvalRecord` keeps, per split, the
images' indices and every per-image value, and their means ± SE (:func:`smvi.store.stats.mean_se`).

With ``cfg.iwae_full_test_k > 0`` it also computes the IWAE bound on every test image (:func:`full_test_set` says how
they are binarized: the subset's images exactly as above, so their values equal the subset's IWAE at the same k), in
batches of ``cfg.batch_size`` images and chunks of about 1024 decoder rows, so memory does not grow with k or the
test set.

**Resumable.** After every batch the points scored so far are saved (``eval.partial.json``, an
:class:`~smvi.store.records.EvalPartial` through the run-directory layer). A killed evaluation rerun with the same run,
epoch and settings continues from there -- the values are those a single pass gives, since each point's noise is its own
-- and the file goes once ``eval.json`` is written. Progress for other settings or another epoch is not used. It is used
with ``overwrite`` too (which replaces a record; a sweep passes it): its values are the ones a fresh pass would give.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from smvi.core.estimators import ais, iwae_bound
from smvi.core.estimators.adapt import off_target
from smvi.core.estimators.precision import resolve_precision
from smvi.core.pointwise import d_sm_per_point, elbo_per_point
from smvi.data.loading import ImageData, fixed_inputs, fixed_subset
from smvi.progress import Progress, note
from smvi.settings.stages import EvalConfig
from smvi.stages.trained import check_inputs, holds_run_lock, open_stage
from smvi.store.records import (
    EvalPartial,
    EvalRecord,
    EvalSplit,
    FullTestIWAE,
    PartialSplit,
    PerImage,
    make_header,
    nums,
)
from smvi.store.rundir import RunError
from smvi.store.stats import mean_se

__all__ = ["EvalConfig", "evaluate_run", "evaluation_set", "evaluation_indices", "full_test_set"]

_REST_SEED = 0x5E7  # offsets the binarization seed of the test images outside the subset


def evaluation_indices(n_images: int, n: int, subset_seed: int) -> torch.Tensor:
    """The indices of the fixed evaluation subset of ``n`` of ``n_images`` images."""
    return fixed_subset(n_images, n, subset_seed)


def evaluation_set(
    images: torch.Tensor, n: int, subset_seed: int, binarize_seed: int, transform: str = "binarize"
) -> torch.Tensor:
    """A fixed subset of ``n`` images, binarized (or dequantized: ``transform``, the run's ``data.transform``) once
    with ``binarize_seed``: the same inputs for every estimator and every run."""
    return fixed_inputs(images[evaluation_indices(len(images), n, subset_seed)], transform, binarize_seed)


def full_test_set(
    images: torch.Tensor, n: int, subset_seed: int, binarize_seed: int, transform: str = "binarize"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``images``, binarized (or dequantized: ``transform``) once, as (indices, inputs): first the
    evaluation subset of ``n`` exactly as :func:`evaluation_set` binarizes it, then the other images (sorted) binarized
    with the seed ``binarize_seed + 0x5E7``. So a subset image is the same binary image in both, and every estimator,
    whose noise is a function of the point's values, gives it the same value."""
    idx = evaluation_indices(len(images), n, subset_seed)
    keep = torch.ones(len(images), dtype=torch.bool)
    keep[idx] = False
    rest = torch.nonzero(keep).flatten()
    x = torch.cat(
        [
            fixed_inputs(images[idx], transform, binarize_seed),
            fixed_inputs(images[rest], transform, binarize_seed + _REST_SEED),
        ]
    )
    return torch.cat([idx, rest]), x


def _full_test(
    model,
    images: torch.Tensor,
    cfg: EvalConfig,
    bseed: int,
    bar,
    saved: EvalPartial | None,
    save,
    transform: str = "binarize",
) -> FullTestIWAE:
    """IWAE with ``cfg.iwae_full_test_k`` samples on every image of the test split (see :func:`full_test_set`); the
    values in ``saved`` (a resumed evaluation) are kept, and ``save(values, seconds)`` follows every batch."""
    t = time.perf_counter()
    idx, x = full_test_set(images, cfg.n_test, cfg.subset_seed, bseed, transform)
    dev = next(model.parameters()).device
    values = [_nan(v) for v in saved.full_test] if saved else []
    before = saved.full_test_seconds if saved else 0.0
    bar.update(len(values))
    precision = resolve_precision(cfg.ais.precision, dev)
    for start in range(len(values), len(x), cfg.batch_size):
        xb = x[start : start + cfg.batch_size].to(dev)
        values += _values(iwae_bound(model, xb, k=cfg.iwae_full_test_k, seed=cfg.seed, precision=precision))
        save(values, before + time.perf_counter() - t)
        bar.update(len(xb))
    return FullTestIWAE(
        k=cfg.iwae_full_test_k,
        n=len(values),
        precision=precision,
        indices=idx.tolist(),
        iwae=mean_se(values),
        per_image=nums(values),
        seconds=round(before + time.perf_counter() - t, 2),
    )


def _values(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.double().cpu()]


def _nan(v: float | None) -> float:
    """A saved value back as a float: non-finite ones were stored as null (they count the same in every mean)."""
    return math.nan if v is None else v


_COLUMNS = ("elbo", "d_sm", "iwae", "ais", "acceptance", "ess")


def _score_split(
    model, x: torch.Tensor, idx: torch.Tensor, cfg: EvalConfig, bar, saved: PartialSplit | None, save
) -> EvalSplit:
    """Per-point estimates on one split, with their means and standard errors across points. The points in
    ``saved`` (a resumed evaluation: the first ones, in order) are not scored again; ``save(progress)`` follows every
    batch with the split's :class:`~smvi.store.records.PartialSplit` so far."""
    t = time.perf_counter()
    saved = saved or PartialSplit(iwae=[] if cfg.iwae_k else None)
    cols = {k: [_nan(v) for v in getattr(saved, k)] for k in _COLUMNS if getattr(saved, k) is not None}
    bar.update(len(cols["ais"]))
    for start in range(len(cols["ais"]), len(x), cfg.batch_size):
        xb = x[start : start + cfg.batch_size]
        cols["elbo"] += _values(elbo_per_point(model, xb, n_samples=cfg.elbo_samples, seed=cfg.seed))
        cols["d_sm"] += _values(d_sm_per_point(model, xb, n_samples=cfg.dsm_samples, seed=cfg.seed))
        if cfg.iwae_k:
            cols["iwae"] += _values(iwae_bound(model, xb, k=cfg.iwae_k, seed=cfg.seed, precision=cfg.ais.precision))
        r = ais(model, xb, **cfg.ais.kwargs(), seed=cfg.seed)
        cols["ais"] += _values(r.log_px)
        cols["acceptance"] += _values(r.acceptance_per_point)
        cols["ess"] += _values(r.ess)
        save(PartialSplit(**{k: nums(v) for k, v in cols.items()}, seconds=saved.seconds + time.perf_counter() - t))
        bar.update(len(xb))
    gap = [a - e for a, e in zip(cols["ais"], cols["elbo"], strict=True)]
    gap_iwae = [i - e for i, e in zip(cols["iwae"], cols["elbo"], strict=True)] if "iwae" in cols else None
    return EvalSplit(
        n=len(x),
        indices=[int(i) for i in idx],
        elbo=mean_se(cols["elbo"]),
        d_sm=mean_se(cols["d_sm"]),
        iwae=mean_se(cols["iwae"]) if "iwae" in cols else None,
        ais=mean_se(cols["ais"]),
        gap=mean_se(gap),
        gap_iwae=mean_se(gap_iwae) if gap_iwae is not None else None,
        ais_acceptance=float(torch.tensor(cols["acceptance"], dtype=torch.float64).mean()),
        ais_ess=mean_se(cols["ess"]),
        per_image=PerImage(
            elbo=nums(cols["elbo"]),
            d_sm=nums(cols["d_sm"]),
            ais=nums(cols["ais"]),
            gap=nums(gap),
            iwae=nums(cols["iwae"]) if "iwae" in cols else None,
        ),
        seconds=round(saved.seconds + time.perf_counter() - t, 2),
    )


@holds_run_lock
def evaluate_run(
    run_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    other_data: bool = False,
) -> EvalRecord:
    """Evaluate a trained run and write its eval record (atomically); returns the record as written.

    Checked before any work: the run (config, checkpoint and their identity), an existing record (an error unless
    ``overwrite``) and that the directory is writable. A failed write is one-line :class:`~smvi.store.rundir.RunError`.
    The arguments are checked and ``cfg`` validated anew first (:func:`~smvi.stages.trained.check_inputs`); the data
    must be the run's training data unless ``other_data`` (then the record's header names it).
    """
    cfg = check_inputs(run_dir, cfg, EvalConfig, data=data, device=device)
    rd, run, data = open_stage(run_dir, "eval", data=data, overwrite=overwrite, device=device, other_data=other_data)
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
    label = f"evaluate {rd.path.name}"
    saved = _resume(rd, cfg, label, progress)
    progress_now = {
        "splits": dict(saved.splits) if saved else {},
        "full_test": saved.full_test if saved else [],
        "full_test_seconds": saved.full_test_seconds if saved else 0.0,
    }

    header = make_header(
        "eval_partial", run.fingerprint, run.epoch, cfg, device=str(dev), data=run.other_data
    )  # once: host info is read

    def save(**update) -> None:
        progress_now.update(update)
        rd.write_partial("eval", EvalPartial(header=header, **progress_now))

    scored = {}
    with Progress(label, total + n_full, unit="image", enabled=progress) as bar:
        for name, (idx, x) in splits.items():
            bar.relabel(f"{label}: {name} split (ELBO, D_SM, IWAE, AIS)")
            scored[name] = _score_split(
                run.model,
                x.to(dev),
                idx,
                cfg,
                bar,
                progress_now["splits"].get(name),
                lambda part, name=name: save(splits={**progress_now["splits"], name: part}),
            )
        if n_full:
            bar.relabel(f"{label}: whole test set (IWAE k={cfg.iwae_full_test_k})")
        full = (
            _full_test(
                run.model,
                data.test_x,
                cfg,
                bseed,
                bar,
                saved,
                lambda values, seconds: save(full_test=values, full_test_seconds=seconds),
                run.config.data.transform,
            )
            if n_full
            else None
        )
    a = cfg.ais
    before = sum(p.seconds for p in saved.splits.values()) + saved.full_test_seconds if saved else 0.0
    record = EvalRecord(
        header=make_header("eval", run.fingerprint, run.epoch, cfg, device=str(dev), data=run.other_data),
        run=rd.path.name,
        lam=run.config.train.lam,
        splits=scored,
        full_test=full,
        seconds=round(before + time.perf_counter() - t0, 2),
        precision=resolve_precision(a.precision, dev) if a.precision == "auto" else None,
        notes=[
            f"{name} split: {why}"
            for name, s in scored.items()
            if (why := off_target(s.ais_acceptance, adapt=a.adapt, steps=a.steps)) is not None
        ],
        work={
            "points": total,
            "chains": a.chains,
            "steps": a.steps,
            "leapfrog_steps": a.leapfrog_steps,
            "gradient_evaluations": total * a.chains * a.steps * a.leapfrog_steps,
        },
    )
    written = rd.write_record("eval", record)
    rd.drop_partial("eval")
    return written


def _resume(rd, cfg: EvalConfig, label: str, progress: bool) -> EvalPartial | None:
    """The evaluation's saved progress when it can be continued (same run, epoch and settings), else None; says
    which it is in one line."""
    saved, why = rd.read_partial("eval", cfg)
    if saved is not None:
        done = sum(len(p.ais) for p in saved.splits.values()) + len(saved.full_test)
        note(f"{label}: resuming, {done} images already scored ({rd.partial_path('eval').name})", progress)
    elif why != "missing":
        note(f"{label}: {rd.partial_path('eval').name} not used ({why}); starting over", progress)
    return saved
