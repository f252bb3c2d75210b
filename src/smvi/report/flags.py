"""Automatic flags on a sweep's results (torch-free): the one place that says when a number should not be trusted.

Each rule reads what the run already wrote (:class:`smvi.report.aggregate.Run`: its last ``metrics.jsonl`` line and its
current records) and returns :class:`Flag`\\ s; the report marks the flagged cell with the rule's marker and lists
every flag, and :mod:`smvi.report.claims` does not decide a claim on a collapsed or unfinished run.

- **collapse** (⚠C): the posterior carries no information about x -- at the last epoch, at most
  :data:`COLLAPSE_UNITS` active units (``test_active_units``: :func:`smvi.core.diagnostics.active_units` on the monitor
  set) or KL(q(z|x) ‖ p(z)) below :data:`COLLAPSE_KL` nats per image (``test_kl`` on the monitor set; for metrics
  written before it was logged, the training mean ``kl`` of the last epoch). A collapsed model meets any inference
  target trivially (gap ≈ 0) and its features are useless, so it says nothing about the trade-off being measured.
- **recovered** (⚠R): not collapsed at the last epoch, but at more than :data:`RECOVERED_FRACTION` of its epochs
  by the same rule, applied to each ``metrics.jsonl`` line (λ = 1 of results/paper: epochs 1–39 of 300). Its final
  model is evidence like any other, so it keeps no λ out of a claim; the flag says that it trained for fewer useful
  epochs than it shows. A collapse in the first epoch or two of a longer run, common as the KL term starts near
  zero, stays below the fraction.
- **unfinished** (⚠U): fewer epochs done than the config asks for (``train.epochs``).
- **acceptance** (⚠A): the mean HMC acceptance of AIS (``ais_acceptance`` of an eval split or of the gaps record) is
  more than :data:`ACCEPT_TOL` from :data:`ACCEPT_TARGET`, the rate :func:`smvi.core.estimators.ais` adapts its step
  size toward: the adaptation did not reach its target (too few steps to adapt, or a step size at its bound), so
  the chains move less well than intended and log p(x) may be biased low.
- **bdmc** (⚠B): on simulated data the BDMC gap (upper − lower bound) at the largest number of AIS steps checked is
  above the convergence record's own tolerance (``tol``, :class:`smvi.settings.stages.ConvergenceConfig`, default
  :data:`BDMC_TOL` nats): AIS at those settings is not converged to within it.
- **ladder** (⚠L): the AIS ladder on test data did not converge (successive lengths disagree by more than ``tol``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from smvi.report.aggregate import Run, is_constrained, lam_series, last_kl, lookup, number
from smvi.report.naming import RunNames

__all__ = [
    "Flag",
    "RULES",
    "COLLAPSE_UNITS",
    "COLLAPSE_KL",
    "ACCEPT_TARGET",
    "ACCEPT_TOL",
    "BDMC_TOL",
    "RECOVERED_FRACTION",
    "is_collapsed",
    "run_flags",
    "sweep_flags",
    "excluded_lams",
    "mark",
    "legend",
    "CLAIM_BLOCKING",
]

COLLAPSE_UNITS = 2  # active units: at most this many is a collapse
COLLAPSE_KL = 0.1  # nats per image: a KL(q ‖ prior) below this is a collapse
RECOVERED_FRACTION = 0.1  # of the epochs done: a run collapsed at more of them, but not at the last, is flagged ⚠R
ACCEPT_TARGET = 0.65  # smvi.core.estimators.ais's target_accept (tests/test_flags.py checks they agree)
ACCEPT_TOL = 0.15  # |acceptance − target| above this is flagged
BDMC_TOL = 0.1  # nats: ConvergenceConfig.tol's default, used when a convergence record names none

RULES = {  # kind → (marker, legend)
    "collapse": (
        "⚠C",
        f"posterior collapse: ≤ {COLLAPSE_UNITS} active units or KL(q ‖ p(z)) < {COLLAPSE_KL} nats at the last epoch",
    ),
    "recovered": (
        "⚠R",
        f"recovered from a posterior collapse (same rule) that lasted more than {RECOVERED_FRACTION:.0%} of its epochs",
    ),
    "unfinished": ("⚠U", "unfinished: fewer epochs than the config asks for"),
    "acceptance": ("⚠A", f"AIS acceptance outside {ACCEPT_TARGET} ± {ACCEPT_TOL} (its adaptation target)"),
    "bdmc": ("⚠B", "BDMC gap above the convergence record's tolerance at the largest number of AIS steps"),
    "ladder": ("⚠L", "AIS ladder not converged on test data"),
}
CLAIM_BLOCKING = ("collapse", "unfinished")  # runs flagged so are not evidence for a claim (smvi.report.claims)


@dataclass(frozen=True)
class Flag:
    """One flag: its rule (``kind``, a key of :data:`RULES`), the run (its name, and λ; None for a learned λ), which
    numbers it concerns (``fields``: ``kl``, ``active_units``, ``epochs``, ``ais_acceptance.<split>``,
    ``gaps.ais_acceptance``, ``bdmc``, ``ladder``), and a sentence for the report's list."""

    kind: str
    run: str
    lam: float | None
    fields: tuple[str, ...]
    message: str

    @property
    def marker(self) -> str:
        return RULES[self.kind][0]


