"""The frontier section's SSL table (torch-free): the semi-supervised accuracy of every method and knob of a study.

Per (method, knob value) (:func:`smvi.report.frontier.method_groups`: runs with a learned λ are left out) and per
labeled-set size s, from the runs' current ``ssl.json``: the test accuracy of the SVM on encoder means, the mean over
training seeds of each run's mean over label subsets, with SE over seeds when there are ≥ 2 runs, else the run's own SE
over label subsets (marked †) -- the convention of :mod:`smvi.report.aggregate`. Beside it, when the study has the λ
axis's λ = 0 (the plain VAE of the λ axis, :func:`smvi.report.aggregate.lam_series`), the difference to it in
percentage points, paired over the same label subsets and training seeds
(:func:`smvi.store.stats.clustered_paired_t`: over label subsets with one seed, over seeds with several): accuracies
differ far more between label subsets than between methods, so the pairing is what makes a few tenths readable. The
raw-pixel baseline closes the table.
"""

from __future__ import annotations

from smvi.report.aggregate import Run, accuracies, lam_series, lookup, method_of, ssl_by_seed
from smvi.report.frontier import estimate, estimate_cell, method_groups
from smvi.report.naming import RunNames
from smvi.report.tables import Table, pm
from smvi.store.stats import clustered_paired_t, mean_se

__all__ = ["method_ssl_table"]


def _accuracy(runs: list[Run], s: int) -> str:
    """``mean ± SE`` (%) of the runs' encoder-feature accuracies at size ``s``."""
    per_run = []
    for r in runs:
        if acc := accuracies(r.ssl, "features", s):
            m = mean_se([100 * a for a in acc])
            if m.mean is not None:
                per_run.append((m.mean, m.se))
    return estimate_cell(estimate(per_run, "label subsets"))


def _difference(runs: list[Run], reference: list[Run], s: int) -> str:
    """``mean ± SE`` (percentage points) of the runs' accuracy minus the reference's, paired by training seed and
    label subset; † when one seed gives it (SE over its label subsets)."""
    clusters: dict[int, list[float]] = {}
    for r in runs:
        for r0 in (r0 for r0 in reference if r0.seed == r.seed):
            a, a0 = ssl_by_seed(r.ssl, s), ssl_by_seed(r0.ssl, s)
            if common := [100 * (a[k] - a0[k]) for k in sorted(set(a) & set(a0))]:
                clusters.setdefault(r.seed, []).extend(common)
    d = clustered_paired_t(clusters, value_unit="label subsets")
    if d is None:
        return "—"
    se = "" if d.se is None else " ± " + (f"{d.se:.2f}" if d.se >= 0.005 else "<0.01")
    return f"{d.mean:+.2f}{se}" + (" †" if len(clusters) < 2 else "")


def _raw(runs: list[Run], s: int) -> str:
    """The raw-pixel baseline at size ``s`` (the first run that has it: it does not depend on the model)."""
    for r in runs:
        if acc := accuracies(r.ssl, "raw_pixels", s):
            m = mean_se([100 * a for a in acc])
            return pm(m.mean, m.se) + " †"
    return "—"


def method_ssl_table(runs: list[Run], collapsed: frozenset[str] = frozenset()) -> Table | None:
    """The table (module docstring), or None when no run of a fixed knob has SSL accuracies. A point with a run in
    ``collapsed`` (a posterior collapse) is marked ⚠C."""
    groups = method_groups([r for r in runs if r.ssl is not None])
    sizes = sorted({int(s) for r in runs for s in (lookup(r.ssl, "features", "sizes") or {}) if str(s).isdigit()})
    if not (groups and sizes):
        return None
    names = RunNames.of(runs)
    axis = lam_series(runs)[0]
    reference = [r for r in axis if r.lam == 0 and r.ssl is not None]
    ref_method = method_of(reference[0].config) if reference else None
    ref_name = f"{ref_method[0]} λ=0" if ref_method else ""
    head = ["method", "knob", "runs", *(f"s = {s}" for s in sizes)]
    head += [f"minus {ref_name}, s = {s}" for s in sizes] if reference else []
    body = []
    for (method, knob, value), rs in groups:
        row = [method, f"{knob}={names.fmt(value)}" + (" ⚠C" if collapsed.intersection(r.name for r in rs) else "")]
        row += [str(len(rs)), *(_accuracy(rs, s) for s in sizes)]
        if reference:
            same = {r.name for r in rs} == {r.name for r in reference}
            row += ["reference" if same else _difference(rs, reference, s) for s in sizes]
        body.append(row)
    body.append(["raw pixels", "—", "—", *(_raw(runs, s) for s in sizes), *(["—"] * len(sizes) if reference else [])])
    title = "SSL test accuracy per method and knob (%, mean ± SE; SVM on encoder means, s labeled examples)" + (
        f", and its difference from {ref_name} on the same label subsets and training seeds (percentage points, paired)"
        if reference
        else ""
    )
    return title, head, body
