"""AIS's step-size rules (smvi.core.estimators.adapt): every rule keeps AIS exact and batch-independent; the old rule
is unchanged bit for bit; dual averaging reaches its target in short chains; the setting reads old records as the old
rule; smvi evaluate says when the acceptance is off target and why."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import t as student_t

from smvi.core.estimators import ais, simulate
from smvi.core.estimators.adapt import STEP_SIZE_RULES, DualAveraging, RatioRule, off_target
from smvi.core.models import LinearGaussian
from smvi.settings.stages import AISConfig, EvalConfig
from smvi.studies.presets import EVAL_PRESETS

ALPHA = 1e-4


@pytest.fixture(scope="module")
def lg() -> LinearGaussian:
    return LinearGaussian.random(x_dim=6, z_dim=3, seed=1).requires_grad_(False)


def _old_rule(step: torch.Tensor, accepts: list[torch.Tensor], target: float) -> torch.Tensor:
    """The step-size rule as ais() wrote it before the rules were registered (in place, ×1.02 / ×0.98)."""
    step, avg = step.clone(), torch.full_like(step, target)
    for a in accepts:
        avg.mul_(0.9).add_(a, alpha=1 - 0.9)
        step.mul_(torch.where(avg > target, 1.02, 0.98)).clamp_(1e-5, 1.0)
    return step


def test_ratio_rule_is_the_old_rule_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    accepts = [torch.rand(7, generator=g) for _ in range(300)]
    rule = RatioRule(torch.full((7,), 0.05), 0.65)
    for a in accepts:
        rule.update(a)
    assert torch.equal(rule.step, _old_rule(torch.full((7,), 0.05), accepts, 0.65))


@pytest.mark.parametrize("adapt", sorted(STEP_SIZE_RULES))
def test_every_rule_keeps_ais_exact_and_batch_independent(lg, adapt):
    x, _ = simulate(lg, 6, seed=4)
    res = ais(lg, x, steps=200, chains=128, leapfrog_steps=5, seed=1, adapt=adapt)
    log_means = res.log_weights
    rel = (log_means - res.log_px).exp()
    se = rel.std(0) / math.sqrt(log_means.shape[0])
    crit = float(student_t.ppf(1 - ALPHA / 12, 127))
    assert ((res.log_px - lg.log_marginal(x)).abs() <= crit * se + se**2).all()
    assert res.settings["adapt"] == adapt
    perm = torch.tensor([3, 0, 5, 1])
    part = ais(lg, x[perm], steps=40, chains=8, seed=7, adapt=adapt)
    whole = ais(lg, x, steps=40, chains=8, seed=7, adapt=adapt)
    assert torch.allclose(part.log_weights, whole.log_weights[:, perm], rtol=0, atol=1e-10)
    assert torch.allclose(part.step_sizes, whole.step_sizes[perm], rtol=0, atol=1e-10)


def test_dual_averaging_reaches_the_target_where_the_ratio_rule_cannot():
    # a synthetic acceptance curve α(ε) = exp(−(ε/ε*)⁴) with ε* = 0.5 per point: the target 0.65 needs ε ≈ 0.4, 8× the
    # initial 0.05; the ratio rule can grow it by at most 1.02^99 ≈ 7× in 100 transitions
    eps_star = torch.tensor([0.5, 0.2, 0.8])
    for rule, reaches in ((DualAveraging, True), (RatioRule, False)):
        r = rule(torch.full((3,), 0.05), 0.65)
        accept = []
        for _ in range(99):
            accept.append(torch.exp(-((r.step / eps_star) ** 4)))
            r.update(accept[-1])
        late = torch.stack(accept[50:]).mean(0)
        assert ((late - 0.65).abs() < 0.05).all() == reaches, (rule, late)


def test_dual_averaging_ais_acceptance_is_on_target_after_100_steps(lg):
    x, _ = simulate(lg, 16, seed=2)
    kw = dict(steps=100, chains=4, leapfrog_steps=5, start="encoder", seed=0)
    new, old = ais(lg, x, adapt="dual_averaging", **kw), ais(lg, x, adapt="ratio", **kw)
    assert abs(new.acceptance - 0.65) < 0.1, new.acceptance
    assert abs(old.acceptance - 0.65) > 0.1, old.acceptance  # this model needs a larger step than the old rule reaches


def test_the_setting_reads_old_records_as_the_old_rule():
    assert AISConfig().adapt == "ratio" and AISConfig.model_validate({"steps": 100}).adapt == "ratio"
    old = EvalConfig().model_dump(mode="json")
    del old["ais"]["adapt"]
    assert EvalConfig.model_validate(old) == EvalConfig()
    assert EVAL_PRESETS["quick"].ais.adapt == "dual_averaging"
    with pytest.raises(ValueError):
        AISConfig(adapt="fastest")
    with pytest.raises(ValueError, match="adapt"):
        ais(LinearGaussian.random(x_dim=2, z_dim=1), torch.zeros(1, 2, dtype=torch.float64), steps=3, adapt="x")


def test_off_target_says_why():
    assert off_target(0.7, adapt="ratio", steps=100) is None and off_target(None, adapt="ratio", steps=100) is None
    why = off_target(0.97, adapt="ratio", steps=100)
    assert "above the 0.65 target" in why and "x7.1 in 100 steps" in why and "ais.adapt=dual_averaging" in why
    assert "below" in off_target(0.3, adapt="dual_averaging", steps=100)
    assert "no pilot chains" in off_target(0.3, adapt="dual_averaging", steps=100, pilot_chains=0)