def is_collapsed(active_units: float | None, kl: float | None) -> bool | None:
    """The collapse rule (module docstring); None when neither number is known."""
    if active_units is None and kl is None:
        return None
    return (active_units is not None and active_units <= COLLAPSE_UNITS) or (kl is not None and kl < COLLAPSE_KL)


def _units_kl(line: dict) -> tuple[float | None, float | None, str]:
    """The collapse rule's numbers in one ``metrics.jsonl`` line: active units, KL and where the KL is from."""
    return number(line.get("test_active_units")), *last_kl(line)


def _collapse(run: Run, lam: float | None, label: str) -> list[Flag]:
    last = run.metrics[-1] if run.metrics else {}
    units, kl, where = _units_kl(last)
    if not is_collapsed(units, kl):
        return []
    few_units, low_kl = units is not None and units <= COLLAPSE_UNITS, kl is not None and kl < COLLAPSE_KL
    what = ([f"{units:g} active units"] if few_units else []) + (
        [f"KL {kl:.2g} nats ({'monitor set' if where == 'test' else 'training mean'})"] if low_kl else []
    )
    fields = tuple(f for f, hit in (("kl", low_kl), ("active_units", few_units)) if hit)
    return [
        Flag(
            "collapse",
            run.name,
            lam,
            fields,
            f"{run.name} ({label}): posterior collapse at epoch {last.get('epoch', '?')}: " + " and ".join(what),
        )
    ]


def _recovered(run: Run, lam: float | None, label: str) -> list[Flag]:
    spell = [line.get("epoch") for line in run.metrics if is_collapsed(*_units_kl(line)[:2])]
    if len(spell) <= RECOVERED_FRACTION * len(run.metrics) or spell[-1] == run.metrics[-1].get("epoch"):
        return []  # a short spell, or still collapsed at the last epoch (⚠C)
    return [
        Flag(
            "recovered",
            run.name,
            lam,
            ("kl",),
            f"{run.name} ({label}): in posterior collapse for {len(spell)} of its {len(run.metrics)} "
            f"epochs ({spell[0]} to {spell[-1]}), not at the last",
        )
    ]


def _acceptance(run: Run, lam: float | None, label: str) -> list[Flag]:
    found = [
        (f"ais_acceptance.{split}", f"eval {split}", number(lookup(run.eval, "splits", split, "ais_acceptance")))
        for split in ("test", "train")
    ]
    found.append(("gaps.ais_acceptance", "gaps", number(lookup(run.gaps, "ais_acceptance"))))
    return [
        Flag(
            "acceptance",
            run.name,
            lam,
            (field,),
            f"{run.name} ({label}): AIS acceptance {a:.2f} ({where}), target {ACCEPT_TARGET}",
        )
        for field, where, a in found
        if a is not None and abs(a - ACCEPT_TARGET) > ACCEPT_TOL
    ]


