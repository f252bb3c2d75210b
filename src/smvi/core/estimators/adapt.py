"""Step-size rules for AIS's HMC transitions: how the per-point leapfrog step size follows the pilot chains'
acceptance toward a target, one rule per class, looked up by name in :data:`STEP_SIZE_RULES`.

A rule is built from the initial step sizes ``[N]`` (one per data point) and the target acceptance; after every
transition :meth:`update` takes the pilots' mean acceptance probability per point ``[N]`` and returns the step sizes
``[N]`` for the next one. Every point adapts from its own pilots only, so a point's step sizes never depend on its
batch-mates. The weighted chains only *use* the step sizes, which is what keeps AIS exact (:func:`~.ais.ais`).

- ``"ratio"``: the original rule, ×1.02 when a running average of the acceptance (decay 0.9) is above target, ×0.98
  otherwise. It can change the step size by at most ×1.02 per transition, so 100 transitions move it at most ≈ 7×:
  too slow for short chains.
- ``"dual_averaging"``: Nesterov dual averaging as in NUTS (Hoffman & Gelman 2014, "The No-U-Turn sampler",
  Algorithm 5, with their constants γ = 0.05, t₀ = 10 and shrinkage point μ = log(10 ε₀)). log ε_m = μ − (√m/γ)·H̄_m,
  H̄_m = (1 − 1/(m + t₀))·H̄_{m−1} + (δ − α_m)/(m + t₀): the first transitions move the step by up to e^{1.8·|δ − α|},
  later ones by ≈ |δ − α|/(γ√m). AIS's target moves along the path, so adaptation never stops and ε_m itself is used
  (NUTS's averaged ε̄ is for after warm-up, which AIS does not have).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "StepSizeRule",
    "RatioRule",
    "DualAveraging",
    "STEP_SIZE_RULES",
    "MIN_STEP",
    "MAX_STEP",
    "TARGET_ACCEPT",
    "INIT_STEP_SIZE",
    "off_target",
]

MIN_STEP, MAX_STEP = 1e-5, 1.0  # every rule's step sizes stay in [MIN_STEP, MAX_STEP]
TARGET_ACCEPT, INIT_STEP_SIZE = 0.65, 0.05  # ais()'s defaults (Wu et al. 2017's target)


class StepSizeRule:
    """Per-point step sizes adapted toward ``target`` acceptance; ``step`` ``[N]`` is the current value."""

    def __init__(self, step: Tensor, target: float):
        self.step, self.target = step, target

    def update(self, accept_prob: Tensor) -> Tensor:
        """The step sizes ``[N]`` after one transition whose pilots' mean acceptance probability was ``accept_prob``."""
        raise NotImplementedError


class RatioRule(StepSizeRule):
    """×1.02 if the running acceptance average (0.9·avg + 0.1·α, starting at the target) is above target, else ×0.98."""

    UP, DOWN, SLOWNESS = 1.02, 0.98, 0.9

    def __init__(self, step: Tensor, target: float):
        super().__init__(step, target)
        self.avg = torch.full_like(self.step, target)

    def update(self, accept_prob: Tensor) -> Tensor:
        self.avg = self.avg.mul(self.SLOWNESS).add(accept_prob, alpha=1 - self.SLOWNESS)
        self.step = self.step.mul(torch.where(self.avg > self.target, self.UP, self.DOWN)).clamp(MIN_STEP, MAX_STEP)
        return self.step

    @classmethod
    def reach(cls, transitions: int) -> float:
        """The largest factor by which the rule can grow the step size in ``transitions`` transitions."""
        return cls.UP ** max(transitions, 0)


class DualAveraging(StepSizeRule):
    """Hoffman & Gelman (2014), Algorithm 5: log ε_m = μ − (√m/γ)·H̄_m, μ = log(10 ε₀) (see the module docstring)."""

    GAMMA, T0 = 0.05, 10.0

    def __init__(self, step: Tensor, target: float):
        super().__init__(step, target)
        self.mu = torch.log(10 * self.step)
        self.h_bar = torch.zeros_like(self.step)
        self.m = 0

    def update(self, accept_prob: Tensor) -> Tensor:
        self.m += 1
        w = 1.0 / (self.m + self.T0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        log_step = self.mu - math.sqrt(self.m) / self.GAMMA * self.h_bar
        self.step = log_step.exp().clamp(MIN_STEP, MAX_STEP)
        return self.step


STEP_SIZE_RULES: dict[str, type[StepSizeRule]] = {"ratio": RatioRule, "dual_averaging": DualAveraging}
"""The step-size rules by the name ``ais(..., adapt=...)`` and the setting ``ais.adapt`` take."""


def off_target(
    acceptance: float | None,
    *,
    adapt: str,
    steps: int,
    target: float = TARGET_ACCEPT,
    pilot_chains: int = 2,
    init_step_size: float = INIT_STEP_SIZE,
    tol: float = 0.1,
) -> str | None:
    """Why a mean acceptance ``acceptance`` more than ``tol`` from ``target`` came out of AIS with these settings, in
    one line with the fix; None when it is within ``tol`` (or not a number)."""
    if acceptance is None or not math.isfinite(acceptance) or abs(acceptance - target) <= tol:
        return None
    side = "above" if acceptance > target else "below"
    head = f"AIS acceptance {acceptance:.2f} is {side} the {target:g} target by more than {tol:g}: "
    if pilot_chains == 0:
        return head + f"the step size stays at {init_step_size:g} (no pilot chains to adapt it)"
    if adapt == "ratio":
        reach = RatioRule.reach(steps - 1)
        return head + (
            f"the 'ratio' step-size rule changes the step by at most x1.02 per step (x{reach:.1f} in "
            f"{steps} steps from {init_step_size:g}), too slowly for this model; "
            "set ais.adapt=dual_averaging"
        )
    return head + (
        f"the step size ({adapt}) did not keep up with the annealed distribution in {steps} steps, "
        "or reached "
        f"its bounds [{MIN_STEP:g}, {MAX_STEP:g}]; try more ais.steps or ais.leapfrog_steps"
    )
