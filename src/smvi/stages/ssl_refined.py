"""Better inference at test time only: the robust SSL protocol on per-image refined posteriors (issue 25's control).

For every image a labeled set or the scored test subset uses, :func:`refine_means` runs the gap split's local fit
(:func:`smvi.stages.gaps.fit_local`: Adam on that image's own ELBO over the free parameters of the model's family,
starting from the encoder's q, ``steps`` steps, cosine-decayed learning rate) and keeps the refined q's mean (its
:func:`~smvi.core.families.location`). The model, its encoder and the images are unchanged; only the inference is
better — by the ELBO gain the record reports, on 64 fixed draws per image (common random numbers; part of the
amortization gap: ``benchmarks/refined_q_budget.py`` measures how much a step count closes).

:func:`ssl_refined_run` then scores two feature sets with :func:`~smvi.stages.ssl_robust.robust_protocol`, on the same
images, label subsets and scaling: the encoder means μ_φ(x) and the refined means. Both are centred and scaled with
the moments of the encoder means of *all* training images (the unlabeled data; refining all 60,000 would cost more
than the rest together), so the two sets differ only in the features of the images scored. The binarizations are the
ssl stage's (test: the run's ``data.eval_seed``; training: ``eval_seed + 1``), so ``encoder`` holds the same values as
the rows of the run's own ``ssl_features.npz``. Both feature sets are saved
(:class:`~smvi.stages.ssl_robust.SSLFeatures` files, named with their SHA-256 in the record), so either can be
rescored without the checkpoint (:func:`~smvi.stages.ssl_robust.rescore`).

The gain of refinement is the paired difference refined − encoder of each (classifier, s, subset) accuracy. Within one
run the label subsets are its unit; across runs (``smvi ssl-study``), the training seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smvi.core.families import location
from smvi.data.loading import ImageData, fixed_subset
from smvi.progress import Progress, label_of, note
from smvi.settings.stages import RefinedSSLConfig
from smvi.stages.gaps import fit_local
from smvi.stages.ssl import encoder_features, prepare_inputs
from smvi.stages.ssl_robust import SSLFeatures, protocol_images, write_and_score
from smvi.stages.trained import check_inputs, holds_run_lock, open_stage
from smvi.store.records import (
    RefinedFit,
    RefinedSSLRecord,
    SSLFeatureSet,
    SSLFit,
    make_header,
    nums,
)
from smvi.store.rundir import RunError
from smvi.store.stats import mean_se

__all__ = ["RefinedSSLConfig", "Refined", "refine_means", "ssl_refined_run"]


@dataclass(frozen=True)
class Refined:
    """What :func:`refine_means` found: ``means`` ``[n, z_dim]`` (float64) of the refined q's, each image's ELBO
    ``gain`` ``[n]`` over the encoder's q (nats, on fit_local's 64 fixed draws), ``skipped`` non-finite steps over all
    batches, ``seconds``."""

    means: np.ndarray
    gain: np.ndarray
    skipped: int
    seconds: float


def refine_means(
    model,
    x: torch.Tensor,
    *,
    steps: int,
    lr: float = 1e-2,
    n_samples: int = 16,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool | str = False,
) -> Refined:
    """The means of per-image refined posteriors of the images ``x`` ``[n, x_dim]`` (as the encoder sees them), each
    :func:`~smvi.stages.gaps.fit_local` for ``steps`` steps from the encoder's q, in batches of ``batch_size`` images
    (batch b draws with seed ``seed + b``; images share nothing but the schedule, so the result does not depend on
    the batching beyond the draws). Runs on the model's device."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    means, gains, skipped = [], [], 0
    starts = range(0, len(x), batch_size)
    with Progress(label_of(progress, "refine"), len(x), unit="image", enabled=bool(progress)) as bar:
        for b, i in enumerate(starts):
            xb = x[i : i + batch_size].to(device)
            # window = steps: the one check compares the end with the start, so last_gain is the whole fit's gain
            fit = fit_local(model, xb, steps=steps, lr=lr, n_samples=n_samples, window=steps, seed=seed + b)
            means.append(location(fit.q).detach().double().cpu())
            gains.append(fit.last_gain.detach().double().cpu())
            skipped += fit.skipped
            bar.update(len(xb))
    return Refined(torch.cat(means).numpy(), torch.cat(gains).numpy(), skipped, time.perf_counter() - t0)


