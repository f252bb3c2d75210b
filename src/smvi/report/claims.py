"""One plain sentence per claim of the paper, decided from the report's paired comparisons (torch-free).

**Claim 1, "the ELBO gap shrinks as λ grows, at a cost in log-likelihood"**, at the largest λ with a paired comparison
against λ = 0 on the test images (:mod:`smvi.report.paired`), with log p(x) from IWAE on the whole test set where
available, else AIS on the test subset:

- *holds*: the paired Δgap's interval lies below 0, the paired Δlog p(x)'s interval lies below 0, and the mean test
  gap never rises significantly from one λ to the next (a rise counts when it exceeds 2 combined SEs);
- *does not hold*: Δgap's interval lies above 0, or Δlog p(x)'s lies above 0 (no cost), or the gap rises
  significantly between successive λ;
- otherwise *cannot be decided at this power*.

**Claim 2, "semi-supervised accuracy improves at a moderate λ"**, from the paired SSL differences to λ = 0 at every
λ > 0 and labeled-set size s, with Holm-adjusted p-values over all of them:

- *holds*: some λ > 0 has a positive mean gain with Holm-adjusted p < α (0.05);
- *does not hold*: none does, and every interval's upper end is below ``MIN_GAIN`` (0.5 percentage points): any
  improvement that could matter is excluded at every λ and s;
- otherwise *cannot be decided at this power*.

**Flagged runs are not evidence** (:mod:`smvi.report.flags`): a λ with a run in posterior collapse or unfinished is left
out of both claims (claim 1 is judged at the largest λ *not* so flagged, and its monotonicity check skips flagged λ;
claim 2 counts no gain at a flagged λ, and its Holm adjustment still covers every comparison, which only makes it more
conservative), and each sentence names what it left out. If λ = 0 itself is so flagged, neither claim can be decided.
AIS-quality flags (acceptance off target, BDMC or ladder unconverged) on the runs a claim-1 sentence compares are named
in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from smvi.report.aggregate import Row, row_lam
from smvi.report.flags import Flag, excluded_lams
from smvi.report.naming import NumberFormat
from smvi.report.paired import ALPHA, PairedRow

__all__ = ["Claim", "decide_claims", "MIN_GAIN"]

MIN_GAIN = 0.5  # percentage points: the smallest SSL improvement that would support claim 2
Verdict = Literal["holds", "does not hold", "cannot be decided at this power"]


@dataclass(frozen=True)
class Claim:
    name: str
    verdict: Verdict
    sentence: str


def _ci(r: PairedRow, unit: str) -> str:
    d = r.diff
    ci = "" if d.low is None else f" [{100 * d.level:g} % CI {d.low:+.2f}, {d.high:+.2f}]"
    return f"{d.mean:+.2f} {unit}{ci} (n = {d.n} {d.unit})"


def _rises(gaps: list[Row]) -> list[tuple[float, float]]:
    """Successive λ pairs whose mean test gap rises by more than 2 combined SEs."""
    out = []
    for a, b in pairwise(gaps):
        se = math.hypot(a.se or 0.0, b.se or 0.0)
        if b.mean - a.mean > 2 * se:
            out.append((a.lam, b.lam))
    return out


def _left_out(excluded: dict[float, str], fmt: NumberFormat, lams: set[float] | None = None) -> str:
    """ "; left out as flagged: λ = 1 (collapsed)" for the flagged λ among ``lams`` (all when None); "" if none."""
    hit = [f"λ = {fmt(lam)} ({why})" for lam, why in excluded.items() if lams is None or lam in lams]
    return f"; left out as flagged: {', '.join(hit)}" if hit else ""


def _zero_flagged(name: str, excluded: dict[float, str]) -> Claim | None:
    """The undecided claim when the λ = 0 runs, the baseline of every comparison, are flagged."""
    if 0.0 not in excluded:
        return None
    return Claim(
        name,
        "cannot be decided at this power",
        f"{name} — cannot be decided: the λ = 0 runs every comparison is made against are flagged "
        f"({excluded[0.0]}); see Flags.",
    )


def _ais_caveat(flags: Sequence[Flag], lams: tuple[float, ...], fmt: NumberFormat) -> str:
    """ " (AIS flagged at λ = 0: acceptance; see Flags)" for AIS-quality flags of the compared runs; "" if none."""
    hit = sorted({(f.lam, f.kind) for f in flags if f.kind in ("acceptance", "bdmc", "ladder") and f.lam in lams})
    if not hit:
        return ""
    return " (AIS flagged at " + ", ".join(f"λ = {fmt(lam)}: {kind}" for lam, kind in hit) + "; see Flags)"


def _format(paired: Sequence[PairedRow], rows: Sequence[Row] = ()) -> NumberFormat:
    """The λ format of claims decided without the report's: one separating the λ they compare."""
    return NumberFormat.separating([r.lam for r in paired] + [r.lam for r in rows if r.lam is not None])


