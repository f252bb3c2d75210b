"""One plain sentence per claim of the paper, decided from the report's paired comparisons (torch-free).

**Claim 1, "the ELBO gap shrinks as λ grows, at a cost in log-likelihood"**, at the largest λ with a paired
comparison against λ = 0 on the test images (:mod:`smvi.paired`), with log p(x) from IWAE on the whole test set where
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .aggregate import Row
from .paired import ALPHA, PairedRow

__all__ = ["Claim", "decide_claims", "MIN_GAIN"]

MIN_GAIN = 0.5  # percentage points: the smallest SSL improvement that would support claim 2
Verdict = Literal["holds", "does not hold", "cannot be decided at this power"]


@dataclass(frozen=True)
class Claim:
    name: str
    verdict: Verdict
    sentence: str


def _lam(lam: float) -> str:
    return f"{lam:g}"


def _ci(r: PairedRow, unit: str) -> str:
    d = r.diff
    ci = "" if d.low is None else f" [{100 * d.level:g} % CI {d.low:+.2f}, {d.high:+.2f}]"
    return f"{d.mean:+.2f} {unit}{ci} (n = {d.n} {d.unit})"


def _rises(gaps: list[Row]) -> list[tuple[float, float]]:
    """Successive λ pairs whose mean test gap rises by more than 2 combined SEs."""
    out = []
    for a, b in zip(gaps, gaps[1:]):
        se = math.hypot(a.se or 0.0, b.se or 0.0)
        if b.mean - a.mean > 2 * se:
            out.append((a.lam, b.lam))
    return out


def claim_gap(paired: list[PairedRow], rows: list[Row]) -> Claim:
    name = "Claim 1: the ELBO gap shrinks as λ grows, at a cost in log-likelihood"
    gap = {r.lam: r for r in paired if r.quantity == "gap" and r.split == "test"}
    logp = ({r.lam: r for r in paired if r.quantity == "iwae_full"}
            or {r.lam: r for r in paired if r.quantity == "ais" and r.split == "test"})
    both = sorted(set(gap) & set(logp))
    if not both:
        return Claim(name, "cannot be decided at this power",
                     f"{name} — cannot be decided: no paired per-image comparison with λ = 0 (the eval records "
                     "keep no "
                     "per-image values, or the sweep has no λ = 0 run).")
    lam = both[-1]
    g, lp = gap[lam], logp[lam]
    rises = _rises(sorted((r for r in rows if r.quantity == "gap" and r.split == "test" and r.lam is not None),
                          key=lambda r: r.lam))
    below = lambda r: r.diff.high is not None and r.diff.high < 0  # noqa: E731
    above = lambda r: r.diff.low is not None and r.diff.low > 0  # noqa: E731
    if above(g) or above(lp) or rises:
        verdict: Verdict = "does not hold"
    elif below(g) and below(lp):
        verdict = "holds"
    else:
        verdict = "cannot be decided at this power"
    what = "IWAE on the whole test set" if lp.quantity == "iwae_full" else "AIS on the test subset"
    mono = ("the mean test gap never rises significantly between successive λ" if not rises else
            "the mean test gap rises significantly from λ = " + ", ".join(f"{_lam(a)} to {_lam(b)}" for a, b in rises))
    return Claim(name, verdict, f"{name} — {verdict}: at λ = {_lam(lam)} against λ = 0 the test gap changes by "
                                f"{_ci(g, 'nats')} and log p(x) ({what}) by {_ci(lp, 'nats')}; {mono}.")


def claim_ssl(paired: list[PairedRow]) -> Claim:
    name = "Claim 2: semi-supervised accuracy improves at a moderate λ"
    ssl = [r for r in paired if r.quantity == "ssl_gain"]
    if not ssl:
        return Claim(name, "cannot be decided at this power",
                     f"{name} — cannot be decided: no paired SSL comparison with λ = 0.")
    wins = [r for r in ssl if r.diff.mean > 0 and r.p_holm is not None and r.p_holm < ALPHA]
    best = max(wins or ssl, key=lambda r: r.diff.mean)
    at = (f"at λ = {_lam(best.lam)}, s = {best.s}: {_ci(best, 'percentage points')}, "
          f"Holm-adjusted p = {best.p_holm if best.p_holm is None else f'{best.p_holm:.3g}'} over {len(ssl)} "
          "comparisons")
    if wins:
        return Claim(name, "holds", f"{name} — holds: largest significant gain {at}.")
    if all(r.diff.high is not None and r.diff.high < MIN_GAIN for r in ssl):
        return Claim(name, "does not hold", f"{name} — does not hold: no λ > 0 improves significantly and every "
                                            f"interval excludes a gain of {MIN_GAIN} points; largest mean gain {at}.")
    return Claim(name, "cannot be decided at this power",
                 f"{name} — cannot be decided at this power: no significant gain, but gains of {MIN_GAIN} points are "
                 f"not excluded; largest mean gain {at}.")


def decide_claims(paired: list[PairedRow], rows: list[Row]) -> list[Claim]:
    """The two claims' verdicts and sentences (rules in the module docstring)."""
    return [claim_gap(paired, rows), claim_ssl(paired)]