def _convergence(run: Run, lam: float | None, label: str) -> list[Flag]:
    conv = run.convergence
    if not isinstance(conv, dict):
        return []
    out = []
    rows = [
        b
        for b in (conv.get("bdmc") or [])
        if isinstance(b, dict) and isinstance(b.get("steps"), int) and number(b.get("gap")) is not None
    ]
    tol = number(conv.get("tol")) or BDMC_TOL
    if rows:
        top = max(rows, key=lambda b: b["steps"])
        if top["gap"] > tol:
            out.append(
                Flag(
                    "bdmc",
                    run.name,
                    lam,
                    ("bdmc",),
                    f"{run.name} ({label}): BDMC gap {top['gap']:.2f} nats at {top['steps']} AIS "
                    f"steps, above the tolerance {tol:g}",
                )
            )
    if lookup(conv, "ladder", "converged") is False:
        out.append(
            Flag(
                "ladder",
                run.name,
                lam,
                ("ladder",),
                f"{run.name} ({label}): the AIS ladder on test data did not converge within {tol:g} nats",
            )
        )
    return out


def run_flags(run: Run, *, on_axis: bool = True, names: RunNames | None = None) -> list[Flag]:
    """Every flag of one :class:`smvi.report.aggregate.Run`, each naming the run by its method and knob as ``names``
    write them (the report's, :mod:`smvi.report.naming`; else the run's own). Only a run on the report's λ axis
    (``on_axis``, see :func:`smvi.report.aggregate.lam_series`) with a fixed λ gives its flags a λ; the others (a
    learned λ, β-VAE, IWAE, another family) carry none, so they never mark or exclude a λ."""
    lam = run.lam if on_axis and not is_constrained(run) else None
    label = (names or RunNames.of([run])).of_run(run)
    out = _collapse(run, lam, label) + _recovered(run, lam, label)
    if run.epochs is None or (run.planned is not None and run.epochs < run.planned):
        out.append(
            Flag(
                "unfinished",
                run.name,
                lam,
                ("epochs",),
                f"{run.name} ({label}): unfinished, {run.epochs or 0} of {run.planned} epochs",
            )
        )
    return out + _acceptance(run, lam, label) + _convergence(run, lam, label)


def sweep_flags(runs: Iterable[Run]) -> list[Flag]:
    """The flags of every run of a sweep, in the runs' order, the runs named as the report names them."""
    runs = list(runs)
    axis, names = {r.name for r in lam_series(runs)[0]}, RunNames.of(runs)
    return [f for r in runs for f in run_flags(r, on_axis=r.name in axis, names=names)]


def excluded_lams(flags: Iterable[Flag], kinds: Iterable[str] = CLAIM_BLOCKING) -> dict[float, str]:
    """λ → why, for each fixed λ with a run flagged by one of ``kinds`` (by default what keeps a run from being
    evidence for a claim)."""
    out: dict[float, list[str]] = {}
    for f in flags:
        if f.kind in kinds and f.lam is not None:
            why = "collapsed" if f.kind == "collapse" else f.kind
            out.setdefault(f.lam, [])
            if why not in out[f.lam]:
                out[f.lam].append(why)
    return {lam: " and ".join(v) for lam, v in sorted(out.items())}


def mark(
    flags: Iterable[Flag],
    *,
    run: str | None = None,
    lam: float | None = None,
    fields: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
) -> str:
    """The markers (`` ⚠C⚠U``, with a leading space; "" when none) of the flags matching ``run`` or ``lam``, and
    ``fields`` / ``kinds`` when given, in :data:`RULES` order."""
    fields, kinds = (None if fields is None else set(fields)), (None if kinds is None else set(kinds))
    hit = {
        f.kind
        for f in flags
        if (run is None or f.run == run)
        and (lam is None or f.lam == lam)
        and (fields is None or fields & set(f.fields))
        and (kinds is None or f.kind in kinds)
    }
    marks = "".join(RULES[k][0] for k in RULES if k in hit)
    return f" {marks}" if marks else ""


def legend(flags: Iterable[Flag]) -> str:
    """One line explaining the markers of the kinds present ("" when there is none)."""
    kinds = {f.kind for f in flags}
    return "; ".join(f"{m} {text}" for k, (m, text) in RULES.items() if k in kinds)
