"""Variational families q(z|x), one file each, joined by one registry.

A family turns the encoder's output, one parameter vector per example (``[N, n_params]``), into a reparameterizable
``torch.distributions.Distribution`` with batch shape ``[N]`` and event shape ``[z_dim]`` (rsample and an exact,
z-differentiable log_prob, which D_SM needs), so every objective and estimator works unchanged:

- ``"diagonal"`` :class:`DiagonalGaussian` (:mod:`.diagonal`) — N(μ, diag σ²), the paper's q.
- ``"full"`` :class:`FullGaussian` (:mod:`.full`) — N(μ, LLᵀ), L lower-triangular.
- ``"flow"`` :class:`CouplingFlow` (:mod:`.flow`) — affine coupling layers over a diagonal Gaussian, conditioned on a
  context h(x) from the encoder.
- ``"rejection"`` :class:`~smvi.core.rejection.RejectionFamily` (:mod:`smvi.core.rejection`) — q_T ∝ q·a_T over a
  base family; unnormalized: ``distribution(params)`` is the proposal q, and :meth:`~PosteriorFamily.bind` (called
  by ``model.encode``) makes q_T for the model and the batch.

For the gap split (:mod:`smvi.stages.gaps`) a family also exposes its per-image free parameters:
:meth:`~PosteriorFamily.local_init` copies the amortized ones for N images and
:meth:`~PosteriorFamily.local_distribution` builds q from such copies.

**Adding a family** (one file plus its registration):

1. In :data:`smvi.settings.families.FAMILIES` (torch-free: config validation, ``smvi config``, the report read it) add
   ``FamilySpec("name", "a few words", settings={...}, min_z_dim=...)``; a family with settings also declares them as
   ``None``-default fields of :class:`~smvi.settings.run.ModelConfig`.
2. Write the class in its own module, subclassing :class:`PosteriorFamily` and decorated with
   ``@register_family("name")`` (both from :mod:`smvi.core.families.base`); override
   :meth:`~PosteriorFamily.from_settings` when it has settings.
3. Import that module in this file (below), which registers it.

Then ``model.posterior = "name"`` builds it everywhere (:func:`make_family`), and the contract test
(tests/test_families.py) checks it like every other family: normalized density, score against autograd,
reparameterized samples, every training objective and the IWAE and AIS estimators.
"""

from smvi.core.families.base import FAMILIES, PosteriorFamily, location, make_family, register_family
from smvi.core.families.diagonal import DiagonalGaussian
from smvi.core.families.flow import CouplingFlow, FlowPosterior
from smvi.core.families.full import FullGaussian
from smvi.core.rejection import RejectionFamily  # registers "rejection" (the math is one file in core)

__all__ = [
    "FAMILIES",
    "PosteriorFamily",
    "register_family",
    "make_family",
    "location",
    "DiagonalGaussian",
    "FullGaussian",
    "CouplingFlow",
    "FlowPosterior",
    "RejectionFamily",
]
