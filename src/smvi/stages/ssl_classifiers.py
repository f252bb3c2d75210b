"""The robust SSL protocol's classifiers: one function per classifier, each choosing its hyper-parameters by stratified
cross-validation inside the s labeled examples only, on a grid that grows until the choice is interior.

Every classifier has the signature ``(x, y, test_x, test_y, *, folds, seed) -> Fit``: ``x`` ``[s, d]`` and ``y``
``[s]`` are the labeled examples (already scaled), ``test_x`` ``[m, d]`` / ``test_y`` ``[m]`` are used only for the
final accuracy. :data:`CLASSIFIERS` registers them by name; adding one is a function and a dict entry.

**Growing grid** (:func:`grid_search`). Each hyper-parameter has a fixed ordered list of values (:class:`Axis`) and a
starting window inside it. The mean CV accuracy is computed on the window; when the best point lies on a window
edge that the list extends past, the window grows by one value in that direction and the new points are scored;
this repeats until the best point is interior or at the end of the list. Ties go to the smaller index on each axis
in turn (smaller C, then smaller γ; smaller k). :attr:`Fit.on_edge` says, per hyper-parameter, whether the choice
is at an end of the whole list (other than a natural bound such as k = 1): the grid was not wide enough there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

__all__ = [
    "Axis",
    "Fit",
    "grid_search",
    "rbf_svm",
    "logistic",
    "knn",
    "CLASSIFIERS",
    "SVM_C",
    "SVM_GAMMA",
    "LOGISTIC_C",
    "KNN_K",
]


@dataclass(frozen=True)
class Axis:
    """One hyper-parameter: its whole ordered grid ``values``, the window ``start`` (first, last index) searched
    first, and whether ``values[0]`` is a natural bound (``floor``: choosing it is not an edge, e.g. k = 1)."""

    name: str
    values: tuple[float, ...]
    start: tuple[int, int]
    floor: bool = False


def _decades(lo: float, hi: float, per_decade: int) -> tuple[float, ...]:
    """10^(i/per_decade) from 10^lo to 10^hi, rounded to 6 significant digits so values print and compare cleanly."""
    return tuple(
        float(f"{10 ** (i / per_decade):.6g}") for i in range(round(lo * per_decade), round(hi * per_decade) + 1)
    )


SVM_C = Axis("C", _decades(-2, 6, 2), (5, 7))  # 0.01 … 10⁶; starts at 3.16 … 31.6 (inside the paper's 1 … 100)
SVM_GAMMA = Axis("gamma_d", _decades(-4, 2, 2), (7, 9))  # γ·d, 10⁻⁴ … 100; starts at 0.316 … 3.16
LOGISTIC_C = Axis("C", _decades(-4, 6, 2), (6, 8))  # 10⁻⁴ … 10⁶; starts at 0.1 … 1
KNN_K = Axis("k", (1.0, 3.0, 5.0, 7.0, 9.0, 13.0, 19.0, 27.0, 39.0, 55.0), (0, 9), floor=True)


@dataclass(frozen=True)
class Fit:
    """One classifier on one labeled set: the chosen ``params`` (by axis name), their mean CV ``cv_accuracy``, the
    test ``accuracy`` of the refit, ``on_edge`` per axis (see the module docstring) and the ``searched`` range
    ``[first, last]`` value of each axis's final window."""

    params: dict[str, float]
    cv_accuracy: float
    accuracy: float
    on_edge: dict[str, bool]
    searched: dict[str, tuple[float, float]]


