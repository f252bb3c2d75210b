"""The family registry: :class:`PosteriorFamily` (what a family is), :func:`register_family` (how it joins) and
:func:`make_family` (how everything else builds one by name). See the package docstring (:mod:`smvi.core.families`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor, nn
from torch.distributions import Distribution

from smvi.settings.families import FAMILIES as SPECS

__all__ = ["PosteriorFamily", "FAMILIES", "register_family", "make_family", "location"]


class PosteriorFamily(nn.Module):
    """A variational family: ``distribution(params [N, n_params])`` -> q with batch ``[N]``, event ``[z_dim]``.

    ``kind`` is the registered name (``model.posterior``). ``n_context``: how many of the last encoder outputs are a
    feature h(x) of the image rather than a parameter of q's shape (the flow's context); the VAE keeps their full He
    init, and :meth:`~smvi.core.models.LinearGaussian.random` makes them depend on x.
    """

    kind: str
    z_dim: int
    n_params: int
    n_context: int = 0

    @classmethod
    def from_settings(cls, z_dim: int, **settings: Any) -> PosteriorFamily:
        """The family for latent dimension ``z_dim`` from its ``model.*`` settings (resolved: defaults filled)."""
        return cls(z_dim, **settings)

    def distribution(self, params: Tensor) -> Distribution:
        raise NotImplementedError

    def local_init(self, params: Tensor) -> list[Tensor]:
        """Per-image free parameters (each with leading dim N), detached copies starting at the amortized values."""
        return [params.detach().clone()]

    def local_distribution(self, local: list[Tensor]) -> Distribution:
        """q built from :meth:`local_init`-shaped tensors."""
        return self.distribution(local[0])

    def bind(self, q: Distribution, model, x: Tensor) -> Distribution:
        """The posterior ``model.encode(x)`` returns from :meth:`distribution`'s ``q``: q itself, except for a family
        whose density involves the model (rejection sampling, :mod:`smvi.core.rejection`)."""
        return q


FAMILIES: dict[str, type[PosteriorFamily]] = {}
"""Every registered family's class by name (the names of :data:`smvi.settings.families.FAMILIES`)."""

F = TypeVar("F", bound=type[PosteriorFamily])


def register_family(name: str) -> Callable[[F], F]:
    """Class decorator: register a :class:`PosteriorFamily` subclass as ``model.posterior = name`` (which must be a
    name of :data:`smvi.settings.families.FAMILIES`, where its settings and description live)."""
    if name not in SPECS:
        raise ValueError(f"family {name!r} has no entry in smvi.settings.families.FAMILIES: add one there")

    def register(cls: F) -> F:
        if name in FAMILIES and FAMILIES[name] is not cls:
            raise ValueError(
                f"posterior family {name!r} is registered twice ({FAMILIES[name].__name__}, {cls.__name__})"
            )
        cls.kind = name
        FAMILIES[name] = cls
        return cls

    return register


def make_family(kind: str, z_dim: int, **settings: Any) -> PosteriorFamily:
    """The family named ``kind`` for latent dimension ``z_dim``. ``settings``: the family's own ``model.*`` settings
    (e.g. ``flow_layers``); unset or ``None`` ones get their defaults (:data:`smvi.settings.families.FAMILIES`)."""
    if kind not in FAMILIES:
        raise ValueError(f"unknown posterior family {kind!r}: use one of {', '.join(repr(n) for n in FAMILIES)}")
    spec = SPECS[kind]
    other = [k for k, v in settings.items() if k not in spec.settings and v is not None]
    if other:
        raise ValueError(
            f"{other[0]} is not a setting of posterior family {kind!r} "
            f"(its settings: {', '.join(spec.settings) or 'none'})"
        )
    resolved = {k: default if settings.get(k) is None else settings[k] for k, default in spec.settings.items()}
    return FAMILIES[kind].from_settings(z_dim, **resolved)


def location(q: Distribution) -> Tensor:
    """A deterministic summary of q(z|x), ``[N, z_dim]``: its mean, or for a family without a closed-form mean (a
    flow) its ``location``. The encoder feature of SSL and of the active-units count."""
    location = getattr(q, "location", None)
    return location if location is not None else q.mean
