"""How the report writes knob values and names runs (torch-free): the one owner of every λ, β, k and target label in
the report's tables, figures, legends, flags and claims.

- :class:`NumberFormat`: a knob value as text with the fewest significant digits, at least :data:`MIN_DIGITS` (the
  precision of ``{x:g}``, so 0.1 stays ``0.1``), that keep the distinct values of a report distinct: with 0.1 and
  0.1000001 in one report they read ``0.1`` and ``0.1000001``. A value whose exact shortest form is shorter is written
  so (0.3 beside 0.30000000000000004); whole numbers are written whole (``k = 50``).
- :class:`RunNames`: for the runs of one report (:func:`smvi.report.aggregate.collect_runs`), each run's method and
  knob (:func:`smvi.report.aggregate.method_of`) as one label: ``λ = 0.1`` when the report holds one method, else
  with the method, ``SMVI, λ = 0.1``, ``β-VAE, β = 2``, ``SMVI, flow q, λ = 0.01``; a learned λ is ``learned λ, D_SM ≤
  300``. A β-VAE or IWAE run is never called λ = 0 (its ``train.lam`` is 0, unused).

:meth:`RunNames.of` is a function of the runs alone, so every part of the report that reads the same runs writes the
same labels; a figure or table given only λ values takes the report's :class:`NumberFormat` (else one separating the
values it draws).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from smvi.report.aggregate import Run, is_constrained, lam_series, method_of, number

__all__ = ["NumberFormat", "RunNames", "MIN_DIGITS", "MAX_DIGITS"]

MIN_DIGITS = 6  # {x:g}'s significant digits: what the report wrote before values had to be told apart
MAX_DIGITS = 17  # enough to tell any two doubles apart


def _text(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, or its exact shortest form (``repr``) where that is shorter
    (0.3, not 0.29999999999999999); whole numbers whole."""
    if value == 0:
        return "0"  # and -0.0
    if value.is_integer() and abs(value) < 10.0**MAX_DIGITS:
        return str(int(value))
    return min(f"{value:.{digits}g}", repr(value), key=len)


@dataclass(frozen=True)
class NumberFormat:
    """Knob values as text with ``digits`` significant digits (module docstring); called as ``fmt(0.1)``."""

    digits: int = MIN_DIGITS

    @classmethod
    def separating(cls, values: Iterable[float]) -> NumberFormat:
        """The format with the fewest digits (at least :data:`MIN_DIGITS`) that writes the distinct finite
        ``values`` as distinct texts."""
        distinct = {float(v) for v in values if math.isfinite(v)}
        for digits in range(MIN_DIGITS, MAX_DIGITS + 1):
            if len({_text(v, digits) for v in distinct}) == len(distinct):
                return cls(digits)
        return cls(MAX_DIGITS)

    def __call__(self, value: float) -> str:
        return _text(float(value), self.digits) if math.isfinite(value) else str(value)


def _target(run: Run) -> tuple[str, float] | None:
    """(measure label, target) of a run with a learned λ, else None."""
    target = number(run.config.get("train.constraint.target"))
    if not is_constrained(run) or target is None:
        return None
    return ("D_SM" if run.config.get("train.constraint.measure", "dsm") == "dsm" else "gap"), target


@dataclass(frozen=True)
class RunNames:
    """The labels of one report's runs (module docstring): ``fmt`` writes their knob values and targets, ``several``
    says whether they are of several methods (then every label names its method)."""

    fmt: NumberFormat
    several: bool

    @classmethod
    def of(cls, runs: Iterable[Run]) -> RunNames:
        """The labels of ``runs``: every knob value, fixed λ and target among them kept distinct."""
        runs = list(runs)
        values = [r.lam for r in runs if not is_constrained(r)]
        values += [m[2] for r in runs if (m := method_of(r.config)) is not None]
        values += [t[1] for r in runs if (t := _target(r)) is not None]
        methods = {m[0] for r in runs if (m := method_of(r.config)) is not None}
        return cls(NumberFormat.separating(values), len(methods) > 1)

    def lam(self, lam: float) -> str:
        """``λ = 0.1``: a fixed λ of the report's λ axis."""
        return f"λ = {self.fmt(lam)}"

    def target(self, measure: str, target: float) -> str:
        """``D_SM ≤ 300`` / ``gap ≤ 1``: a learned λ's target."""
        return f"{'D_SM' if measure in ('dsm', 'D_SM') else 'gap'} ≤ {self.fmt(target)}"

    def knob(self, run: Run) -> str:
        """The run's knob without its method: ``λ = 0.1``, ``β = 2``, ``k = 5``, ``learned λ, D_SM ≤ 300``."""
        if (t := _target(run)) is not None:
            return f"learned λ, {self.target(*t)}"
        m = method_of(run.config)
        return self.lam(run.lam) if m is None else f"{m[1]} = {self.fmt(m[2])}"

    def of_run(self, run: Run) -> str:
        """The run's method and knob: :meth:`knob`, preceded by the method when the report has several
        (``β-VAE, β = 2``; a learned λ has no method of its own: ``learned λ, D_SM ≤ 300``)."""
        m = method_of(run.config)
        return f"{m[0]}, {self.knob(run)}" if self.several and m is not None else self.knob(run)


def axis_names(runs: list[Run]) -> set[str]:
    """The names of the runs on the report's λ axis (:func:`smvi.report.aggregate.lam_series`)."""
    return {r.name for r in lam_series(runs)[0]}
