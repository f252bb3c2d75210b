"""The frontier section's cost table (torch-free): what each method and knob cost to train, and what a sampling
posterior's sampler did.

Per (method, knob value) (:func:`smvi.report.frontier.method_groups`: runs with a learned λ are left out), from the
runs' ``metrics.jsonl`` as :func:`smvi.report.aggregate.collect_runs` read it: the seconds per training epoch (each
run's median over its epochs; mean over runs, with SE over runs when there are ≥ 2, else the spread is not shown)
and, for a family that writes its own diagnostics (:attr:`smvi.settings.families.FamilySpec.metrics`: a
rejection-sampling posterior's acceptance rate, proposals per exact sample and mean threshold T), their values at the
last epoch (mean over runs). Epoch times are as the runs were trained, on
whatever machine and load that was (each run's device and threads are in its metrics): they describe, they do not
compare methods; ``benchmarks/rejection.py`` measures the step-cost ratios side by side.
"""

from __future__ import annotations

import statistics

from smvi.report.aggregate import Run, number
from smvi.report.frontier import estimate, estimate_cell, method_groups
from smvi.report.naming import RunNames
from smvi.report.tables import Table
from smvi.settings.families import FAMILIES

__all__ = ["method_cost_table"]


def _epoch_seconds(run: Run) -> float | None:
    times = [s for m in run.metrics if (s := number(m.get("seconds"))) is not None]
    return statistics.median(times) if times else None


def _last(run: Run, key: str) -> float | None:
    return next((v for m in reversed(run.metrics) if (v := number(m.get(key))) is not None), None)


def _mean(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    return "—" if not vals else f"{statistics.fmean(vals):.3g}"


def method_cost_table(runs: list[Run]) -> Table | None:
    """The table (module docstring), or None when no run of a fixed knob has epoch times."""
    groups = method_groups([r for r in runs if _epoch_seconds(r) is not None])
    if not groups:
        return None
    keys = dict.fromkeys(k for spec in FAMILIES.values() for k in spec.metrics)  # the families' own diagnostics
    sampler = [k for k in keys if any(_last(r, k) is not None for _, rs in groups for r in rs)]
    names = RunNames.of(runs)
    head = ["method", "knob", "runs", "seconds per epoch", *(k.replace("_", " ") for k in sampler)]
    body = []
    for (method, knob, value), rs in groups:
        seconds = estimate([(s, None) for r in rs if (s := _epoch_seconds(r)) is not None], "epochs")
        row = [method, f"{knob}={names.fmt(value)}", str(len(rs)), estimate_cell(seconds).replace(" †", "")]
        body.append(row + [_mean([_last(r, k) for r in rs]) for k in sampler])
    title = (
        "Training cost per method and knob: seconds per epoch (each run's median over its epochs, mean ± SE over "
        "runs; as trained, on the machine and load of each run — benchmarks/rejection.py gives side-by-side ratios)"
        + (", and the sampler's last epoch (acceptance, proposals per exact sample, threshold T)" if sampler else "")
    )
    return title, head, body
