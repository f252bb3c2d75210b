"""The claims' decision rules (smvi.report.claims) on hand-made paired comparisons: holds, does not hold, undecided."""

from __future__ import annotations

from smvi.report.aggregate import Row
from smvi.report.claims import MIN_GAIN, claim_gap, claim_ssl, decide_claims
from smvi.report.paired import PairedRow
from smvi.store.stats import PairedDiff


def paired(q, lam, mean, half, *, split="test", s=None, p=0.5, p_holm=0.5):
    d = PairedDiff(mean=mean, se=half / 4.3, low=mean - half, high=mean + half, p=p, n=3, unit="seeds")
    return PairedRow(q, split, s, lam, d, p_holm)


def gap_rows(means, se=0.05):
    return [Row("gap", "test", None, lam, m, se, 3, "training seeds", "nats") for lam, m in means.items()]


MONOTONE = gap_rows({0.0: 4.0, 0.01: 3.5, 0.1: 2.0})


def test_claim_1_holds_when_gap_and_log_likelihood_both_fall_at_the_largest_lambda():
    rows = [
        paired("gap", 0.1, -2.0, 0.3),
        paired("iwae_full", 0.1, -5.0, 1.0),
        paired("ais", 0.1, +9.0, 1.0),
        paired("gap", 0.01, +0.1, 0.3),
    ]  # the largest λ decides; IWAE on the whole test set before AIS
    c = claim_gap(rows, MONOTONE)
    assert c.verdict == "holds" and "λ = 0.1" in c.sentence and "IWAE on the whole test set" in c.sentence
    assert "-2.00 nats" in c.sentence and "never rises" in c.sentence


def test_claim_1_does_not_hold_without_a_cost_or_with_a_rising_gap():
    no_cost = [paired("gap", 0.1, -2.0, 0.3), paired("ais", 0.1, +1.0, 0.5)]
    c = claim_gap(no_cost, MONOTONE)
    assert c.verdict == "does not hold" and "AIS on the test subset" in c.sentence
    rising = gap_rows({0.0: 4.0, 0.01: 4.6, 0.1: 2.0})  # up by 0.6 > 2·√2·0.05 between 0 and 0.01
    c = claim_gap([paired("gap", 0.1, -2.0, 0.3), paired("ais", 0.1, -1.0, 0.5)], rising)
    assert c.verdict == "does not hold" and "from λ = 0 to 0.01" in c.sentence
    within_noise = gap_rows({0.0: 4.0, 0.01: 4.1, 0.1: 2.0})
    assert claim_gap([paired("gap", 0.1, -2.0, 0.3), paired("ais", 0.1, -1.0, 0.5)], within_noise).verdict == "holds"


def test_claim_1_is_undecided_when_an_interval_covers_zero_or_nothing_is_paired():
    c = claim_gap([paired("gap", 0.1, -2.0, 0.3), paired("ais", 0.1, -0.2, 0.5)], MONOTONE)
    assert c.verdict == "cannot be decided at this power"
    c = claim_gap([], MONOTONE)
    assert c.verdict == "cannot be decided at this power" and "per-image" in c.sentence


def test_claim_2_holds_with_a_holm_significant_positive_gain():
    rows = [
        paired("ssl_gain", 0.01, +1.2, 0.5, s=600, p=0.001, p_holm=0.01),
        paired("ssl_gain", 0.1, -1.0, 0.5, s=600, p=0.001, p_holm=0.01),
    ]
    c = claim_ssl(rows)
    assert c.verdict == "holds" and "λ = 0.01, s = 600" in c.sentence and "p = 0.01" in c.sentence
    # significant before the correction only: not enough
    rows[0] = paired("ssl_gain", 0.01, +1.2, 1.3, s=600, p=0.03, p_holm=0.12)
    assert claim_ssl(rows).verdict == "cannot be decided at this power"


