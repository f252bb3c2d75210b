"""Paired statistics (smvi.store.stats): hand-computed fixtures, Holm's adjustment, and the SSL comparison's false-alarm
rate on synthetic features with no real difference between λ values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smvi.stages.ssl import ssl_eval
from smvi.store.stats import clustered_paired_t, holm, paired_t


def test_paired_t_matches_a_hand_computation():
    """d = (1, 2, 6): mean 3, s² = (4 + 1 + 9)/2 = 7, SE = √(7/3); with 2 degrees of freedom the t distribution has
    closed forms: the 97.5 % quantile is 0.95/√(2·0.975·0.025) = 4.302653 and the two-sided p of t is
    1 − t/√(2 + t²)."""
    r = paired_t([1.0, 2.0, 6.0])
    se = math.sqrt(7 / 3)
    t = 3 / se
    assert (r.mean, r.n, r.unit) == (3.0, 3, "pairs") and r.se == pytest.approx(se)
    q = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert q == pytest.approx(4.302653, abs=1e-6)
    assert (r.low, r.high) == pytest.approx((3 - q * se, 3 + q * se))
    assert r.p == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert paired_t([2.0, 2.0 + 1e-12, 2.0 - 1e-12]).p < 1e-6  # a consistent difference is significant
    one = paired_t([1.5, float("nan"), None])  # non-finite values are dropped; one value has no spread
    assert one.mean == 1.5 and one.se is one.low is one.p is None and one.n == 1
    assert paired_t([]) is None and paired_t([float("inf")]) is None


def test_clustered_paired_t_makes_the_seed_the_unit():
    """Cluster means (1.5, 3, 5): mean 19/6 and their SE; the pooled values (1, 2, 3, 3, 5): SE √(2.2/5)."""
    r = clustered_paired_t({0: [1, 2], 1: [3, 3], 2: [5]})
    means = [1.5, 3.0, 5.0]
    m = sum(means) / 3
    se = math.sqrt(sum((x - m) ** 2 for x in means) / 2 / 3)
    assert (r.mean, r.n, r.unit, r.n_values) == pytest.approx((19 / 6, 3, "seeds", 5)) and r.se == pytest.approx(se)
    assert r.se_pooled == pytest.approx(math.sqrt(2.2 / 5))
    single = clustered_paired_t({7: [1.0, 2.0, 6.0]}, value_unit="label subsets")
    assert single.unit == "label subsets (one seed)" and single.p == pytest.approx(paired_t([1, 2, 6]).p)
    assert clustered_paired_t({0: [], 1: [None]}) is None


def test_holm_matches_a_hand_computation():
    """Sorted 0.01, 0.03, 0.04, 0.2 (m = 4): 4·0.01 = 0.04, 3·0.03 = 0.09, max(0.09, 2·0.04) = 0.09, 0.2."""
    assert holm([0.01, 0.04, 0.03, 0.2, None]) == pytest.approx([0.04, 0.09, 0.09, 0.2, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, never below an earlier one
    assert holm([]) == [] and holm([None]) == [None]


# ---- the SSL test under the null ------------------------------------------------------------------------------------
CLASSES, N_TRAIN, N_TEST, SUBSETS, SEEDS = 4, 160, 200, (0, 1, 2, 3), (0, 1, 2)


def _features(rng, labels, centres, spread):
    """One trained model's features: its own class centres (the base ones moved by model-to-model noise) plus
    per-image noise."""
    own = centres + spread * rng.standard_normal(centres.shape)
    return own[labels] + rng.standard_normal((len(labels), centres.shape[1]))


def _p_value(rng, gain: float) -> float:
    """One synthetic sweep: three training seeds of a λ = 0 model and a λ model whose class centres are ``gain``
    times further apart (``gain`` = 1: no real difference), scored by the SSL protocol on four shared label subsets,
    compared by the report's test (smvi.report.paired: clustered paired t over training seeds)."""
    ytr, yte = np.arange(N_TRAIN) % CLASSES, np.arange(N_TEST) % CLASSES
    centres = 1.2 * rng.standard_normal((CLASSES, 2))
    clusters = {}
    for seed in SEEDS:
        acc = {}
        for name, scale in (("zero", 1.0), ("lam", gain)):
            tr, te = _features(rng, ytr, scale * centres, 0.3), _features(rng, yte, scale * centres, 0.3)
            r = ssl_eval(tr, ytr, te, yte, sizes=(20,), seeds=SUBSETS, C_grid=(1.0,), gamma_grid=(1.0,), folds=2)
            acc[name] = r.accuracy[20]
        clusters[seed] = [100 * (a - b) for a, b in zip(acc["lam"], acc["zero"], strict=True)]
    return clustered_paired_t(clusters).p


@pytest.mark.slow  # 220 synthetic sweeps of SVM fits: about 35 s
def test_the_ssl_comparison_keeps_its_false_alarm_rate_on_null_features():
    """200 null sweeps at α = 0.05: under the null the number of rejections is at most Binomial(200, 0.05) (mean 10,
    SD 3.1); the check allows 10 + 3·3.1 ≈ 19, which a valid test exceeds with probability ≈ 0.002. Pooling the
    label subsets of one seed as if independent (the tempting wrong unit) rejects far more often (44 of these 200, where
    the clustered test rejects 11), since model-to-model noise is shared by a seed's subsets. A real difference (class
    centres 2.5× further apart) must be found in most sweeps (20 of 20 when measured; 15 asked)."""
    rng = np.random.default_rng(2026)
    rejections = sum(_p_value(rng, 1.0) < 0.05 for _ in range(200))
    assert rejections <= 10 + 3 * math.sqrt(200 * 0.05 * 0.95), rejections
    power = sum(_p_value(rng, 2.5) < 0.05 for _ in range(20))
    assert power >= 15, power
