"""Settings of the stages (torch-free): :class:`AISConfig`, :class:`EvalConfig`, :class:`ConvergenceConfig`,
:class:`GapConfig`, :class:`PicturesConfig`, :class:`SSLConfig`, :class:`RefinedSSLConfig`; and :data:`STAGES`, the
list of stages by name.

The AIS settings carry the names of :func:`smvi.core.estimators.ais`'s keyword arguments and reach it through one
mapping, ``**cfg.ais.kwargs()``: adding a field here (with its default) is all it takes to pass a new keyword through
evaluate, convergence, gaps and the sweep. Files written before this naming (``eval.ais_steps = 500`` in a
``sweep.toml``, the settings in an old ``eval.json``) are read through :func:`upgrade_eval_settings`, which renames the
old keys; settings *saved* before ``ais.precision`` existed (a record's, a sweep directory's ``sweep.toml``) are read
through :func:`with_saved_precision`, which fills in the fp32 they ran with, so today's default ("auto") never relabels
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from smvi.settings import limits as L
from smvi.settings.run import Distinct, RunConfig

__all__ = [
    "AISSampler",
    "AISConfig",
    "EvalConfig",
    "ConvergenceConfig",
    "GapConfig",
    "PicturesConfig",
    "SSLConfig",
    "RefinedSSLConfig",
    "upgrade_eval_settings",
    "with_saved_precision",
    "LEGACY_AIS_KEYS",
    "LEGACY_PRECISION",
    "StageSpec",
    "STAGES",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


class AISSampler(_Frozen):
    """How each AIS chain moves: :func:`smvi.core.estimators.ais` keywords except ``steps`` (which a convergence check
    varies). Field names are the keyword names."""

    chains: Annotated[int, L.CHAINS] = Field(default=4, gt=0, description="AIS chains per point")
    leapfrog_steps: Annotated[int, L.STEPS] = Field(default=5, gt=0, description="leapfrog steps per HMC transition")
    schedule: Literal["sigmoid", "linear"] = Field(default="sigmoid", description="β schedule")
    start: Literal["prior", "encoder"] = Field(default="encoder", description="AIS initial distribution")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        default="auto",
        description="bf16: the leapfrog force (AIS) and IWAE's decoder pass with bf16 products, see "
        "smvi.core.estimators.precision; auto (the default): bf16 where the hardware has bf16 units, else fp32 "
        "(the eval record says which ran; BDMC gaps and paired estimates unchanged on the paper model: "
        "docs/guide/evaluation.md)",
    )
    adapt: Literal["ratio", "dual_averaging"] = Field(
        default="ratio",
        description="step-size rule (smvi.core.estimators.adapt): ratio (x1.02 per step at most, too slow "
        "for short chains; records without this key used it) or dual_averaging (Hoffman & Gelman "
        "2014: reaches the target acceptance within tens of steps)",
    )

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ais / bdmc / ais_ladder these settings stand for."""
        return self.model_dump()


class AISConfig(AISSampler):
    """AIS as ``smvi evaluate`` runs it: the sampler plus the number of intermediate distributions."""

    steps: Annotated[int, L.STEPS] = Field(default=1000, gt=0, description="AIS intermediate distributions")