def claim_gap(
    paired: list[PairedRow], rows: list[Row], flags: Sequence[Flag] = (), fmt: NumberFormat | None = None
) -> Claim:
    name = "Claim 1: the ELBO gap shrinks as λ grows, at a cost in log-likelihood"
    fmt = fmt or _format(paired, rows)
    excluded = excluded_lams(flags)
    if zero := _zero_flagged(name, excluded):
        return zero
    gap = {r.lam: r for r in paired if r.quantity == "gap" and r.split == "test"}
    logp = {r.lam: r for r in paired if r.quantity == "iwae_full"} or {
        r.lam: r for r in paired if r.quantity == "ais" and r.split == "test"
    }
    paired_lams = set(gap) & set(logp)
    both = sorted(paired_lams - set(excluded))
    if not both:
        why = (
            "every λ compared with λ = 0 is flagged" + _left_out(excluded, fmt, paired_lams)
            if paired_lams
            else "no paired per-image comparison with λ = 0 (the eval records keep no per-image values, or the sweep "
            "has no λ = 0 run)"
        )
        return Claim(name, "cannot be decided at this power", f"{name} — cannot be decided: {why}.")
    lam = both[-1]
    g, lp = gap[lam], logp[lam]
    rises = _rises(
        sorted(
            (
                r
                for r in rows
                if r.quantity == "gap" and r.split == "test" and r.lam is not None and r.lam not in excluded
            ),
            key=row_lam,
        )
    )
    below = lambda r: r.diff.high is not None and r.diff.high < 0  # noqa: E731
    above = lambda r: r.diff.low is not None and r.diff.low > 0  # noqa: E731
    if above(g) or above(lp) or rises:
        verdict: Verdict = "does not hold"
    elif below(g) and below(lp):
        verdict = "holds"
    else:
        verdict = "cannot be decided at this power"
    what = "IWAE on the whole test set" if lp.quantity == "iwae_full" else "AIS on the test subset"
    mono = (
        "the mean test gap never rises significantly between successive λ"
        if not rises
        else "the mean test gap rises significantly from λ = " + ", ".join(f"{fmt(a)} to {fmt(b)}" for a, b in rises)
    )
    return Claim(
        name,
        verdict,
        f"{name} — {verdict}: at λ = {fmt(lam)} against λ = 0 the test gap changes by "
        f"{_ci(g, 'nats')} and log p(x) ({what}) by {_ci(lp, 'nats')}; {mono}"
        f"{_left_out(excluded, fmt)}{_ais_caveat(flags, (0.0, lam), fmt)}.",
    )


def claim_ssl(paired: list[PairedRow], flags: Sequence[Flag] = (), fmt: NumberFormat | None = None) -> Claim:
    name = "Claim 2: semi-supervised accuracy improves at a moderate λ"
    fmt = fmt or _format(paired)
    excluded = excluded_lams(flags)
    if zero := _zero_flagged(name, excluded):
        return zero
    every = [r for r in paired if r.quantity == "ssl_gain"]
    ssl = [r for r in every if r.lam not in excluded]
    left = _left_out(excluded, fmt, {r.lam for r in every})
    if not ssl:
        return Claim(
            name,
            "cannot be decided at this power",
            f"{name} — cannot be decided: no paired SSL comparison with λ = 0{left}.",
        )
    wins = [r for r in ssl if r.diff.mean > 0 and r.p_holm is not None and r.p_holm < ALPHA]
    best = max(wins or ssl, key=lambda r: r.diff.mean)
    at = (
        f"at λ = {fmt(best.lam)}, s = {best.s}: {_ci(best, 'percentage points')}, "
        f"Holm-adjusted p = {best.p_holm if best.p_holm is None else f'{best.p_holm:.3g}'} over {len(every)} "
        f"comparisons{left}"
    )
    if wins:
        return Claim(name, "holds", f"{name} — holds: largest significant gain {at}.")
    if all(r.diff.high is not None and r.diff.high < MIN_GAIN for r in ssl):
        return Claim(
            name,
            "does not hold",
            f"{name} — does not hold: no λ > 0 improves significantly and every "
            f"interval excludes a gain of {MIN_GAIN} points; largest mean gain {at}.",
        )
    return Claim(
        name,
        "cannot be decided at this power",
        f"{name} — cannot be decided at this power: no significant gain, but gains of {MIN_GAIN} points are "
        f"not excluded; largest mean gain {at}.",
    )


def decide_claims(
    paired: list[PairedRow], rows: list[Row], flags: Sequence[Flag] = (), fmt: NumberFormat | None = None
) -> list[Claim]:
    """The two claims' verdicts and sentences (rules in the module docstring), flagged runs left out; λ written by
    ``fmt`` (the report's, :mod:`smvi.report.naming`; else one separating the λ compared)."""
    fmt = fmt or _format(paired, rows)
    return [claim_gap(paired, rows, flags, fmt), claim_ssl(paired, flags, fmt)]