def _feature_set(rd, which: str, feats: SSLFeatures, cfg: RefinedSSLConfig, progress) -> SSLFeatureSet:
    """Write ``feats`` as the run's array file ``which``, score that file's arrays with the robust protocol."""
    features_file, result = write_and_score(rd, which, feats, cfg.protocol(), progress=progress)
    return SSLFeatureSet(features_file=features_file, table=[SSLFit.model_validate(r) for r in result.table()])


@holds_run_lock
def ssl_refined_run(
    run_dir: str | Path,
    cfg: RefinedSSLConfig = RefinedSSLConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    other_data: bool = False,
) -> RefinedSSLRecord:
    """The module docstring's comparison for a trained run; writes its :class:`~smvi.store.records.RefinedSSLRecord`
    (``ssl_refined.json``) and the two features files atomically, and returns the record as written. The run, an
    existing record (an error unless ``overwrite``) and the directory's writability are checked before any work.
    The local fits run on ``device`` (a GPU when there is one, for ``auto``); the classifiers on the CPU."""
    t0 = time.perf_counter()
    cfg = check_inputs(run_dir, cfg, RefinedSSLConfig, data=data, device=device, what="config")
    rd, run, data = open_stage(
        run_dir, "ssl_refined", data=data, overwrite=overwrite, device=device, other_data=other_data
    )
    ssl = cfg.protocol()
    if ssl.test_size and ssl.test_size > len(data.test_x):
        raise RunError(f"test_size = {ssl.test_size} but the test split has {len(data.test_x)} images; lower it")
    seed, transform = run.config.data.eval_seed, run.config.data.transform
    test_idx = fixed_subset(len(data.test_x), ssl.test_size or len(data.test_x), seed).numpy()
    train_y = data.train_y.numpy()
    keep = protocol_images(train_y, ssl.sizes, ssl.seeds)
    label = f"ssl-refined {rd.path.name}"
    note(f"{label}: encoding {len(data.train_x)} + {len(test_idx)} images", progress)
    encode = lambda images, s: encoder_features(run.model, images, seed=s, transform=transform)  # noqa: E731
    f_train, f_test = encode(data.train_x, seed + 1), encode(data.test_x, seed)[test_idx]
    x = torch.cat(
        [
            prepare_inputs(data.train_x, "binarized", seed + 1, transform)[torch.from_numpy(keep)],
            prepare_inputs(data.test_x, "binarized", seed, transform)[torch.from_numpy(test_idx)],
        ]
    )
    note(f"{label}: refining {len(x)} posteriors ({cfg.steps} steps each)", progress)
    refined = refine_means(
        run.model,
        x,
        steps=cfg.steps,
        lr=cfg.lr,
        n_samples=cfg.n_samples,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=progress and f"{label}: local fits",
    )

    def features(train_x: np.ndarray, test_x: np.ndarray) -> SSLFeatures:
        return SSLFeatures(
            train_labels=train_y,
            train_index=keep,
            train_x=train_x.astype(np.float32),
            test_index=test_idx,
            test_x=test_x.astype(np.float32),
            test_y=data.test_y[torch.from_numpy(test_idx)].numpy(),
            unlabeled_mean=f_train.mean(0),
            unlabeled_var=f_train.var(0),
            inputs="binarized",
        )

    sets = {
        name: _feature_set(rd, f"ssl_refined_{name}", features(tr, te), cfg, progress and f"{label}: {name} means")
        for name, tr, te in (
            ("encoder", f_train[keep], f_test),
            ("refined", refined.means[: len(keep)], refined.means[len(keep) :]),
        )
    }
    gain = mean_se(refined.gain.tolist())
    q05, q50, q95 = np.quantile(refined.gain, [0.05, 0.5, 0.95]).tolist()
    record = RefinedSSLRecord(
        header=make_header(
            "ssl_refined",
            run.fingerprint,
            run.epoch,
            cfg,
            device=str(next(run.model.parameters()).device),
            data=run.other_data,
        ),
        run={"lam": run.config.train.lam, "seed": run.config.train.seed},
        fit=RefinedFit(
            images=len(x),
            gain=gain,
            gain_quantiles=dict(zip(("q05", "q50", "q95"), nums([q05, q50, q95]), strict=True)),
            skipped=refined.skipped,
            seconds=round(refined.seconds, 3),
        ),
        encoder=sets["encoder"],
        refined=sets["refined"],
        seconds=round(time.perf_counter() - t0, 3),
    )
    return rd.write_record("ssl_refined", record)