class EvalConfig(_Frozen):
    """How much work ``smvi evaluate`` does. The defaults are the converged setting (see the README's evaluation
    section for the BDMC evidence); ``smvi.studies.presets.EVAL_PRESETS['quick']`` is for quick looks."""

    n_test: Annotated[int, L.IMAGES] = Field(default=200, gt=0, description="test points (a fixed random subset)")
    n_train: Annotated[int, L.IMAGES] = Field(
        default=200, ge=0, description="training points (a fixed random subset); 0 skips the split"
    )
    subset_seed: Annotated[int, L.SEED] = Field(
        default=0, ge=0, description="seed of the subsets (binarization uses data.eval_seed)"
    )
    elbo_samples: Annotated[int, L.SAMPLES] = Field(default=1000, gt=0, description="z samples per point for the ELBO")
    dsm_samples: Annotated[int, L.SAMPLES] = Field(default=100, gt=0, description="z samples per point for D_SM")
    iwae_k: Annotated[int, L.SAMPLES] = Field(
        default=1000, ge=0, description="importance samples of the IWAE bound; 0 skips it"
    )
    iwae_full_test_k: Annotated[int, L.SAMPLES] = Field(
        default=0,
        ge=0,
        description="IWAE samples on the whole test set (log p(x) comparable with published numbers); 0 skips it",
    )
    ais: AISConfig = AISConfig()
    batch_size: Annotated[int, L.BATCH] = Field(
        default=100, gt=0, description="points evaluated together (results do not depend on it)"
    )
    seed: Annotated[int, L.SEED] = Field(default=0, ge=0, description="seed of every estimator")


class ConvergenceConfig(_Frozen):
    """What ``smvi convergence`` checks: BDMC on ``n_points`` simulated points and an AIS ladder on ``n_points`` test
    points, at each number of ``steps``, with the sampler ``ais``."""

    steps: Annotated[tuple[PositiveInt, ...], Distinct, L.EACH_STEPS] = Field(
        default=(100, 300, 1000), description="AIS lengths compared"
    )
    n_points: Annotated[int, L.IMAGES] = Field(
        default=100, gt=0, description="simulated points (BDMC) and test points (ladder)"
    )
    tol: float = Field(
        default=0.1, gt=0, description="agreement (nats) between successive lengths that counts as converged"
    )
    subset_seed: Annotated[int, L.SEED] = Field(
        default=0, ge=0, description="seed of the test subset (binarization uses data.eval_seed)"
    )
    seed: Annotated[int, L.SEED] = Field(default=0, ge=0, description="seed of the simulation and of AIS")
    ais: AISSampler = AISSampler()