def grid_search(score: Callable[..., float], axes: tuple[Axis, ...]) -> tuple[tuple[int, ...], float, list[list[int]]]:
    """The index tuple maximizing ``score(*values)`` by the growing-grid rule (module docstring), its score and the
    final window per axis (``[first, last]`` indices). ``score`` is called once per point."""
    window = [list(a.start) for a in axes]
    seen: dict[tuple[int, ...], float] = {}
    while True:
        for idx in product(*[range(lo, hi + 1) for lo, hi in window]):
            if idx not in seen:
                seen[idx] = score(*[a.values[i] for a, i in zip(axes, idx, strict=True)])
        inside = [i for i in seen if all(lo <= j <= hi for j, (lo, hi) in zip(i, window, strict=True))]
        best = min(inside, key=lambda i: (-seen[i], *i))
        grown = False
        for k, (a, (lo, hi)) in enumerate(zip(axes, window, strict=True)):
            if best[k] == lo and lo > 0:
                window[k][0] -= 1
                grown = True
            elif best[k] == hi and hi < len(a.values) - 1:
                window[k][1] += 1
                grown = True
        if not grown:
            return best, seen[best], window


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold  # imported here: keeps `smvi --help` fast

    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _select(axes: tuple[Axis, ...], cv: Callable[..., float], refit: Callable[..., float]) -> Fit:
    """Grid-search ``cv`` over ``axes``, then ``refit`` at the choice; packs a :class:`Fit`."""
    best, cv_acc, window = grid_search(cv, axes)
    values = [a.values[i] for a, i in zip(axes, best, strict=True)]
    on_edge = {a.name: (i == len(a.values) - 1) or (i == 0 and not a.floor) for a, i in zip(axes, best, strict=True)}
    searched = {a.name: (a.values[lo], a.values[hi]) for a, (lo, hi) in zip(axes, window, strict=True)}
    return Fit(dict(zip([a.name for a in axes], values, strict=True)), cv_acc, refit(*values), on_edge, searched)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """‖a_i − b_j‖², ``[len(a), len(b)]``, clipped at 0 against round-off."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T), 0.0)


def _chunked_accuracy(predict: Callable[[np.ndarray], np.ndarray], test_x, test_y, chunk: int = 2000) -> float:
    hits = sum(
        int((predict(test_x[i : i + chunk]) == test_y[i : i + chunk]).sum()) for i in range(0, len(test_x), chunk)
    )
    return hits / len(test_x)


def rbf_svm(x, y, test_x, test_y, *, folds: int, seed: int) -> Fit:
    """The paper's classifier: an SVM with k(f, f') = exp(−γ‖f − f'‖²), γ = ``gamma_d``/d, over :data:`SVM_C` ×
    :data:`SVM_GAMMA` (kernels precomputed once per γ)."""
    from sklearn.svm import SVC

    d2, splits, kernels = _sq_dists(x, x), _folds(y, folds, seed), {}

    def kernel(gamma_d):
        if gamma_d not in kernels:
            kernels[gamma_d] = np.exp(-(gamma_d / x.shape[1]) * d2)
        return kernels[gamma_d]

    def cv(C, gamma_d):
        k = kernel(gamma_d)
        return float(
            np.mean(
                [
                    np.mean(
                        SVC(C=C, kernel="precomputed").fit(k[np.ix_(tr, tr)], y[tr]).predict(k[np.ix_(va, tr)]) == y[va]
                    )
                    for tr, va in splits
                ]
            )
        )

    def refit(C, gamma_d):
        svm = SVC(C=C, kernel="precomputed").fit(kernel(gamma_d), y)
        return _chunked_accuracy(
            lambda t: svm.predict(np.exp(-(gamma_d / x.shape[1]) * _sq_dists(t, x))), test_x, test_y
        )

    return _select((SVM_C, SVM_GAMMA), cv, refit)


def logistic(x, y, test_x, test_y, *, folds: int, seed: int) -> Fit:
    """A linear classifier: multinomial logistic regression with an L2 penalty of strength 1/C (lbfgs), over
    :data:`LOGISTIC_C`."""
    from sklearn.linear_model import LogisticRegression

    splits = _folds(y, folds, seed)

    def model(C):
        return LogisticRegression(C=C, max_iter=1000)

    def cv(C):
        return float(np.mean([np.mean(model(C).fit(x[tr], y[tr]).predict(x[va]) == y[va]) for tr, va in splits]))

    def refit(C):
        return _chunked_accuracy(model(C).fit(x, y).predict, test_x, test_y)

    return _select((LOGISTIC_C,), cv, refit)


def _knn_predictions(train_x, train_y, x, ks: tuple[int, ...], chunk: int = 2000) -> dict[int, np.ndarray]:
    """Labels predicted for ``x`` by k nearest neighbours in ``train_x`` for every k in ``ks`` (one distance matrix
    and one sort for all of them): a uniform majority vote, a tied vote going to the smallest label."""
    labels = np.unique(train_y)
    kmax = max(ks)
    out: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for i in range(0, len(x), chunk):
        d2 = _sq_dists(x[i : i + chunk], train_x)
        part = np.argpartition(d2, kmax - 1, axis=1)[:, :kmax] if kmax < d2.shape[1] else np.argsort(d2, axis=1)
        near = np.take_along_axis(part, np.argsort(np.take_along_axis(d2, part, 1), axis=1, kind="stable"), 1)
        onehot = train_y[near][:, :, None] == labels[None, None, :]  # [m, kmax, classes]
        counts = np.cumsum(onehot, axis=1)
        for k in ks:
            out[k].append(labels[counts[:, k - 1].argmax(1)])
    return {k: np.concatenate(v) for k, v in out.items()}


def knn(x, y, test_x, test_y, *, folds: int, seed: int) -> Fit:
    """k nearest neighbours (Euclidean, uniform majority vote, a tied vote to the smallest label), over
    :data:`KNN_K` (capped by the smallest training fold)."""
    splits = _folds(y, folds, seed)
    ks = tuple(int(k) for k in KNN_K.values if k <= min(len(tr) for tr, _ in splits))
    hits = [{k: p == y[va] for k, p in _knn_predictions(x[tr], y[tr], x[va], ks).items()} for tr, va in splits]

    def cv(k):
        return float(np.mean([np.mean(h[int(k)]) for h in hits]))

    def refit(k):
        return float(np.mean(_knn_predictions(x, y, test_x, (int(k),))[int(k)] == test_y))

    axis = Axis(KNN_K.name, tuple(float(k) for k in ks), (0, len(ks) - 1), floor=True)
    return _select((axis,), cv, refit)


CLASSIFIERS: dict[str, Callable[..., Fit]] = {"rbf_svm": rbf_svm, "logistic": logistic, "knn": knn}
"""The robust protocol's classifiers, by the name its records use."""
