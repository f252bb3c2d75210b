"""Summary statistics shared by every stage and the report (torch-free).

One convention everywhere: the standard error of a mean of n values is ``std(ddof=1) / sqrt(n)``, and is undefined
(``None``, written as JSON ``null``) for n < 2 -- a single value says nothing about its own spread. Non-finite values
are not summarized silently: :func:`mean_se` drops them and counts them in ``n_nonfinite``.

Paired comparisons (one λ against λ = 0 on the same images, seeds or label subsets) use :func:`paired_t`: the mean
difference ± SE, a Student-t confidence interval and the two-sided one-sample t-test of "mean difference = 0"
(``scipy.stats``). When differences come in clusters that are not independent -- the per-image differences of one
pair of trained models, the label subsets of one training seed -- :func:`clustered_paired_t` makes the cluster the
unit (the t-test on cluster means, so model-to-model variation is counted), falling back to the values of a single
cluster when there is only one (the answer is then about those two trained models, not about λ). :func:`holm` adjusts
the p-values of several comparisons (Holm 1979: controls the family-wise error rate, no independence needed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

__all__ = ["MeanSE", "mean_se", "PairedDiff", "paired_t", "clustered_paired_t", "holm"]


class MeanSE(BaseModel):
    """Mean and standard error of the mean over ``n`` finite values (``se`` None for n < 2, ``mean`` None for n = 0);
    ``n_nonfinite`` values were left out because they were NaN or infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float | None
    se: float | None
    n: int | None = None
    n_nonfinite: int = 0


def mean_se(values: Iterable[float | None]) -> MeanSE:
    """Mean ± SE of the finite ``values`` (see the module docstring for the n < 2 and non-finite conventions)."""
    vals = [float("nan") if v is None else float(v) for v in values]  # None: a value stored as null (non-finite)
    good = [v for v in vals if math.isfinite(v)]
    n = len(good)
    if n == 0:
        return MeanSE(mean=None, se=None, n=0, n_nonfinite=len(vals))
    m = math.fsum(good) / n
    se = math.sqrt(math.fsum((v - m) ** 2 for v in good) / (n - 1) / n) if n > 1 else None
    return MeanSE(mean=m, se=se, n=n, n_nonfinite=len(vals) - n)


class PairedDiff(BaseModel):
    """A mean difference with its SE over ``n`` units (``unit`` names them), the ``level`` Student-t interval
    [``low``, ``high``] and the two-sided t-test p-value of a zero mean (None for n < 2, or SE 0 with a zero mean);
    ``se_pooled`` is the SE of the mean of all ``n_values`` differences taken as independent (the per-image SE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    se: float | None
    low: float | None
    high: float | None
    p: float | None
    n: int
    unit: str
    level: float = 0.95
    se_pooled: float | None = None
    n_values: int = 0


def paired_t(diffs: Iterable[float | None], *, level: float = 0.95, unit: str = "pairs") -> PairedDiff | None:
    """Mean ± SE of the finite paired differences ``diffs`` (d_i = a_i − b_i), the ``level`` interval
    mean ± t_{n−1, (1+level)/2}·SE and the two-sided p-value of t = mean/SE with n − 1 degrees of freedom (the
    paired t-test; valid for roughly normal means, i.e. not too few or too skewed differences). None without a
    finite value."""
    from scipy import stats  # imported here: keeps `smvi --help` fast

    m = mean_se(diffs)
    if m.mean is None:
        return None
    low = high = p = None
    if m.se is not None and m.n is not None and m.n >= 2:
        half = float(stats.t.ppf((1 + level) / 2, m.n - 1)) * m.se
        low, high = m.mean - half, m.mean + half
        if m.se > 0:
            p = float(2 * stats.t.sf(abs(m.mean) / m.se, m.n - 1))
        elif m.mean == 0:
            p = 1.0
        else:
            p = 0.0
    return PairedDiff(
        mean=m.mean,
        se=m.se,
        low=low,
        high=high,
        p=p,
        n=m.n or 0,
        unit=unit,
        level=level,
        se_pooled=m.se,
        n_values=m.n or 0,
    )


def clustered_paired_t(
    clusters: dict, *, level: float = 0.95, cluster_unit: str = "seeds", value_unit: str = "images"
) -> PairedDiff | None:
    """:func:`paired_t` with the cluster as the unit: ``clusters`` maps a cluster (a training seed) to its paired
    differences (per image, per label subset); with ≥ 2 non-empty clusters the test is on the cluster means (n =
    clusters), with one it is on that cluster's values. ``se_pooled``/``n_values``: all values pooled."""
    groups = {k: [float(v) for v in vs if v is not None and math.isfinite(v)] for k, vs in clusters.items()}
    groups = {k: vs for k, vs in groups.items() if vs}
    if not groups:
        return None
    pooled = [v for vs in groups.values() for v in vs]
    if len(groups) >= 2:
        r = paired_t([math.fsum(vs) / len(vs) for vs in groups.values()], level=level, unit=cluster_unit)
    else:
        r = paired_t(pooled, level=level, unit=f"{value_unit} (one {cluster_unit[:-1]})")
    return r.model_copy(update={"se_pooled": mean_se(pooled).se, "n_values": len(pooled)}) if r else None


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order (None stays None and is not counted): the i-th smallest
    of m p-values becomes max_{j ≤ i} min(1, (m − j + 1)·p_(j)). Rejecting adjusted p ≤ α keeps the probability
    of any false rejection among the m at most α."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(order), list(pvalues), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
