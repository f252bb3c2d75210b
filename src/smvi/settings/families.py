"""The variational families by name: the torch-free half of the family registry.

Each :class:`FamilySpec` names a family as ``model.posterior`` spells it, says what it is (for ``smvi config``, CLI
help and the report), lists the ``model.*`` settings only it reads with the defaults an unset one gets, and the
smallest latent dimension it supports. Config validation reads this list; nothing here imports torch.

The implementation is registered under the same name in :mod:`smvi.core.families` (``@register_family(name)`` on a
:class:`~smvi.core.families.PosteriorFamily` subclass); tests/test_families.py checks that the two sides list the same
names. Adding a family: one entry in :data:`FAMILIES`, one file in ``smvi/core/families/`` (imported by that
package), and, when it has settings, their fields on :class:`~smvi.settings.run.ModelConfig` (``None`` by default, so
runs of the other families keep their config and fingerprint).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FamilySpec", "FAMILIES", "DEFAULT_FAMILY", "family_settings"]


@dataclass(frozen=True)
class FamilySpec:
    """A family as the settings see it: ``name`` (the value of ``model.posterior``), ``description`` (a few words),
    ``settings`` (``model.*`` key -> the default it gets when unset; only this family may set them) and ``min_z_dim``.
    ``check(settings)``: a one-line error for settings that do not go together, or None. ``objectives``: the
    ``train.objective`` names it trains with (empty: all). ``normalized``: False for a family whose
    ``distribution(params)`` is a proposal that ``model.encode(x)`` binds into an unnormalized posterior (rejection
    sampling: log q_T with an estimated normalizer). ``label(config)``: what the report's method name adds after
    ``"<name> q"``, from the run's flat config (settings that make different methods of one family). ``metrics``: the
    diagnostics its training writes to each epoch's line of ``metrics.jsonl`` (the report's cost table shows them)."""

    name: str
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    min_z_dim: int = 1
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    objectives: tuple[str, ...] = ()
    normalized: bool = True
    label: Callable[[Mapping[str, Any]], str] | None = None
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))


FAMILIES: Mapping[str, FamilySpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            FamilySpec("diagonal", "the paper's diagonal Gaussian"),
            FamilySpec("full", "a full-covariance Gaussian"),
            FamilySpec(
                "flow",
                "a conditional affine-coupling flow",
                settings={"flow_layers": 4, "flow_hidden": (256,), "flow_context": 32},
                min_z_dim=2,
            ),
            FamilySpec(
                "rejection",
                "rejection sampling over a base family, q_T ∝ q·σ(log p(x,z) − log q + T) (smvi.core.rejection)",
                settings={
                    "rejection_base": "diagonal",
                    "rejection_threshold": None,
                    "rejection_acceptance": None,
                    "rejection_proposals": 16,
                    "rejection_cap": 1000,
                },
                check=lambda s: (
                    None
                    if s["rejection_threshold"] is None or s["rejection_acceptance"] is None
                    else (
                        "model.rejection_threshold (a fixed T) and model.rejection_acceptance (T chosen per x) "
                        "are both "
                        "set: keep one"
                    )
                ),
                objectives=("smvi", "beta"),
                normalized=False,
                metrics=("acceptance", "proposals_per_sample", "threshold"),
                label=lambda c: (
                    f" (T = {c['model.rejection_threshold']:g})"
                    if c.get("model.rejection_threshold") is not None
                    else f" (acceptance {c.get('model.rejection_acceptance') or 0.5:g})"
                ),
            ),
        )
    }
)
"""Every variational family, by ``model.posterior`` name, in the order help and listings show them."""

DEFAULT_FAMILY = "diagonal"
"""The family of a run that does not set ``model.posterior`` (the paper's q); the report leaves it out of labels."""


def family_settings(model: Any) -> dict[str, Any]:
    """The settings the family of ``model`` (a :class:`~smvi.settings.run.ModelConfig`) reads, by key."""
    return {key: getattr(model, key) for key in FAMILIES[model.posterior].settings}