class GapConfig(_Frozen):
    """Settings of ``smvi gaps`` (:func:`smvi.stages.gaps.gaps_run`): which test images, the AIS that gives log p(x) and
    the local fit (:func:`smvi.stages.gaps.fit_local`). The AIS defaults are the cpu preset's converged ones (500 steps,
    4 chains, 5 leapfrogs, from the encoder)."""

    n_points: Annotated[int, L.IMAGES] = Field(
        default=100, gt=0, description="test images (the fixed subset smvi evaluate scores first)"
    )
    subset_seed: Annotated[int, L.SEED] = Field(
        default=0, ge=0, description="seed of the subset (binarization uses the run's data.eval_seed)"
    )
    ais: AISConfig = AISConfig(steps=500)
    steps: Annotated[int, L.STEPS] = Field(default=3000, gt=0, description="Adam steps of the local fit")
    lr: Annotated[float, L.WEIGHT] = Field(
        default=1e-2, gt=0, description="initial learning rate of the local fit (cosine decay to 1 %)"
    )
    n_samples: Annotated[int, L.SAMPLES] = Field(
        default=16, gt=0, description="draws per image and step in the local fit"
    )
    window: Annotated[int, L.STEPS] = Field(
        default=100, gt=0, description="steps between the convergence check's evaluations"
    )
    tol: float = Field(default=0.05, gt=0, description="converged: no image gained this much (nats) in the last window")
    eval_samples: Annotated[int, L.SAMPLES] = Field(default=1000, gt=0, description="draws per image for each ELBO")
    batch_size: Annotated[int, L.BATCH] = Field(default=100, gt=0, description="images processed together")
    seed: Annotated[int, L.SEED] = Field(default=0, ge=0, description="seed of AIS, the fit and the ELBO draws")

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`smvi.stages.gaps.fit_local` these settings stand for."""
        return {k: getattr(self, k) for k in ("steps", "lr", "n_samples", "window", "tol")}


class PicturesConfig(_Frozen):
    """What ``smvi pictures`` (:func:`smvi.stages.pictures.pictures_run`) draws: decoder means of prior samples, test
    images above their reconstructions, and the encoder means of test images in 2-d (PCA or t-SNE), coloured by label.
    The test images are fixed subsets drawn with ``seed``, given to the model as the run's ``data.transform`` makes them
    (with its ``data.eval_seed``, like every evaluation); a subset larger than the test split is the whole split."""

    n_samples: Annotated[int, L.PICTURES] = Field(
        default=64, gt=0, description="prior samples z ~ N(0, I) whose decoder means are drawn"
    )
    n_reconstructions: Annotated[int, L.PICTURES] = Field(
        default=32, gt=0, description="test images shown above their reconstructions"
    )
    n_latent: Annotated[int, L.IMAGES] = Field(
        default=2000, ge=2, description="test images in the 2-d picture of the encoder means"
    )
    projection: Literal["pca", "tsne"] = Field(
        default="pca",
        description="how the encoder means are put in 2-d: pca (linear, about 1 s) or tsne (scikit-learn's "
        "t-SNE: local neighbourhoods, about 15 s for 2000 images on one core)",
    )
    columns: Annotated[int, L.COLUMNS] = Field(
        default=8, gt=0, description="images per row of the sample and reconstruction grids"
    )
    seed: Annotated[int, L.SEED] = Field(
        default=0, ge=0, description="seed of the prior samples and of the two test subsets"
    )


Inputs = Literal["binarized", "gray"]
Scaling = Literal["global", "standard"]
Protocol = Literal["paper", "robust"]
ROBUST_SUBSETS = tuple(range(20))
"""The label subsets of the robust SSL protocol when ``seeds`` is not given."""


Positives = Annotated[tuple[PositiveFloat, ...], Distinct]


class SSLConfig(BaseModel):
    """Settings of :func:`smvi.stages.ssl.ssl_run` (from strings: :func:`smvi.settings.run.build_config`). With the
    defaults a run takes about 2.5 min on 2 idle CPU cores, over half of it on the raw-pixel baseline
    (``raw_pixels=False`` skips it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    protocol: Protocol = Field(
        default="paper",
        description="'paper': the RBF SVM on the (C, γ) grids below; 'robust': RBF SVM, logistic regression "
        "and k-NN on growing grids, 20 label subsets by default, features saved (smvi.stages.ssl_robust)",
    )
    sizes: Annotated[tuple[PositiveInt, ...], Distinct, L.EACH_IMAGES] = Field(
        default=(600, 1000, 3000), description="labeled-set sizes s (multiples of the classes)"
    )
    seeds: Annotated[tuple[NonNegativeInt, ...], Distinct, L.EACH_SEED] = Field(
        default=(0, 1, 2, 3, 4),
        description="label-subset seeds; mean ± std over them (robust protocol: 0 … 19 if unset)",
    )
    inputs: Inputs = Field(default="binarized", description="encoder input: fixed-seed binary images or gray levels")
    scaling: Scaling = Field(
        default="global", description="'global' (one common scale) or 'standard' (per-feature z-score)"
    )
    C_grid: Positives = Field(default=(1.0, 10.0, 100.0), description="SVM C values tried (paper protocol)")
    gamma_grid: Positives = Field(
        default=(0.3, 1.0, 3.0), description="RBF γ values tried, in units of 1/d (paper protocol)"
    )
    cv_folds: Annotated[int, L.IMAGES] = Field(
        default=3, ge=2, description="stratified CV folds inside the labeled set"
    )
    test_size: Annotated[int | None, L.IMAGES] = Field(
        default=None, gt=0, description="fixed random test subset; unset = the full test set"
    )
    raw_pixels: bool = Field(
        default=True, description="also run the raw-pixel baseline (paper protocol; robust: false if unset)"
    )
    n_jobs: Annotated[int, L.JOBS] = Field(default=2, ge=1, description="threads for the (seed, s) tasks")
    batch_size: Annotated[int, L.BATCH] = Field(default=2000, gt=0, description="images per encoder forward pass")

    @model_validator(mode="before")
    @classmethod
    def _robust_defaults(cls, data: Any) -> Any:
        """The robust protocol's own defaults for the keys it was not given: 20 label subsets, no raw-pixel baseline
        (it does not depend on the run; the paper protocol's record has it)."""
        if isinstance(data, dict) and data.get("protocol") == "robust":
            data = {"seeds": ROBUST_SUBSETS, "raw_pixels": False, **data}
        return data

    @model_validator(mode="after")
    def _paper_keys_need_the_paper(self) -> SSLConfig:
        if self.protocol == "robust":
            if self.raw_pixels:
                raise ValueError("ssl.raw_pixels is run by protocol='paper' only: drop it (or set it to false)")
            for key in ("C_grid", "gamma_grid"):
                if getattr(self, key) != type(self).model_fields[key].default:
                    raise ValueError(
                        f"ssl.{key} is used by protocol='paper' only (the robust protocol searches its "
                        "own growing grids, smvi.stages.ssl_classifiers): drop it"
                    )
        return self


class RefinedSSLConfig(_Frozen):
    """Settings of ``smvi ssl-refined`` (:func:`smvi.stages.ssl_refined.ssl_refined_run`): the robust SSL protocol on
    the encoder means μ_φ(x) and, on the same images and label subsets, on the means of per-image refined posteriors
    (the gap split's local fit, :func:`smvi.stages.gaps.fit_local`, run for ``steps`` steps from the encoder's q):
    better inference at test time only, the model unchanged. The local fit costs ``steps`` × ``n_samples`` decoder
    passes (forward and backward) per image, so the protocol is a reduced one by default (5 label subsets, 2000 test
    images: about 16,000 images to refine). The defaults (100 steps of 4 draws) close 93 % of the amortization gap
    that 1000 steps close on a 300-epoch paper-preset model, at 0.05 s per image on one core
    (``benchmarks/refined_q_budget.py``, ``benchmarks/results_refined_q_budget_paper.json``)."""

    sizes: Annotated[tuple[PositiveInt, ...], Distinct, L.EACH_IMAGES] = Field(
        default=(600, 1000, 3000), description="labeled-set sizes s (multiples of the classes)"
    )
    seeds: Annotated[tuple[NonNegativeInt, ...], Distinct, L.EACH_SEED] = Field(
        default=(0, 1, 2, 3, 4), description="label subsets (the robust protocol's subset seeds)"
    )
    test_size: Annotated[int | None, L.IMAGES] = Field(
        default=2000, gt=0, description="fixed random test subset (the ssl stage's); unset = the full test set"
    )
    scaling: Scaling = Field(
        default="global", description="'global' (one common scale) or 'standard' (per-feature z-score)"
    )
    cv_folds: Annotated[int, L.IMAGES] = Field(
        default=3, ge=2, description="stratified CV folds inside the labeled set"
    )
    n_jobs: Annotated[int, L.JOBS] = Field(default=2, ge=1, description="threads for the (s, subset) tasks")
    steps: Annotated[int, L.STEPS] = Field(default=100, gt=0, description="Adam steps of each image's local fit")
    lr: Annotated[float, L.WEIGHT] = Field(
        default=1e-2, gt=0, description="initial learning rate of the local fit (cosine decay to 1 %)"
    )
    n_samples: Annotated[int, L.SAMPLES] = Field(
        default=4, gt=0, description="draws per image and step in the local fit"
    )
    batch_size: Annotated[int, L.BATCH] = Field(default=500, gt=0, description="images refined together")
    seed: Annotated[int, L.SEED] = Field(default=0, ge=0, description="seed of the local fit's draws")

    def protocol(self) -> SSLConfig:
        """The robust protocol's settings these stand for (binarized inputs: the local fit scores the likelihood of
        the images the encoder saw)."""
        keys = ("sizes", "seeds", "test_size", "scaling", "cv_folds", "n_jobs")
        return SSLConfig(protocol="robust", **{k: getattr(self, k) for k in keys})


# ---- the stages ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """A stage as the settings see it: ``name`` (the CLI verb and the sweep's ``stages`` entry), its ``settings``
    class and ``key`` (the sweep config's section holding them), the ``record`` it writes in the run directory
    (:meth:`smvi.store.rundir.RunDir.record_path`; None: train, whose result is the checkpoint), ``listed``: a column
    of ``smvi status`` even in a sweep that does not run it (else only once some run has its record), and a few words
    of ``description``."""

    name: str
    settings: type[BaseModel]
    key: str
    record: str | None
    description: str
    listed: bool = False


STAGES: Mapping[str, StageSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            StageSpec("train", RunConfig, "run", None, "train the run (resumed from its checkpoint)", listed=True),
            StageSpec(
                "evaluate",
                EvalConfig,
                "eval",
                "eval",
                "ELBO, D_SM, IWAE and AIS log p(x) on test and train subsets",
                listed=True,
            ),
            StageSpec(
                "ssl", SSLConfig, "ssl", "ssl", "semi-supervised accuracy of an SVM on the encoder means", listed=True
            ),
            StageSpec(
                "pictures",
                PicturesConfig,
                "pictures",
                "pictures",
                "samples, reconstructions and latents as PNGs",
                listed=True,
            ),
            StageSpec(
                "convergence",
                ConvergenceConfig,
                "convergence",
                "convergence",
                "BDMC and an AIS ladder: is the evaluation's AIS long enough",
            ),
            StageSpec("gaps", GapConfig, "gaps", "gaps", "the ELBO gap split into approximation and amortization gaps"),
            StageSpec(
                "ssl-refined",
                RefinedSSLConfig,
                "ssl_refined",
                "ssl_refined",
                "SSL accuracy on per-image refined posteriors beside the encoder's (better inference at test time)",
            ),
        )
    }
)
"""Every stage, in the order a sweep runs them (the run functions: :data:`smvi.stages.registry.STAGES`). Adding a
stage: its settings class and an entry here, its module in ``smvi/stages/`` and its run function's entry there; the
sweep (``stages = [...]`` and a settings section of the same key), ``smvi status`` and the ETA then handle it."""

LEGACY_AIS_KEYS = {
    "ais_steps": "steps",
    "ais_chains": "chains",
    "ais_leapfrog": "leapfrog_steps",
    "ais_start": "start",
    "ais_schedule": "schedule",
}
"""Old flat eval keys (before the AIS settings took ais()'s names) and their names under ``ais``."""


def upgrade_eval_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """An eval settings dict with the old flat AIS keys (``ais_steps``, ...) moved under ``ais`` with ais()'s names;
    a dict without them is returned unchanged. Refuses (ValueError) a dict holding both spellings of one key."""
    old = [k for k in settings if k in LEGACY_AIS_KEYS]
    if not old:
        return settings
    out = {k: v for k, v in settings.items() if k not in LEGACY_AIS_KEYS}
    ais = dict(out.get("ais") or {})
    for k in old:
        new = LEGACY_AIS_KEYS[k]
        if new in ais:
            raise ValueError(f"both {k} and ais.{new} are set; keep ais.{new}")
        ais[new] = settings[k]
    out["ais"] = ais
    return out


LEGACY_PRECISION = "fp32"
"""What AIS and IWAE ran in before ``ais.precision`` existed (and what its default was until issue 26 made it
"auto")."""


def with_saved_precision(settings: dict[str, Any]) -> dict[str, Any]:
    """Saved stage settings (a record's header settings, or the eval / convergence / gaps section of a saved
    ``sweep.toml``) with ``ais.precision = "fp32"`` filled in where they predate the key: they ran in fp32, and
    validating them with today's default would relabel them as "auto". A dict with the key, or without an ``ais``
    section, is returned unchanged. Only for what smvi saved: a user's partial settings take today's defaults."""
    ais = settings.get("ais")
    if isinstance(ais, dict) and "precision" not in ais:
        return {**settings, "ais": {**ais, "precision": LEGACY_PRECISION}}
    return settings
