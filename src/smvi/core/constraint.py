"""Constrained SMVI: λ as a Lagrange multiplier, learned so that training meets an inference-quality target.

The problem is

    maximize  E_x ELBO(x)   subject to   E_x C(x) ≤ ε,

with C the score-matching divergence D_SM(q(z|x), p(z|x)) (``measure = "dsm"``) or a per-batch estimate of the ELBO
gap (``"gap"``, :func:`iwae_gap`). Its Lagrangian, E ELBO − λ·(E D_SM − ε) with λ ≥ 0, is the paper's objective
(eq. 6) up to a constant: the parameters take the usual SMVI step at the current λ, and λ takes a dual step after
it (:func:`dual_update`). The paper's discussion proposes this; the update follows GECO (Rezende & Viola 2018,
"Taming VAEs": a multiplicative update driven by a moving average of the constraint), and the Lagrangian view of VAE
objectives is Zhao, Song & Ermon's ("The information-autoencoding family", the paper's reference 16).

The dual step works on ln λ and on the log-ratio ln(avg/ε), so one step size serves targets from D_SM ≈ 1 to 600 and
λ from 10⁻⁵ to 10 (the useful λ span three orders of magnitude on MNIST): λ grows while the moving average is above
the target, shrinks while it is below, and stands still where it meets it — the complementary-slackness conditions
λ ≥ 0, avg ≤ ε, λ·(avg − ε) = 0 hold at its fixed points up to the floor λ_min. With the gap measure, λ still weighs
D_SM in the loss: λ is then a feedback controller steered by the measured gap (which falls as λ grows), not the
multiplier of the gap constraint itself.

Everything here is pure: Python floats in, Python floats out (exactly reproducible, and JSON round-trips them bit for
bit, so the state lives in the checkpoint's progress record).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from smvi.core.objectives import SMVITerms
from smvi.settings.run import ConfigError, ConstraintConfig, TrainConfig

__all__ = ["DualState", "initial_state", "dual_update", "iwae_gap", "batch_measure", "EpochDual", "Status"]

_MAX_LOG_RATIO = math.log(1e6)  # |ln(avg/ε)| is clipped here: one step moves ln λ by at most η·13.8

Status = Literal["active", "slack", "unreachable"]


@dataclass(frozen=True)
class DualState:
    """The multiplier's state: ``lam`` (λ for the next step), ``avg`` (moving average of the measure; ``None``
    before the first step) and ``steps`` (dual updates done)."""

    lam: float
    avg: float | None
    steps: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> DualState:
        """The state saved by :meth:`to_json`; ``ValueError`` if it is not one (missing keys, wrong types, a λ or
        average that is negative or not finite)."""
        if not isinstance(d, dict) or set(d) != {"lam", "avg", "steps"}:
            raise ValueError(f"not a dual state: {d!r}")
        lam, avg, steps = d["lam"], d["avg"], d["steps"]
        ok_avg = avg is None or (isinstance(avg, (int, float)) and math.isfinite(avg) and avg >= 0)
        if not (
            isinstance(lam, (int, float))
            and math.isfinite(lam)
            and lam > 0
            and ok_avg
            and isinstance(steps, int)
            and steps >= 0
        ):
            raise ValueError(f"not a valid dual state: {d!r}")
        return cls(float(lam), None if avg is None else float(avg), steps)


def initial_state(tc: TrainConfig) -> DualState | None:
    """The dual state before the first step, or ``None`` when λ is fixed (no target).

    Raises :class:`ConfigError` for a fixed λ and a target at once (a config made with ``model_copy`` skips the
    validation that :class:`TrainConfig` otherwise does).
    """
    c = tc.constraint
    if c.target is None:
        return None
    if tc.lam != 0 or tc.lam_warmup_epochs != 0:
        raise ConfigError(
            f"train.lam={tc.lam} (warm-up {tc.lam_warmup_epochs}) and train.constraint.target="
            f"{c.target} are both set: λ is either fixed or learned; drop one"
        )
    return DualState(lam=c.lam_init, avg=None, steps=0)


def dual_update(state: DualState, value: float, cfg: ConstraintConfig) -> DualState:
    """One dual step after a training step whose batch had measure ``value`` (a batch mean, ≥ 0).

    With β = ``cfg.ema_decay``, η = ``cfg.step_size`` and ε = ``cfg.target``::

        avg' = value                          at the first step (no start-up bias)
               β·avg + (1 − β)·value          afterwards
        λ'   = clip(λ · exp(η · clip(ln(avg'/ε), −L, L)), λ_min, λ_max),   L = ln 10⁶

    i.e. λ' = λ·(avg'/ε)^η: GECO's multiplicative update (λ ← λ·exp(η·C̄)) applied to the constraint written as
    ln(avg/ε) ≤ 0, which makes η dimensionless (η = 0.01: λ grows ~1 % per step while avg is e times the target).
    The moving average (time constant 1/(1 − β) steps) smooths the batch-to-batch noise of the measure. λ stays in
    [λ_min, λ_max]: always finite and positive (λ = 0 would be absorbing for a multiplicative update), so "λ → 0" on
    a slack constraint means λ → λ_min. At a fixed point E ln(avg/ε) = 0: avg meets ε up to the moving average's
    noise (a bias of about Var(ln avg)/2, well under 1 % at batch 512).

    Raises ``ValueError`` for a negative or non-finite ``value`` (the trainer skips such steps before calling this).
    """
    if cfg.target is None:
        raise ValueError("dual_update needs a constraint with a target")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"the measure must be finite and non-negative, got {value}")
    avg = value if state.avg is None else cfg.ema_decay * state.avg + (1 - cfg.ema_decay) * value
    log_ratio = math.log(avg / cfg.target) if avg > 0 else -_MAX_LOG_RATIO
    log_ratio = min(max(log_ratio, -_MAX_LOG_RATIO), _MAX_LOG_RATIO)
    lam = min(max(state.lam * math.exp(cfg.step_size * log_ratio), cfg.lam_min), cfg.lam_max)
    return DualState(lam=lam, avg=avg, steps=state.steps + 1)


@torch.no_grad()
def iwae_gap(model, x: Tensor, *, k: int) -> Tensor:
    """Per-example estimate of the ELBO gap, IWAE_k − ELBO_k, from one set of k draws z_i ~ q(z|x): ``[N]``, float64.

    With log-weights w_i = log p(x, z_i) − log q(z_i|x): ĝ = log((1/k) Σ exp w_i) − (1/k) Σ w_i. By Jensen ĝ ≥ 0, and
    E ĝ = E IWAE_k − ELBO ≤ log p(x) − ELBO = KL(q(z|x) ‖ p(z|x)): a **lower bound** of the gap in expectation that
    tightens as k grows (Burda et al. 2016) and is 0 at k = 1. On MNIST VAEs with gaps of a few nats it is well
    below the AIS gap at small k, so a run that meets a gap target has a larger true gap: compare with ``smvi
    evaluate``'s AIS gap. Draws from the global torch RNG (reproducible and checkpointed with the run). No gradients.
    """
    q = model.encode(x)
    z = q.sample((k,))  # [k, N, z_dim]
    log_w = (model.log_prior(z) + model.log_likelihood(x, z) - q.log_prob(z)).double()
    return torch.logsumexp(log_w, 0) - math.log(k) - log_w.mean(0)


def batch_measure(cfg: ConstraintConfig, terms: SMVITerms, model, x: Tensor) -> float:
    """The batch mean of the constrained measure after a training step's forward pass: D_SM from ``terms`` (computed
    whenever λ > 0, which a learned λ always is) or :func:`iwae_gap` on ``x`` (k = ``cfg.gap_k``). May be non-finite;
    the trainer then skips the step."""
    if cfg.measure == "dsm":
        if terms.d_sm is None:
            raise ValueError("the objective did not compute D_SM (λ = 0?)")
        return float(terms.d_sm.detach().double().mean())
    return float(iwae_gap(model, x, k=cfg.gap_k).mean())


@dataclass
class EpochDual:
    """Per-epoch bookkeeping of λ (not checkpointed: a resumed run redoes the whole epoch): the mean λ used, and how
    many steps ended with λ at its cap or floor, from which :meth:`metrics` derives the constraint's status."""

    cfg: ConstraintConfig
    steps: int = 0
    lam_sum: float = 0.0
    at_max: int = 0
    at_min: int = 0

    def record(self, lam_used: float, new: DualState) -> None:
        self.steps += 1
        self.lam_sum += lam_used
        self.at_max += new.lam >= self.cfg.lam_max
        self.at_min += new.lam <= self.cfg.lam_min

    def status(self, state: DualState) -> Status:
        """``unreachable``: every step of the epoch ended with λ at its cap and the average still above the target
        (λ cannot push further; raise ``lam_max`` or relax the target). ``slack``: λ at its floor all epoch with the
        average below the target (the constraint is inactive: the run is the plain VAE). Otherwise ``active``."""
        full, target = self.steps > 0, self.cfg.target
        if full and self.at_max == self.steps and state.avg is not None and target is not None and state.avg > target:
            return "unreachable"
        if full and self.at_min == self.steps and state.avg is not None and target is not None and state.avg < target:
            return "slack"
        return "active"

    def metrics(self, state: DualState) -> dict[str, Any]:
        """The epoch's metrics.jsonl fields besides λ at its end (``lam``): the mean λ used, the measure's moving
        average and target, the status and the steps that ended with λ at its cap."""
        return {
            "lam_mean": self.lam_sum / self.steps if self.steps else state.lam,
            "constraint_measure": self.cfg.measure,
            "constraint_target": self.cfg.target,
            "constraint_avg": state.avg,
            "constraint_status": self.status(state),
            "lam_at_max_steps": self.at_max,
        }
