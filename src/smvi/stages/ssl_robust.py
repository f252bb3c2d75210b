"""The robust SSL protocol (``ssl.protocol = "robust"``) and the features file it scores, which any classifier can be
re-run on without the checkpoint (:func:`rescore`).

Protocol, for every labeled-set size s and label subset i (``seeds``, 20 by default):

1. Labeled set: :func:`~smvi.stages.ssl.balanced_subset` of the training labels with seed i: the same sets for every
   run (they depend on the labels and i only), nested in s for one i.
2. Features: the encoder means μ_φ(x), centred and scaled with the moments of all training images' means (the
   unlabeled data; ``scaling`` as in the paper protocol).
3. Every classifier of :data:`~smvi.stages.ssl_classifiers.CLASSIFIERS` (RBF SVM, logistic regression, k-NN) chooses
   its hyper-parameters by stratified ``cv_folds``-fold CV inside the s labeled examples, on a grid that grows until
   the choice is interior (:func:`~smvi.stages.ssl_classifiers.grid_search`), and is refit on them; its test
   accuracy is one row of the result table, with the chosen values and whether each lies on the grid's edge.

**The features file** (``ssl_features.npz`` in the run, :meth:`smvi.store.rundir.RunDir.array_path`; named with its
SHA-256 in the record's ``features_file``) holds, as plain arrays (read without unpickling: numpy's default):
``train_labels`` (all training labels, from which the subsets are drawn), ``train_index`` / ``train_x`` (float32 ``[n,
d]``: the means of every image some labeled set uses), ``test_index`` / ``test_x`` / ``test_y`` (the scored test
images), ``unlabeled_mean`` and ``unlabeled_var`` (float64 ``[d]``: the moments of all training means, for the scaling),
and ``inputs`` (what the encoder saw). The stage scores the file it wrote, so its record is exactly what :func:`rescore`
gives.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smvi.progress import Progress, label_of
from smvi.stages.ssl import SSLConfig, SSLError, balanced_subset, scores_tree
from smvi.stages.ssl_classifiers import CLASSIFIERS, Fit
from smvi.store.records import SSLFeaturesFile, SSLFit, SSLRecord, SSLScores, make_header

__all__ = [
    "SSLFeatures",
    "FeaturesError",
    "RobustResult",
    "protocol_images",
    "robust_protocol",
    "rescore",
    "score",
    "robust_record",
    "write_and_score",
    "FEATURE_ARRAYS",
]

FEATURE_ARRAYS = (
    "train_labels",
    "train_index",
    "train_x",
    "test_index",
    "test_x",
    "test_y",
    "unlabeled_mean",
    "unlabeled_var",
    "inputs",
)


class FeaturesError(SSLError):
    """A features file that cannot be scored as asked (damaged, another digest, missing images); one line."""


@dataclass(frozen=True)
class SSLFeatures:
    """The arrays of a features file (module docstring); ``train_x`` / ``test_x`` are float32."""

    train_labels: np.ndarray
    train_index: np.ndarray
    train_x: np.ndarray
    test_index: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    unlabeled_mean: np.ndarray
    unlabeled_var: np.ndarray
    inputs: str

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes (uncompressed: float means barely compress)."""
        buf = io.BytesIO()
        arrays = {k: np.asarray(getattr(self, k)) for k in FEATURE_ARRAYS}
        np.savez(buf, **arrays)  # pyright: ignore[reportArgumentType]  # numpy's stub types **kwds as its own keywords
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "features file") -> SSLFeatures:
        try:
            with np.load(io.BytesIO(data)) as z:  # numpy's default: no pickled objects
                missing = [k for k in FEATURE_ARRAYS if k not in z.files]
                if missing:
                    raise ValueError(f"no {missing[0]} array")
                arrays = {k: z[k] for k in FEATURE_ARRAYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise FeaturesError(
                f"{source}: not an smvi features file ({e}); recompute it with smvi ssl --overwrite"
            ) from None
        f = cls(**{**arrays, "inputs": str(arrays["inputs"])})
        d = f.train_x.shape[1] if f.train_x.ndim == 2 else -1
        if (
            f.test_x.ndim != 2
            or f.test_x.shape[1] != d
            or len(f.train_index) != len(f.train_x)
            or not len(f.test_index) == len(f.test_x) == len(f.test_y)
            or f.unlabeled_mean.shape != (d,)
        ):
            raise FeaturesError(f"{source}: arrays of inconsistent shapes; recompute it with smvi ssl --overwrite")
        return f


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def protocol_images(train_labels: np.ndarray, sizes, seeds) -> np.ndarray:
    """Sorted indices of every training image some labeled set (s ∈ ``sizes``, subset ∈ ``seeds``) uses."""
    return np.unique(np.concatenate([balanced_subset(train_labels, s, i) for s in sizes for i in seeds]))


@dataclass(frozen=True)
class RobustResult:
    """The result table: one :class:`~smvi.stages.ssl_classifiers.Fit` per (classifier, s, subset), in ``rows`` as
    ``(classifier, s, subset, fit)``; ``n_train`` stored training means, ``n_test`` scored test images, ``n_features``
    d."""

    rows: tuple[tuple[str, int, int, Fit], ...]
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    n_train: int
    n_test: int
    n_features: int
    seconds: float

    def table(self) -> list[dict[str, Any]]:
        """The rows as JSON-ready dicts (:class:`smvi.store.records.SSLFit`)."""
        return [
            {
                "classifier": c,
                "size": s,
                "subset": i,
                "accuracy": f.accuracy,
                "cv_accuracy": f.cv_accuracy,
                "params": f.params,
                "on_edge": f.on_edge,
                "searched": {k: list(v) for k, v in f.searched.items()},
            }
            for c, s, i, f in self.rows
        ]

    def svm_scores(self) -> dict[str, Any]:
        """The RBF SVM's rows in the paper protocol's shape (:class:`smvi.store.records.SSLScores`, subsets as its
        seeds, ``gamma`` absolute = γ·d / d), so readers of the paper protocol's records read this one too."""
        by = {(s, i): f for c, s, i, f in self.rows if c == "rbf_svm"}
        sizes = {}
        for s in self.sizes:
            fits = [by[s, i] for i in self.seeds]
            acc = np.array([f.accuracy for f in fits])
            sizes[str(s)] = {
                "mean": float(acc.mean()),
                "std": float(acc.std(ddof=1 if len(acc) > 1 else 0)),
                "accuracy": acc.tolist(),
                "C": [f.params["C"] for f in fits],
                "gamma": [f.params["gamma_d"] / self.n_features for f in fits],
                "cv_accuracy": [f.cv_accuracy for f in fits],
            }
        return scores_tree(self, sizes)


def _scaler(mean: np.ndarray, var: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray | float]:
    """(centre, scale) from the unlabeled moments, as :func:`smvi.stages.ssl.feature_scaler` computes them."""
    if scaling == "standard":
        sd = np.sqrt(var)
        return mean, np.where(sd > 0, sd, 1.0)
    return mean, float(np.sqrt(var.mean())) or 1.0


def robust_protocol(
    f: SSLFeatures,
    *,
    sizes,
    seeds,
    folds: int = 3,
    scaling: str = "global",
    n_jobs: int = 1,
    progress: bool | str = False,
) -> RobustResult:
    """The protocol of the module docstring on the arrays ``f``; one task per (s, subset), run on ``n_jobs`` threads
    (results do not depend on it). :class:`FeaturesError` if ``f`` lacks an image a labeled set needs."""
    t0 = time.perf_counter()
    centre, scale = _scaler(f.unlabeled_mean, f.unlabeled_var, scaling)
    test_x = (f.test_x.astype(np.float64) - centre) / scale
    classes = len(np.unique(f.train_labels))
    for s in sizes:
        if s // classes < folds:
            raise SSLError(f"labeled-set size {s} has {s // classes} examples per class, fewer than {folds} CV folds")

    def task(s: int, i: int) -> list[tuple[str, int, int, Fit]]:
        idx = balanced_subset(f.train_labels, s, i)
        pos = np.minimum(np.searchsorted(f.train_index, idx), len(f.train_index) - 1)
        if not np.array_equal(f.train_index[pos], idx):
            raise FeaturesError(
                f"the features file lacks images of the labeled set s={s}, subset {i}: recompute it "
                "with these sizes and seeds (smvi ssl --overwrite)"
            )
        x, y = (f.train_x[pos].astype(np.float64) - centre) / scale, f.train_labels[idx]
        return [(name, s, i, fn(x, y, test_x, f.test_y, folds=folds, seed=i)) for name, fn in CLASSIFIERS.items()]

    tasks = [(s, i) for s in sizes for i in seeds]
    with (
        ThreadPoolExecutor(n_jobs) as pool,  # libsvm, lbfgs and BLAS release the GIL
        Progress(label_of(progress, "ssl"), len(tasks), unit="labeled set", enabled=bool(progress)) as bar,
    ):
        futures = [pool.submit(task, *t) for t in tasks]
        rows = []
        for fut in futures:
            rows += fut.result()
            bar.update(1)
    return RobustResult(
        tuple(rows),
        tuple(sizes),
        tuple(seeds),
        len(f.train_x),
        len(f.test_x),
        f.train_x.shape[1],
        time.perf_counter() - t0,
    )


def rescore(
    features_file: str | Path,
    cfg: SSLConfig | None = None,
    *,
    sha256_hex: str | None = None,
    progress: bool | str = False,
) -> RobustResult:
    """The robust protocol run from a saved features file alone (no checkpoint, no data): ``cfg`` an
    :class:`~smvi.stages.ssl.SSLConfig` (its sizes, seeds, cv_folds, scaling, n_jobs; default: the robust defaults),
    ``sha256_hex`` the digest the file must have (the record's ``features_file.sha256``; unchecked when None)."""
    cfg = cfg if cfg is not None else SSLConfig(protocol="robust")
    path = Path(features_file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FeaturesError(f"cannot read {path} ({e.strerror or e}); check the path") from None
    if sha256_hex is not None and sha256(data) != sha256_hex:
        raise FeaturesError(
            f"{path} is not the features file its record names (SHA-256 differs); recompute it with "
            "smvi ssl --overwrite"
        )
    f = SSLFeatures.from_bytes(data, str(path))
    if f.inputs != cfg.inputs:
        raise FeaturesError(
            f"{path} holds the means of {f.inputs} inputs but ssl.inputs is {cfg.inputs!r}: "
            f"set ssl.inputs={f.inputs!r} or recompute the features"
        )
    return score(f, cfg, progress=progress)


def score(f: SSLFeatures, config: SSLConfig, *, progress: bool | str = False) -> RobustResult:
    """:func:`robust_protocol` on ``f`` with the settings of ``config`` (sizes, subset seeds, CV folds, scaling,
    threads): the one place an SSL config's keys become the protocol's arguments."""
    return robust_protocol(
        f,
        sizes=config.sizes,
        seeds=config.seeds,
        folds=config.cv_folds,
        scaling=config.scaling,
        n_jobs=config.n_jobs,
        progress=progress,
    )


def write_and_score(
    rd, which: str, feats: SSLFeatures, config: SSLConfig, *, progress: bool | str = False
) -> tuple[SSLFeaturesFile, RobustResult]:
    """Write ``feats`` as the run's array file ``which`` and score *that file's* arrays with the protocol of
    ``config``, so the file a record names is exactly what its table was computed from; returns the file's record
    entry and the result."""
    data = feats.to_bytes()
    rd.write_array(which, data)
    result = score(SSLFeatures.from_bytes(data), config, progress=progress)
    entry = SSLFeaturesFile(
        file=rd.array_path(which).name,
        sha256=sha256(data),
        n_train=result.n_train,
        n_test=result.n_test,
        n_features=result.n_features,
    )
    return entry, result


def robust_record(
    rd,
    run,
    config: SSLConfig,
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_index: np.ndarray,
    test_labels: np.ndarray,
    *,
    progress: bool | str,
    seconds_before: float,
) -> SSLRecord:
    """The ssl stage's robust branch (:func:`smvi.stages.ssl.ssl_run` has loaded the run and encoded every image):
    write the features file (all training means' moments, the means of the images the labeled sets use, the scored
    test means), score *that file's* arrays and write the record naming it."""
    t0 = time.perf_counter()
    keep = protocol_images(train_labels, config.sizes, config.seeds)
    feats = SSLFeatures(
        train_labels=train_labels,
        train_index=keep,
        train_x=train_feats[keep].astype(np.float32),
        test_index=np.asarray(test_index),
        test_x=test_feats.astype(np.float32),
        test_y=test_labels,
        unlabeled_mean=train_feats.mean(0),
        unlabeled_var=train_feats.var(0),
        inputs=config.inputs,
    )
    features_file, result = write_and_score(rd, "ssl_features", feats, config, progress=progress)
    record = SSLRecord(
        header=make_header("ssl", run.fingerprint, run.epoch, config, device=str(next(run.model.parameters()).device)),
        run={"lam": run.config.train.lam, "seed": run.config.train.seed},
        features=SSLScores.model_validate(result.svm_scores()),
        features_file=features_file,
        table=[SSLFit.model_validate(row) for row in result.table()],
        seconds=round(seconds_before + time.perf_counter() - t0, 3),
    )
    return rd.write_record("ssl", record)
