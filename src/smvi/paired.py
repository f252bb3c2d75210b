"""Each λ against λ = 0, paired: the comparisons that settle the paper's claims (torch-free; read by :mod:`smvi.report`).

**log p(x) and the gap.** For a run at λ and the run at λ = 0 with the same training seed, the per-image differences
on the images both evaluated (matched by image index, from ``eval.json``'s ``indices`` and ``per_image``): AIS log
p(x) and the gap AIS − ELBO on the test and training subsets, and IWAE log p(x) on the whole test set (``full_test``).
Over seeds the unit is the training seed (:func:`smvi.stats.clustered_paired_t`: the t-test on the seeds' mean
differences, so model-to-model variation counts); with one seed it is the image, and the answer is about those two
trained models. ``per-image SE`` is the SE of all (seed, image) differences pooled.

**SSL.** Accuracy at λ minus at λ = 0 on the same label subsets and training seed, in percentage points; the same
clustered t-test (unit: the training seed with ≥ 2 seeds, the label subset with one).

p-values are Holm-adjusted (:func:`smvi.stats.holm`) over the λ values compared -- per quantity and split for log p(x)
and the gap, over all (λ, s) for SSL, the family of claim 2. Records without per-image values (written before
``eval.json`` kept them) give no paired log p(x) rows; the report says so under the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .aggregate import Run, _by_seed, _get
from .stats import PairedDiff, clustered_paired_t, holm

__all__ = ["PairedRow", "paired_rows", "LOGPX", "ALPHA"]

ALPHA = 0.05  # the level of every test in the report; intervals are 1 − ALPHA
LOGPX = (("iwae_full", "test"), ("ais", "test"), ("gap", "test"), ("ais", "train"), ("gap", "train"))
LABEL = {"iwae_full": "log p(x), IWAE on the whole test set", "ais": "log p(x), AIS", "gap": "ELBO gap",
         "ssl_gain": "SSL accuracy"}


@dataclass(frozen=True)
class PairedRow:
    """λ minus λ = 0 for one quantity (``iwae_full``, ``ais``, ``gap`` in nats; ``ssl_gain`` in percentage points at
    labeled-set size ``s``); ``p_holm``: the Holm-adjusted p-value within the row's family (module docstring)."""

    quantity: str
    split: str
    s: int | None
    lam: float
    diff: PairedDiff
    p_holm: float | None


def _per_image(run: Run, quantity: str, split: str) -> dict[int, float]:
    """Image index → value of ``quantity`` in ``run``'s eval record; empty without per-image values."""
    if quantity == "iwae_full":
        idx, vals = _get(run.eval, "full_test", "indices"), _get(run.eval, "full_test", "per_image")
    else:
        idx, vals = _get(run.eval, "splits", split, "indices"), _get(run.eval, "splits", split, "per_image", quantity)
    if not (isinstance(idx, list) and isinstance(vals, list) and len(idx) == len(vals)):
        return {}
    return {int(i): float(v) for i, v in zip(idx, vals) if isinstance(v, (int, float))}


def _pairs(runs: list[Run], lam: float, values: Any) -> dict[int, list[float]]:
    """Training seed → the differences ``values(run) − values(run at λ = 0)`` on their common keys."""
    out: dict[int, list[float]] = {}
    for r in (r for r in runs if r.lam == lam):
        for r0 in (r0 for r0 in runs if r0.lam == 0 and r0.seed == r.seed):
            a, b = values(r), values(r0)
            if common := sorted(set(a) & set(b)):
                out.setdefault(r.seed, []).extend(a[k] - b[k] for k in common)
    return out


def _family(rows: list[tuple[str, str, int | None, float, PairedDiff]]) -> list[PairedRow]:
    adjusted = holm([d.p for *_, d in rows])
    return [PairedRow(q, sp, s, lam, d, p) for (q, sp, s, lam, d), p in zip(rows, adjusted)]


def paired_rows(runs: list[Run]) -> list[PairedRow]:
    """Every paired comparison of the sweep (see the module docstring); empty without λ = 0."""
    lams = sorted({r.lam for r in runs if r.lam != 0})
    if not any(r.lam == 0 for r in runs):
        return []
    out: list[PairedRow] = []
    for q, split in LOGPX:
        family = []
        for lam in lams:
            clusters = _pairs([r for r in runs if r.eval], lam, lambda r: _per_image(r, q, split))
            if d := clustered_paired_t(clusters, level=1 - ALPHA):
                family.append((q, split, None, lam, d))
        out += _family(family)
    sizes = sorted({int(s) for r in runs for s in (_get(r.ssl, "features", "sizes") or {}) if str(s).isdigit()})
    family = []
    for s in sizes:
        for lam in lams:
            clusters = _pairs([r for r in runs if r.ssl], lam,
                              lambda r: {k: 100 * v for k, v in _by_seed(r.ssl, s).items()})
            if d := clustered_paired_t(clusters, level=1 - ALPHA, value_unit="label subsets"):
                family.append(("ssl_gain", "test", s, lam, d))
    return out + _family(family)
