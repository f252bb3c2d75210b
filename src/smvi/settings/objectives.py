"""The training objectives by name: the torch-free half of the objective registry.

Each :class:`ObjectiveSpec` names an objective as ``train.objective`` spells it and says what the rest of smvi needs
to know about it without torch: its display name and knob (the report's methods and axes, the gap records), the
``train.*`` settings only it reads (config validation refuses them for another objective) and which of them its
function takes. The function is registered under the same name in :mod:`smvi.core.objectives`
(``@register_objective(name)``); tests/test_objectives_registry.py checks that the two sides list the same names and
runs every objective through the same contract.

Adding an objective: one entry in :data:`OBJECTIVES`, its function in core registered with ``@register_objective``,
and its settings as fields of :class:`~smvi.settings.run.TrainConfig` (``None`` by default, so other runs keep their
config and fingerprint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["ObjectiveSpec", "OBJECTIVES", "DEFAULT_OBJECTIVE", "objective_arguments", "knob_of"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective as the settings see it.

    ``name``: the value of ``train.objective``; ``display``: its name in the report (``"β-VAE"``); ``description``: a
    few words (what training maximizes). ``knob``: the ``train.*`` key of the one number a study varies (λ, β, k),
    shown as ``knob_label``; ``example``: a value of it for error messages. ``settings``: every ``train.*`` key only
    this objective reads -> its value when unused (another objective's run must leave it there; ``None`` also means
    "must be set when chosen"). ``arguments``: the settings its function takes (the knob by default).
    ``n_samples``: whether it reads ``train.n_samples``; ``constrained``: whether ``train.constraint`` can learn its
    knob; ``smvi_step_cost``: whether a training step costs about an SMVI step (the epoch-time prior applies)."""

    name: str
    display: str
    description: str
    knob: str
    knob_label: str
    settings: Mapping[str, Any]
    example: Any = None
    arguments: tuple[str, ...] = ()
    n_samples: bool = True
    constrained: bool = False
    smvi_step_cost: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "arguments", self.arguments or (self.knob,))


OBJECTIVES: Mapping[str, ObjectiveSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ObjectiveSpec(
                "smvi",
                "SMVI",
                "ELBO − λ·D_SM",
                knob="lam",
                knob_label="λ",
                settings={"lam": 0.0, "lam_warmup_epochs": 0.0},
                example=0.1,
                constrained=True,
            ),
            ObjectiveSpec(
                "beta",
                "β-VAE",
                "the β-VAE's E log p(x|z) − β·KL",
                knob="beta",
                knob_label="β",
                settings={"beta": None},
                example=4,
            ),
            ObjectiveSpec(
                "iwae",
                "IWAE",
                "IWAE's L_k",
                knob="iwae_k",
                knob_label="k",
                settings={"iwae_k": None},
                example=5,
                n_samples=False,
                smvi_step_cost=False,
            ),
        )
    }
)
"""Every training objective, by ``train.objective`` name, in the order help and listings show them."""

DEFAULT_OBJECTIVE = "smvi"
"""The objective of a run that does not set ``train.objective`` (the paper's)."""


def objective_arguments(train: Any) -> dict[str, Any]:
    """The settings the chosen objective's function takes, by key, from ``train`` (a
    :class:`~smvi.settings.run.TrainConfig`)."""
    return {key: getattr(train, key) for key in OBJECTIVES[train.objective].arguments}


def knob_of(train: Any) -> dict[str, Any]:
    """The run's knob along its objective, ``{key: value}`` (``{"lam": λ}``, ``{"beta": β}``, ``{"iwae_k": k}``)."""
    key = OBJECTIVES[train.objective].knob
    return {key: getattr(train, key)}
