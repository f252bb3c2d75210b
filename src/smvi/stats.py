"""Summary statistics shared by every stage and the report (torch-free).

One convention everywhere: the standard error of a mean of n values is ``std(ddof=1) / sqrt(n)``, and is undefined
(``None``, written as JSON ``null``) for n < 2 -- a single value says nothing about its own spread. Non-finite values
are not summarized silently: :func:`mean_se` drops them and counts them in ``n_nonfinite``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

__all__ = ["MeanSE", "mean_se", "finite_or_none"]


class MeanSE(BaseModel):
    """Mean and standard error of the mean over ``n`` finite values (``se`` None for n < 2, ``mean`` None for n = 0);
    ``n_nonfinite`` values were left out because they were NaN or infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float | None
    se: float | None
    n: int | None = None
    n_nonfinite: int = 0


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float if finite, else None (how non-finite numbers are stored in JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


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
