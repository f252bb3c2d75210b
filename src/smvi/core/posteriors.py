"""Kept for old imports: the variational families now live in :mod:`smvi.core.families`, one file each."""

from smvi.core.families import (
    FAMILIES,
    CouplingFlow,
    DiagonalGaussian,
    FlowPosterior,
    FullGaussian,
    PosteriorFamily,
    location,
    make_family,
    register_family,
)
from smvi.settings.run import FLOW_DEFAULTS

__all__ = [
    "PosteriorFamily",
    "DiagonalGaussian",
    "FullGaussian",
    "CouplingFlow",
    "FlowPosterior",
    "make_family",
    "location",
    "FLOW_DEFAULTS",
    "FAMILIES",
    "register_family",
]