def test_claim_2_does_not_hold_when_every_interval_excludes_a_useful_gain():
    rows = [paired("ssl_gain", lam, -0.3, 0.5, s=600, p=0.2, p_holm=0.8) for lam in (0.01, 0.1)]
    assert all(r.diff.high < MIN_GAIN for r in rows)
    assert claim_ssl(rows).verdict == "does not hold"
    rows.append(paired("ssl_gain", 0.03, +0.2, 0.5, s=1000, p=0.4, p_holm=0.8))  # 0.7 points not excluded
    assert claim_ssl(rows).verdict == "cannot be decided at this power"
    assert claim_ssl([]).verdict == "cannot be decided at this power"


# ---- flagged runs are not evidence (smvi.report.flags) ---------------------------------------------------------------
def flag(kind, lam, run="r"):
    from smvi.report.flags import Flag

    return Flag(kind, run, lam, (), f"{run}: {kind}")


def test_claim_1_is_not_decided_by_a_collapsed_largest_lambda():
    """The quick preset's case: λ = 0.1 collapsed (gap ≈ 0 for want of information) decided "holds" on its own."""
    rows = [
        paired("gap", 0.1, -2.0, 0.3),
        paired("ais", 0.1, -9.0, 1.0),  # the collapsed λ: a clear "holds"
        paired("gap", 0.01, -0.1, 0.3),
        paired("ais", 0.01, -0.2, 0.5),
    ]  # the others: within the noise
    assert claim_gap(rows, MONOTONE).verdict == "holds"
    c = claim_gap(rows, MONOTONE, [flag("collapse", 0.1)])
    assert c.verdict == "cannot be decided at this power" and "at λ = 0.01" in c.sentence
    assert "left out as flagged: λ = 0.1 (collapsed)" in c.sentence
    c = claim_gap(rows, MONOTONE, [flag("collapse", 0.1), flag("unfinished", 0.01)])
    assert c.verdict == "cannot be decided at this power" and "every λ compared with λ = 0 is flagged" in c.sentence
    assert "λ = 0.01 (unfinished)" in c.sentence and "λ = 0.1 (collapsed)" in c.sentence


def test_a_flagged_lambda_zero_decides_nothing_and_ais_flags_are_named():
    rows = [
        paired("gap", 0.1, -2.0, 0.3),
        paired("ais", 0.1, -9.0, 1.0),
        paired("ssl_gain", 0.1, +1.2, 0.5, s=600, p=0.001, p_holm=0.01),
    ]
    for c in decide_claims(rows, MONOTONE, [flag("unfinished", 0.0)]):
        assert c.verdict == "cannot be decided at this power" and "λ = 0 runs" in c.sentence
    c = claim_gap(rows, MONOTONE, [flag("acceptance", 0.1), flag("collapse", None, "a-learned-run")])
    assert c.verdict == "holds" and "(AIS flagged at λ = 0.1: acceptance; see Flags)" in c.sentence
    assert "left out" not in c.sentence  # a learned-λ run's flag concerns no λ of the grid


def test_claim_2_does_not_hold_on_a_gain_at_a_flagged_lambda_only():
    rows = [
        paired("ssl_gain", 0.01, +1.2, 0.5, s=600, p=0.001, p_holm=0.01),
        paired("ssl_gain", 0.1, -0.3, 0.5, s=600, p=0.2, p_holm=0.8),
    ]
    assert claim_ssl(rows).verdict == "holds"
    c = claim_ssl(rows, [flag("unfinished", 0.01)])
    assert c.verdict == "does not hold" and "λ = 0.1" in c.sentence
    assert "over 2 comparisons; left out as flagged: λ = 0.01 (unfinished)" in c.sentence  # Holm still over both
    c = claim_ssl(rows, [flag("unfinished", 0.01), flag("collapse", 0.1)])
    assert c.verdict == "cannot be decided at this power" and "no paired SSL comparison" in c.sentence
