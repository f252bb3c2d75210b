"""Typed, frozen, validated configuration.

One pydantic model per component; unknown keys, wrong types, non-finite floats and out-of-range values are rejected
with :class:`ConfigError`, a one-line message naming the key. A run's resolved config is written to its directory as
``config.toml`` and can be passed back with ``--config``.

Sources, later wins: defaults < TOML file < ``--set section.key=value`` overrides < dedicated CLI options.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from smvi.settings import limits as L
from smvi.settings.families import DEFAULT_FAMILY, FAMILIES
from smvi.settings.objectives import DEFAULT_OBJECTIVE, OBJECTIVES

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line and names the offending key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


def _distinct(values: tuple) -> tuple:
    if not values or len(set(values)) != len(values):
        raise ValueError(f"must be a non-empty list of distinct values, got {list(values)}")
    return values


Distinct = AfterValidator(_distinct)
"""Marks a tuple field as a non-empty list without repeats: ``Annotated[tuple[float, ...], Distinct]``."""


def _no_repeats(values: tuple) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"must list distinct values, got {list(values)}")
    return values


NoRepeats = AfterValidator(_no_repeats)
"""Marks a tuple field as a list without repeats that may be empty (``Distinct`` less the non-empty rule)."""


def one_of(names: Mapping[str, Any], what: str) -> AfterValidator:
    """Marks a ``str`` field whose value must be a key of the registry ``names`` (read when validating, so entries
    added later count); ``smvi config`` lists the choices (``choices`` on the validator)."""

    def _one_of(value: str) -> str:
        if value not in names:
            raise ValueError(f"unknown {what} {value!r}: use one of {', '.join(repr(n) for n in names)}")
        return value

    _one_of.choices = names  # type: ignore[attr-defined]
    return AfterValidator(_one_of)


Activation = Literal["softplus", "relu", "tanh", "elu"]
FamilyName = Annotated[str, one_of(FAMILIES, "posterior family")]
"""A ``model.posterior`` value: a name of :data:`smvi.settings.families.FAMILIES`."""
ObjectiveName = Annotated[str, one_of(OBJECTIVES, "objective")]
"""A ``train.objective`` value: a name of :data:`smvi.settings.objectives.OBJECTIVES`."""
FLOW_DEFAULTS: dict[str, Any] = dict(FAMILIES["flow"].settings)
"""The flow settings a ``posterior = "flow"`` model gets when it does not set them (kept for old imports; the owner is
:data:`smvi.settings.families.FAMILIES`)."""


class ModelConfig(_Frozen):
    """The VAE. Defaults follow the paper (2x1024 softplus) and its first author's code (latent 50)."""

    z_dim: Annotated[int, L.LATENT] = Field(default=50, gt=0, description="latent dimension")
    encoder_hidden: Annotated[tuple[int, ...], L.WIDTH] = Field(
        default=(1024, 1024), description="encoder hidden widths; () for linear"
    )
    decoder_hidden: Annotated[tuple[int, ...], L.WIDTH] = Field(
        default=(1024, 1024), description="decoder hidden widths; () for linear"
    )
    activation: Activation = Field(default="softplus", description="hidden-layer nonlinearity")
    likelihood: Literal["bernoulli", "gaussian"] = Field(default="bernoulli", description="decoder p(x|z)")
    decoder_last_scale: float = Field(default=0.01, gt=0, description="factor on the decoder's last-layer He init")
    encoder_last_scale: float = Field(
        default=0.01,
        gt=0,
        description="factor on the encoder's last-layer He init (q starts near N(0, I); 1 lets D_SM blow up)",
    )
    posterior: FamilyName = Field(
        default=DEFAULT_FAMILY,
        description="the variational family q(z|x) — "
        + "; ".join(f"{n}: {f.description}" for n, f in FAMILIES.items()),
    )
    flow_layers: Annotated[int | None, L.FLOW_LAYERS] = Field(
        default=None, gt=0, description="affine coupling layers (posterior='flow' only) [4]"
    )
    flow_hidden: Annotated[tuple[int, ...] | None, L.WIDTH] = Field(
        default=None, description="each coupling network's hidden widths (flow) [256]"
    )
    flow_context: Annotated[int | None, L.LATENT] = Field(
        default=None, ge=0, description="size of the context h(x) the encoder gives the flow [32]"
    )
    rejection_base: Literal["diagonal", "full"] | None = Field(
        default=None, description="the proposal family q of posterior='rejection' [diagonal]"
    )
    rejection_threshold: float | None = Field(
        default=None,
        description="a fixed T of a_T = σ(log p(x,z) − log q + T) (rejection; large: q, small: the posterior)",
    )
    rejection_acceptance: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="T chosen per x for this acceptance rate (rejection) [0.5 unless T is set]",
    )
    rejection_proposals: int | None = Field(
        default=None,
        ge=2,
        description="reweighted proposals per example and train.n_samples in training (rejection) [16]",
    )
    rejection_cap: int | None = Field(
        default=None, gt=0, description="most proposals per exact draw, reported (rejection) [1000]"
    )

    @field_validator("encoder_hidden", "decoder_hidden", "flow_hidden")
    @classmethod
    def _positive_widths(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(w <= 0 for w in v):
            raise ValueError(f"every hidden width must be a positive integer, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """The family's own settings that were not given get their defaults (saved resolved in config.toml)."""
        name = data.get("posterior", DEFAULT_FAMILY) if isinstance(data, dict) else None
        spec = FAMILIES.get(name) if isinstance(name, str) else None
        if spec is not None and spec.settings:
            data = {**data, **{k: v for k, v in spec.settings.items() if data.get(k) is None}}
        return data

    @model_validator(mode="after")
    def _settings_fit_the_family(self) -> ModelConfig:
        """A setting of another family is refused rather than ignored; so is a z_dim the family cannot take."""
        spec = FAMILIES[self.posterior]
        for other in FAMILIES.values():
            given = [k for k in other.settings if k not in spec.settings and getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"model.{given[0]} is only used by posterior={other.name!r} (posterior is "
                    f"{self.posterior!r}): remove it or set model.posterior={other.name!r}"
                )
        if self.z_dim < spec.min_z_dim:
            fits = " or ".join(repr(n) for n, f in FAMILIES.items() if f.min_z_dim <= self.z_dim)
            raise ValueError(
                f"posterior={spec.name!r} needs model.z_dim >= {spec.min_z_dim} (got {self.z_dim}): use {fits}"
            )
        problem = spec.check({k: getattr(self, k) for k in spec.settings}) if spec.check else None
        if problem:
            raise ValueError(problem)
        return self


class DataConfig(_Frozen):
    """Where the data comes from and how evaluation subsets are drawn."""

    dataset: Literal["mnist", "idx"] = Field(
        default="mnist", description="'mnist' (verified, fetched if missing) or 'idx' (MNIST-format files in data_dir)"
    )
    data_dir: str | None = Field(
        default=None, description="directory holding the four IDX files (else cache, else download)"
    )
    monitor_size: Annotated[int, L.IMAGES] = Field(
        default=1000, gt=0, description="test points scored at the end of every epoch"
    )
    eval_seed: Annotated[int, L.SEED] = Field(
        default=1234, ge=0, description="seed of the fixed binarization (or dequantization) of evaluation sets"
    )
    transform: Literal["binarize", "dequantize"] = Field(
        default="binarize",
        description="gray levels -> model inputs: 'binarize' x ~ Bernoulli(gray) for a Bernoulli decoder; "
        "'dequantize' x = (pixel + u)/256, u ~ U[0,1), for a Gaussian one (default: the one model.likelihood needs)",
    )


class ConstraintConfig(_Frozen):
    """Constrained SMVI: maximize E ELBO subject to E[measure] ≤ ``target``, λ learned as a Lagrange multiplier.

    Unset ``target`` (the default): λ is fixed (``train.lam``) and every other key here must keep its default. The
    update (``smvi.core.constraint.dual_update``): avg ← β·avg + (1 − β)·C, λ ← clip(λ·(avg/ε)^η, λ_min, λ_max).
    """

    target: Annotated[float | None, L.TARGET] = Field(
        default=None,
        gt=0,
        description="ε: the bound on the measure (D_SM, or nats of gap); unset: λ is fixed (train.lam)",
    )
    measure: Literal["dsm", "gap"] = Field(
        default="dsm",
        description="'dsm': the batch's D_SM; 'gap': IWAE_k − ELBO per batch, a lower bound on the ELBO gap",
    )
    gap_k: Annotated[int, L.SAMPLES] = Field(
        default=10, ge=2, description="importance samples of the 'gap' estimate (larger: tighter, slower)"
    )
    step_size: float = Field(default=0.01, gt=0, le=1, description="η: ln λ moves by η·ln(avg/ε) per step")
    ema_decay: float = Field(default=0.9, ge=0, lt=1, description="β of the moving average of the batch's measure")
    lam_init: Annotated[float, L.WEIGHT] = Field(default=1e-3, gt=0, description="λ at the first step")
    lam_min: Annotated[float, L.WEIGHT] = Field(
        default=1e-5, gt=0, description="λ's floor (λ → λ_min when the constraint is slack)"
    )
    lam_max: Annotated[float, L.WEIGHT] = Field(
        default=10.0, gt=0, description="λ's cap (a target still violated at the cap is unreachable)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConstraintConfig:
        if self.target is None:
            changed = [k for k, f in type(self).model_fields.items() if getattr(self, k) != f.default]
            if changed:
                raise ValueError(
                    f"{changed[0]} is set but target is not: set train.constraint.target "
                    "(--target-dsm / --target-gap) or drop it"
                )
        elif not self.lam_min <= self.lam_init <= self.lam_max:
            raise ValueError(
                f"need lam_min <= lam_init <= lam_max, got {self.lam_min}, {self.lam_init}, {self.lam_max}"
            )
        return self


LAM_PLANNED = "lam_planned"
"""A validation context key (``RunConfig.model_validate(tree, context={LAM_PLANNED: True})``): the config is a
template whose λ every run planned from it replaces (a sweep's base run), so what needs λ > 0 or a target is checked
on those runs, not on the template."""


class TrainConfig(_Frozen):
    """Optimization. ``lam`` is the paper's λ: maximize ELBO - λ·D_SM (fixed, or learned: ``constraint``)."""

    lam: Annotated[float, L.WEIGHT] = Field(
        default=0.0, ge=0, description="weight λ of the score-matching divergence; 0 is the plain VAE"
    )
    lam_warmup_epochs: Annotated[float, L.EPOCHS] = Field(
        default=0.0, ge=0, description="ramp λ linearly from 0 over this many epochs (0: the paper's constant λ)"
    )
    epochs: Annotated[int, L.EPOCHS] = Field(default=300, gt=0, description="passes over the training set")
    batch_size: Annotated[int, L.BATCH] = Field(default=512, gt=0, description="examples per step")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    n_samples: Annotated[int, L.SAMPLES] = Field(default=1, gt=0, description="z samples per example in the objective")
    seed: Annotated[int, L.SEED] = Field(
        default=0, ge=0, description="seeds initialization, shuffling, binarization and z sampling"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto picks cuda when available")
    grad_clip: float | None = Field(
        default=None, gt=0, description="clip the gradient's global norm to this (off if unset)"
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16 autocasts the objective (about 2x faster on CPUs with bf16 units; opt-in)"
    )
    max_bad_steps: Annotated[int, L.STEPS] = Field(
        default=20, gt=0, description="consecutive non-finite steps (skipped) before the run stops"
    )
    tensorboard: str | None = Field(
        default=None,
        description="also log to TensorBoard under DIR/<run name> (needs the tensorboard extra); "
        "metrics.jsonl stays the record",
    )
    objective: ObjectiveName = Field(
        default=DEFAULT_OBJECTIVE,
        description="what training maximizes — " + "; ".join(f"{n}: {o.description}" for n, o in OBJECTIVES.items()),
    )
    beta: Annotated[float | None, L.WEIGHT] = Field(
        default=None, gt=0, description="β of the β-VAE (objective='beta' only; 1 is the VAE)"
    )
    iwae_k: Annotated[int | None, L.SAMPLES] = Field(
        default=None, gt=0, description="importance samples of IWAE training (objective='iwae' only)"
    )
    dsm_grad: Literal["both", "encoder", "decoder"] = Field(
        default="both",
        description="which parameters the λ·D_SM penalty's gradient reaches: 'both' (SMVI), 'encoder' (the "
        "decoder trained by the ELBO alone) or 'decoder' (the encoder by the ELBO alone); SMVI with λ > 0 only",
    )
    constraint: ConstraintConfig = ConstraintConfig()

    @model_validator(mode="after")
    def _fixed_or_learned(self) -> TrainConfig:
        if self.constraint.target is not None and not OBJECTIVES[self.objective].constrained:
            which = " or ".join(f"train.objective={n!r}" for n, o in OBJECTIVES.items() if o.constrained)
            raise ValueError(
                f"train.constraint.target learns SMVI's λ but train.objective is {self.objective!r}: "
                f"drop the target or use {which}"
            )
        if self.constraint.target is not None and (self.lam != 0 or self.lam_warmup_epochs != 0):
            key = "lam" if self.lam != 0 else "lam_warmup_epochs"
            raise ValueError(
                f"train.{key} and train.constraint.target are both set: λ is either fixed (train.lam) "
                "or learned toward the target (starting at train.constraint.lam_init); drop one"
            )
        return self

    @model_validator(mode="after")
    def _settings_match_the_objective(self, info: ValidationInfo) -> TrainConfig:
        """Every setting is used by the chosen objective (:data:`smvi.settings.objectives.OBJECTIVES`): a β without
        the β-VAE, a k without IWAE or a λ without SMVI is refused rather than ignored. Validated with the
        :data:`LAM_PLANNED` context, λ is left to the runs planned from this one."""
        o, spec = self.objective, OBJECTIVES[self.objective]
        if spec.settings[spec.knob] is None and getattr(self, spec.knob) is None:
            raise ValueError(f"objective={o!r} needs train.{spec.knob} (e.g. train.{spec.knob}={spec.example})")
        for other in OBJECTIVES.values():
            foreign = [k for k in other.settings if k not in spec.settings]
            if any(getattr(self, k) != other.settings[k] for k in foreign):
                keys = " and ".join(f"train.{k}" for k in foreign)
                them = "them" if len(foreign) > 1 else "it"
                raise ValueError(
                    f"{keys} {'are' if len(foreign) > 1 else 'is'} only used by objective={other.name!r} "
                    f"(objective is {o!r}): remove {them} or set train.objective={other.name!r}"
                )
        no_penalty = self.lam == 0 and self.constraint.target is None and not (info.context or {}).get(LAM_PLANNED)
        if self.dsm_grad != "both" and (o != "smvi" or no_penalty):
            raise ValueError(
                f"train.dsm_grad={self.dsm_grad!r} steers the D_SM penalty's gradient, which needs "
                "objective='smvi' with train.lam > 0 or train.constraint.target: set one or drop "
                "train.dsm_grad"
            )
        if not spec.n_samples and self.n_samples != 1:
            raise ValueError(
                f"train.n_samples is not used by objective={o!r}, which draws train.{spec.knob} samples: remove it"
            )
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> TrainConfig:
        """Every step decodes batch_size × (samples per image) images at once: bounded before anything is allocated."""
        key, k = max(
            (
                ("n_samples", self.n_samples),
                ("iwae_k", self.iwae_k or 0),
                ("constraint.gap_k", self.constraint.gap_k if self.constraint.target is not None else 0),
            ),
            key=lambda kv: kv[1],
        )
        if self.batch_size * k > L.TRAIN_DRAWS:
            raise ValueError(
                f"train.batch_size × train.{key} = {self.batch_size * k} images decoded per step: at most "
                f"{L.show(L.TRAIN_DRAWS)} (memory: each holds every pixel and hidden activation); "
                "lower one of them"
            )
        return self


class RunConfig(_Frozen):
    """Everything a training run needs; saved as ``config.toml`` in the run directory."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_transform(cls, values: Any) -> Any:
        """An unset data.transform is the one model.likelihood needs (configs written before it existed included)."""
        if isinstance(values, dict):
            model, data = values.get("model"), values.get("data")
            likelihood = model.get("likelihood") if isinstance(model, dict) else getattr(model, "likelihood", None)
            if likelihood == "gaussian" and (data is None or isinstance(data, dict) and "transform" not in data):
                values = {**values, "data": {**(data or {}), "transform": "dequantize"}}
        return values

    @model_validator(mode="after")
    def _family_trains_with_the_objective(self) -> RunConfig:
        """A family that trains with some objectives only (:attr:`~smvi.settings.families.FamilySpec.objectives`)
        refuses the others, and the constraint's 'gap' measure (IWAE_k − ELBO) where IWAE cannot use it."""
        spec = FAMILIES[self.model.posterior]
        if spec.objectives and self.train.objective not in spec.objectives:
            raise ValueError(
                f"train.objective={self.train.objective!r} cannot train model.posterior="
                f"{spec.name!r} (see its documentation): use one of "
                f"{', '.join(repr(o) for o in spec.objectives)}"
            )
        if (
            spec.objectives
            and "iwae" not in spec.objectives
            and self.train.constraint.target is not None
            and self.train.constraint.measure == "gap"
        ):
            raise ValueError(
                f"train.constraint.measure='gap' (IWAE_k − ELBO) does not measure model.posterior="
                f"{spec.name!r}: use measure='dsm'"
            )
        return self

    @model_validator(mode="after")
    def _transform_fits_likelihood(self) -> RunConfig:
        need = {"bernoulli": "binarize", "gaussian": "dequantize"}[self.model.likelihood]
        if self.data.transform != need:
            why = (
                "binary data"
                if need == "binarize"
                else "continuous data (a Gaussian density on binary data is unbounded)"
            )
            raise ValueError(
                f"data.transform = {self.data.transform!r} does not fit model.likelihood = "
                f"{self.model.likelihood!r}, which needs {why}: set data.transform = {need!r}"
            )
        return self


def _one_line(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `smvi config` lists every key with its default and description)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid config{source}: " + "; ".join(parts)


def _parse_value(text: str) -> Any:
    """Parse an override value as a TOML value (numbers, booleans, arrays, quoted strings); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def dotted_items(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict's leaves under dotted keys (``{"train": {"lam": 0}}`` → ``{"train.lam": 0}``), the inverse of
    ``--set``'s paths; an empty section has no leaf."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(dotted_items(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"invalid override {dotted!r}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; :class:`ConfigError` (one line) if it is missing, unreadable or not TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def build_config(
    cls: type[M],
    base: dict[str, Any] | None = None,
    *,
    sets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
    source: str = "",
) -> M:
    """Validate ``base`` updated by ``section.key=value`` strings, then by ``overrides`` (dotted keys; ``None``
    values ignored), as a ``cls``. Raises :class:`ConfigError` (one line) on unknown keys or invalid values."""
    tree: dict[str, Any] = copy.deepcopy(base or {})
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"invalid --set {item!r}: expected section.key=value, e.g. model.z_dim=20")
        key, value = item.split("=", 1)
        _set_path(tree, key.strip(), _parse_value(value.strip()))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, key, value)
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from None


def revalidate(cfg: Any, cls: type[M], what: str = "config") -> M:
    """``cfg`` checked again as a ``cls``, as every entry point (CLI or Python) does before using it: a settings
    object built with ``model_copy(update=...)`` or by assigning through ``object.__setattr__`` skips pydantic's
    checks, so its values are validated anew here. Anything but a ``cls`` is a one-line :class:`ConfigError`."""
    if not isinstance(cfg, cls):
        raise ConfigError(
            f"{what} must be a {cls.__name__}, got {type(cfg).__name__}: build it with "
            f"{cls.__name__}(...) or smvi.build_config({cls.__name__}, ...)"
        )
    if unknown := _smuggled(cfg):
        raise ConfigError(
            f"invalid config ({what}): {unknown}: unknown key (set through model_copy(update=...), which "
            "does not check keys; `smvi config` lists every key)"
        )
    return build_config(cls, cfg.model_dump(warnings=False), source=f" ({what})")


def _smuggled(model: BaseModel, prefix: str = "") -> str | None:
    """The first attribute of ``model`` (or of a settings object inside it) that is not one of its fields: what
    ``model_copy(update={"typo": 1})`` leaves behind, and ``model_dump`` silently drops."""
    for key, value in vars(model).items():
        if key not in type(model).model_fields:
            return prefix + key
        if isinstance(value, BaseModel) and (inner := _smuggled(value, f"{prefix}{key}.")):
            return inner
    return None


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Build a :class:`RunConfig` from an optional TOML file, ``section.key=value`` strings and a dict of overrides.

    Raises :class:`ConfigError` (one line) on an unreadable file, bad TOML, unknown keys or invalid values.
    """
    base = read_toml(path) if path is not None else {}
    return build_config(RunConfig, base, sets=sets, overrides=overrides, source=f" in {path}" if path else "")


def config_to_toml(cfg: BaseModel) -> str:
    """A resolved config as TOML (unset optional values are omitted, as TOML has no null)."""
    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))
