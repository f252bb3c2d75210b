"""Typed result records (torch-free): what ``evaluate``, ``ssl``, ``convergence``, ``gaps`` and ``pictures`` write,
and the one rule that says whether a record is current.

Every record starts with the same :class:`Header` -- ``{schema, fingerprint, epoch, settings, smvi_version, created}``
and, since the report's provenance section, ``{torch_version, python_version, host}``: the run it describes
(:func:`smvi.store.rundir.fingerprint`), the epoch of the model, the stage's settings, who wrote it, when, with what and
on which machine (:func:`smvi.store.provenance.host_info`; null in records written before, which still parse).
:func:`staleness` is the only freshness rule: a record is current iff its fingerprint, epoch and settings match the run
and the settings asked for. Non-finite numbers are written as JSON ``null`` and listed in the record's ``notes``
(:func:`dump_record`), never crash the writer.

**Digest.** :func:`dump_record` stores in ``header.digest`` the SHA-256 of the record's canonical JSON without that
field (:func:`payload_digest`); :func:`record_integrity` tells a record still as written (``ok``) from one changed
afterwards (``edited``: by hand, or damaged) and from one written before digests (``no digest``, read as before). It
guards against accidents, not tampering: it is not a signature. ``header.data`` names the data scored when a stage was
explicitly allowed to score other data than the run's training data (null otherwise).

Files written before the header existed (``eval.json`` with a top-level ``epoch``, ``ssl.json`` with ``run.epoch``,
``convergence.json``) are upgraded on read by :func:`parse_record`: the fingerprint is the run's (from its
``config.toml``), ``smvi_version`` is ``"legacy"``, ``created`` is null, old eval keys are renamed
(:func:`smvi.settings.stages.upgrade_eval_settings`) and per-image values are absent.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from smvi.settings.run import ObjectiveName
from smvi.settings.stages import upgrade_eval_settings, with_saved_precision
from smvi.store.provenance import host_info, package_version
from smvi.store.stats import MeanSE

__all__ = [
    "RecordError",
    "Host",
    "DataIdentity",
    "Header",
    "payload_digest",
    "record_integrity",
    "Integrity",
    "PerImage",
    "EvalSplit",
    "FullTestIWAE",
    "EvalRecord",
    "SSLSize",
    "SSLScores",
    "SSLRecord",
    "SSLFeatureSet",
    "RefinedFit",
    "RefinedSSLRecord",
    "SSLFeaturesFile",
    "SSLFit",
    "BDMCRow",
    "LadderRecord",
    "ConvergenceRecord",
    "GapsPerImage",
    "GapsFit",
    "GapsRecord",
    "PicturesRecord",
    "PartialSplit",
    "EvalPartial",
    "Record",
    "make_header",
    "dump_record",
    "parse_record",
    "staleness",
    "smvi_version",
]

SCHEMAS = {
    "eval": "smvi-eval-2",
    "ssl": "smvi-ssl-2",
    "convergence": "smvi-convergence-2",  # 1: legacy dicts
    "gaps": "smvi-gaps-2",  # gaps: no legacy reader (its old dicts were never committed); recompute them
    "ssl_refined": "smvi-ssl-refined-1",
    "pictures": "smvi-pictures-1",  # no legacy reader: pictures came after the header
    "eval_partial": "smvi-eval-partial-1",
}  # an evaluation's progress (EvalPartial), not a result
Fraction = Annotated[float, Field(ge=0, le=1)]
Num = float | None  # a measured number; None where it was not finite (see the record's notes)
PictureKind = Literal["samples", "reconstructions", "latents"]  # the PNGs of smvi pictures


def nums(values: Iterable[float]) -> list[Num]:
    """``values`` as a record's list of measured numbers (a ``list[float]`` is not a ``list[Num]`` to a type checker:
    lists are invariant)."""
    return list[Num](values)


class RecordError(ValueError):
    """A result file that is not a valid record (damaged, foreign, out of range); one-line message."""


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def smvi_version() -> str:
    return package_version("smvi") or "unknown"


class Host(_Rec):
    """The machine a stage ran on (:func:`smvi.store.provenance.host_info`); any field may be unknown."""

    os: str | None = None
    machine: str | None = None
    cpu: str | None = None
    cpus: int | None = None
    device: str | None = Field(default=None, description="the torch device, with the GPU's name for CUDA")


class DataIdentity(_Rec):
    """What a run was trained on (``data.json`` in the run directory, :meth:`smvi.store.rundir.RunDir.read_data`) or
    what a stage scored: the kind of source, where it was, and the SHA-256 of the images and labels as loaded
    (:func:`smvi.data.identity.content_digest`), so data from any source compares the same way. ``files``: each source
    file's digest (``md5:`` MNIST's published checksums, ``sha256:`` an IDX file's bytes), to name the files that
    changed."""

    kind: Literal["mnist", "idx", "arrays"] = Field(
        description="MNIST (MD5-verified), IDX files, or arrays given through the Python API (data=ImageData)"
    )
    location: str | None = Field(default=None, description="the directory of the files; null for arrays")
    digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the loaded images and labels")
    files: dict[str, str] = Field(default={}, description="source file name -> 'md5:...' or 'sha256:...'")

    def describe(self) -> str:
        """One phrase naming the data: kind, location and the digest's first 12 digits."""
        where = f" in {self.location}" if self.location else ""
        what = {"mnist": "MNIST", "idx": "IDX files", "arrays": "arrays passed through the Python API"}[self.kind]
        return f"{what}{where} (sha256 {self.digest[:12]})"

    def difference(self, now: DataIdentity) -> str | None:
        """None when ``now`` holds the same images and labels (same digest, whatever the source); else one phrase
        naming both and the source files that differ."""
        if now.digest == self.digest:
            return None
        changed = sorted(n for n in self.files.keys() | now.files.keys() if self.files.get(n) != now.files.get(n))
        files = (
            f"; changed: {', '.join(changed)}" if changed and self.files and now.files and self.kind == now.kind else ""
        )
        return f"trained on {self.describe()}, now {now.describe()}{files}"


class Header(_Rec):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: str = Field(alias="schema", description="record kind and version, e.g. smvi-eval-2")
    fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the run's identity (smvi.store.rundir.fingerprint)"
    )
    epoch: int = Field(ge=0, description="epochs the evaluated model was trained")
    settings: dict[str, Any] = Field(description="the stage's config, as dumped")
    smvi_version: str = Field(description="version that wrote the record ('legacy': upgraded from an old file)")
    created: str | None = Field(description="ISO-8601 UTC time of writing; null for upgraded old files")
    torch_version: str | None = Field(default=None, description="torch that computed it; null in older records")
    python_version: str | None = Field(default=None, description="Python that computed it; null in older records")
    host: Host | None = Field(default=None, description="the machine; null in older records")
    data: DataIdentity | None = Field(
        default=None,
        description="the data scored, when it is not the run's training data "
        "(allowed explicitly); null: the run's own data, or a record from before",
    )
    digest: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the record's canonical JSON without this field "
        "(payload_digest); null in records written before it existed",
    )


def make_header(
    kind: str,
    fingerprint: str,
    epoch: int,
    settings: BaseModel,
    *,
    device: str | None = None,
    data: DataIdentity | None = None,
) -> Header:
    """The header of a record of ``kind`` written now, here (versions and machine: :mod:`smvi.store.provenance`);
    ``data``: the data scored when it is not the run's training data (allowed explicitly)."""
    return Header(
        schema=SCHEMAS[kind],
        fingerprint=fingerprint,
        epoch=epoch,
        data=data,
        settings=settings.model_dump(mode="json"),
        smvi_version=smvi_version(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        torch_version=package_version("torch"),
        python_version=platform.python_version(),
        host=Host(**host_info(device)),
    )


# ---- eval -----------------------------------------------------------------------------------------------------------
class PerImage(_Rec):
    """Per-image estimates, aligned with :attr:`EvalSplit.indices`."""

    elbo: list[Num]
    d_sm: list[Num]
    iwae: list[Num] | None = None
    ais: list[Num]
    gap: list[Num]


class EvalSplit(_Rec):
    n: int = Field(gt=0)
    indices: list[int] | None = Field(default=None, description="the images' indices into the dataset split")
    elbo: MeanSE
    d_sm: MeanSE
    iwae: MeanSE | None = None
    ais: MeanSE
    gap: MeanSE
    gap_iwae: MeanSE | None = None
    ais_acceptance: Num = None
    ais_ess: MeanSE | None = None
    seconds: Num = None
    per_image: PerImage | None = None

    @model_validator(mode="after")
    def _aligned(self) -> EvalSplit:
        lists = [] if self.per_image is None else [v for v in self.per_image.model_dump().values() if v is not None]
        if self.indices is not None:
            lists.append(self.indices)
        if any(len(v) != self.n for v in lists):
            raise ValueError(f"per-image lists must hold n = {self.n} values")
        return self


class FullTestIWAE(_Rec):
    """The IWAE bound with ``k`` samples on every test image (``eval.iwae_full_test_k``): log p(x) comparable with
    published full-test-set numbers. ``per_image`` is aligned with ``indices`` (the images' indices into the test
    split); on the images of the test subset its values are the subset's IWAE values at the same k and seed."""

    k: int = Field(gt=0)
    n: int = Field(gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    indices: list[int]
    iwae: MeanSE
    per_image: list[Num]
    seconds: Num = None

    @model_validator(mode="after")
    def _aligned(self) -> FullTestIWAE:
        if len(self.indices) != self.n or len(self.per_image) != self.n:
            raise ValueError(f"indices and per_image must hold n = {self.n} values")
        return self


class EvalRecord(_Rec):
    header: Header
    run: str
    lam: float = Field(ge=0)
    splits: dict[Literal["test", "train"], EvalSplit]
    full_test: FullTestIWAE | None = Field(
        default=None, description="IWAE on the whole test set; None when not computed"
    )
    seconds: Num = None
    work: dict[str, int] = {}
    notes: list[str] = []
    precision: Literal["fp32", "bf16"] | None = Field(
        default=None,
        description="the precision AIS and IWAE ran in (settings' ais.precision, 'auto' resolved on the machine)"
        "; None in older records: read it with computed_precision",
    )

    @property
    def computed_precision(self) -> str:
        """The precision the estimates were computed in: ``precision``, else the settings' (fp32 when absent)."""
        return self.precision or (self.header.settings.get("ais") or {}).get("precision", "fp32")


class PartialSplit(_Rec):
    """The points of one split scored so far, in evaluation order (per point; ``iwae`` None when not computed)."""

    elbo: list[Num] = []
    d_sm: list[Num] = []
    iwae: list[Num] | None = None
    ais: list[Num] = []
    acceptance: list[Num] = []
    ess: list[Num] = []
    seconds: float = 0.0

    @model_validator(mode="after")
    def _aligned(self) -> PartialSplit:
        lists = [v for v in (self.elbo, self.d_sm, self.iwae, self.ais, self.acceptance, self.ess) if v is not None]
        if len({len(v) for v in lists}) > 1:
            raise ValueError("per-point lists of different lengths")
        return self


class EvalPartial(_Rec):
    """``smvi evaluate``'s progress (``eval.partial.json``), saved after every batch so that a killed evaluation
    resumes where it stopped, and removed when the eval record is written. Its header is a record's: it is used only
    for the same run, epoch and settings. ``full_test``: the whole-test-set IWAE values so far, in order."""

    header: Header
    splits: dict[Literal["test", "train"], PartialSplit] = {}
    full_test: list[Num] = []
    full_test_seconds: float = 0.0
    notes: list[str] = []


# ---- ssl ------------------------------------------------------------------------------------------------------------
class SSLSize(_Rec):
    mean: Num
    std: Num
    accuracy: list[Fraction | None]
    C: list[float]
    gamma: list[float]
    cv_accuracy: list[Fraction | None]


class SSLScores(_Rec):
    seeds: list[int]
    n_train: int
    n_test: int
    n_features: int
    seconds: Num = None
    sizes: dict[str, SSLSize]

    @model_validator(mode="after")
    def _aligned(self) -> SSLScores:
        for s, v in self.sizes.items():
            if not s.isdigit() or len(v.accuracy) != len(self.seeds):
                raise ValueError(f"sizes.{s}: one accuracy per seed expected")
        return self


class SSLFeaturesFile(_Rec):
    """The encoder means a robust-protocol record was scored on (:mod:`smvi.stages.ssl_robust`), a file in the run."""

    file: str = Field(description="its name in the run directory (smvi.store.rundir.RunDir.array_path)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the file's SHA-256 (hex)")
    n_train: int = Field(ge=0, description="training images stored (every one some labeled set uses)")
    n_test: int = Field(gt=0, description="test images stored (the scored ones)")
    n_features: int = Field(gt=0, description="d, the latent dimension")


class SSLFit(_Rec):
    """One row of the robust protocol's table: ``classifier`` on subset ``subset`` of size ``size``."""

    classifier: str
    size: int = Field(gt=0)
    subset: int = Field(ge=0)
    accuracy: Fraction | None
    cv_accuracy: Fraction | None
    params: dict[str, float] = Field(description="the chosen hyper-parameters (SVM: C and gamma_d = γ·d)")
    on_edge: dict[str, bool] = Field(description="per hyper-parameter: chosen at an end of its whole grid")
    searched: dict[str, list[float]] = Field(description="per hyper-parameter: the searched window [first, last]")


class SSLRecord(_Rec):
    """What ``smvi ssl`` wrote. The paper protocol fills ``features`` (and ``raw_pixels``); the robust protocol
    (``header.settings.protocol == "robust"``) also ``features_file`` and ``table`` (every classifier's rows), its
    ``features`` being the RBF SVM's rows in the paper's shape (label subsets as seeds)."""

    header: Header
    run: dict[str, float | int]  # {"lam", "seed"}
    features: SSLScores
    raw_pixels: SSLScores | None = None
    seconds: Num = None
    notes: list[str] = []
    features_file: SSLFeaturesFile | None = None
    table: list[SSLFit] | None = None

    @model_serializer(mode="wrap")
    def _paper_shape(self, handler):
        """A paper-protocol record is written as before the robust protocol existed (no null robust fields)."""
        out = handler(self)
        for key in ("features_file", "table"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class SSLFeatureSet(_Rec):
    """One set of features scored by the robust protocol: the features file and its table (one row per classifier,
    size and label subset)."""

    features_file: SSLFeaturesFile
    table: list[SSLFit]


class RefinedFit(_Rec):
    """How the per-image local fits of ``smvi ssl-refined`` went (:func:`smvi.stages.gaps.fit_local`, ``steps`` steps
    from the encoder's q): each image's ELBO gain over the encoder's q, on 64 fixed draws (common random numbers)."""

    images: int = Field(gt=0, description="images refined (the labeled sets' and the scored test images)")
    gain: MeanSE = Field(description="ELBO(refined q) − ELBO(encoder's q), nats per image: mean ± SE over images")
    gain_quantiles: dict[str, Num] = Field(description="the gain's 5 %, 50 % and 95 % quantiles over images")
    skipped: int = Field(ge=0, description="steps skipped for a non-finite ELBO or gradient, over all batches")
    seconds: Num = None


class RefinedSSLRecord(_Rec):
    """What ``smvi ssl-refined`` wrote (:func:`smvi.stages.ssl_refined.ssl_refined_run`): the robust protocol's table
    on the encoder means (``encoder``) and on the refined posteriors' means (``refined``), the same images, label
    subsets and scaling; the local fit's diagnostics (``fit``)."""

    header: Header
    run: dict[str, float | int]  # {"lam", "seed"}
    fit: RefinedFit
    encoder: SSLFeatureSet
    refined: SSLFeatureSet
    seconds: Num = None
    notes: list[str] = []


# ---- convergence ----------------------------------------------------------------------------------------------------
class BDMCRow(_Rec):
    steps: int
    lower: Num
    upper: Num
    gap: Num
    gap_se: Num
    seconds: Num = None


class LadderRecord(_Rec):
    steps: list[int]
    means: list[Num]
    sems: list[Num]
    diffs: list[Num]
    diff_sems: list[Num]
    agree: list[bool]
    converged: bool


class ConvergenceRecord(_Rec):
    header: Header
    run: str
    bdmc: list[BDMCRow]
    ladder: LadderRecord | None
    seconds: Num = None
    notes: list[str] = []


# ---- gaps -----------------------------------------------------------------------------------------------------------
class GapsPerImage(_Rec):
    """Per-image values (nats), aligned with :attr:`GapsRecord.indices`; approximation + amortization = log_px −
    elbo_amortized for each image."""

    log_px: list[Num]
    elbo_amortized: list[Num]
    elbo_local: list[Num]
    approximation: list[Num]
    amortization: list[Num]


class GapsFit(_Rec):
    """How the per-image local fit went (:func:`smvi.stages.gaps.fit_local`), over the batches of images."""

    steps: list[int] = Field(description="optimizer steps, per batch")
    converged: bool = Field(description="every batch passed the convergence check")
    skipped: int = Field(ge=0, description="steps skipped for a non-finite ELBO or gradient")
    last_gain_max: Num = Field(description="largest per-image ELBO gain over the last window (nats)")
    traces: list[list[Num]] = Field(description="mean ELBO at each check, per batch")


class GapsRecord(_Rec):
    """The gap split of one run (:func:`smvi.stages.gaps.gaps_run`): gap = approximation + amortization, mean ± SE over
    images, with the run's family, objective and knob (``{"lam": λ}``, ``{"beta": β}`` or ``{"iwae_k": k}``;
    ``{"target": ε}`` for a learned λ)."""

    header: Header
    run: str
    posterior: str
    objective: ObjectiveName
    knob: dict[str, float]
    n: int = Field(gt=0)
    indices: list[int] = Field(description="the test images' indices")
    log_px: MeanSE
    elbo_amortized: MeanSE
    elbo_local: MeanSE
    approximation: MeanSE
    amortization: MeanSE
    gap: MeanSE
    fit: GapsFit
    ais_acceptance: Num = None
    seconds: Num = None
    per_image: GapsPerImage
    notes: list[str] = []

    @model_validator(mode="after")
    def _aligned(self) -> GapsRecord:
        if any(len(v) != self.n for v in [self.indices, *self.per_image.model_dump().values()]):
            raise ValueError(f"per-image lists must hold n = {self.n} values")
        return self


# ---- pictures -------------------------------------------------------------------------------------------------------
class PicturesRecord(_Rec):
    """What :func:`smvi.stages.pictures.pictures_run` drew for one run: the three PNGs beside it in the run directory
    (:meth:`smvi.store.rundir.RunDir.picture_path`), each named here with its SHA-256, so a reader can tell that a PNG
    is the one this record describes (not one left by another run or an interrupted write)."""

    header: Header
    run: str
    sha256: dict[PictureKind, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        description="each PNG's SHA-256 (hex), by picture"
    )
    reconstruction_indices: list[int] = Field(description="the test images shown above their reconstructions")
    n_latent: int = Field(gt=0, description="test images in the latent picture")
    explained: list[Num] = Field(description="fraction of the encoder means' variance along PC1 and PC2")
    seconds: Num = None
    notes: list[str] = []

    @model_validator(mode="after")
    def _complete(self) -> PicturesRecord:
        if set(self.sha256) != {"samples", "reconstructions", "latents"}:
            raise ValueError("sha256 must name samples, reconstructions and latents")
        return self


Record = EvalRecord | SSLRecord | ConvergenceRecord | GapsRecord | PicturesRecord | RefinedSSLRecord | EvalPartial
R = TypeVar(
    "R", EvalRecord, SSLRecord, ConvergenceRecord, GapsRecord, PicturesRecord, RefinedSSLRecord, EvalPartial
)  # one record kind
_CLASSES: dict[str, type] = {
    "eval": EvalRecord,
    "ssl": SSLRecord,
    "convergence": ConvergenceRecord,
    "gaps": GapsRecord,
    "pictures": PicturesRecord,
    "ssl_refined": RefinedSSLRecord,
    "eval_partial": EvalPartial,
}


# ---- writing --------------------------------------------------------------------------------------------------------
def _finite(tree: Any, path: str, notes: list[str]) -> Any:
    if isinstance(tree, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), notes) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        out = [_finite(v, f"{path}[{i}]", notes) for i, v in enumerate(tree)]
        bad = [i for i, v in enumerate(tree) if isinstance(v, float) and not math.isfinite(v)]
        if bad:  # one note per list, not per value
            notes[:] = [n for n in notes if not n.startswith(f"{path}[")]
            notes.append(f"{path}: {len(bad)} non-finite value(s) stored as null (first at index {bad[0]})")
        return out
    if isinstance(tree, float) and not math.isfinite(tree):
        notes.append(f"{path}: non-finite value ({tree}) stored as null")
        return None
    return tree


def payload_digest(tree: dict) -> str:
    """SHA-256 (hex) of a record's JSON tree as canonical JSON (sorted keys, compact, ASCII), without
    ``header.digest``: what :func:`dump_record` stores there and :func:`record_integrity` recomputes."""
    header = {k: v for k, v in (tree.get("header") or {}).items() if k != "digest"}
    text = json.dumps(
        {**tree, "header": header}, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def dump_record(record: R) -> tuple[str, R]:
    """The record as JSON text with every non-finite number replaced by null and noted in ``notes``, its header's
    ``digest`` set to :func:`payload_digest`; also returns the record as it will read back."""
    notes: list[str] = []
    tree = _finite(record.model_dump(mode="python", by_alias=True), "", notes)
    tree["notes"] = list(tree.get("notes") or []) + notes
    tree["header"]["digest"] = payload_digest(tree)
    text = json.dumps(tree, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return text, type(record).model_validate(tree)


# ---- reading --------------------------------------------------------------------------------------------------------
def _legacy(kind: str, obj: dict, fingerprint: Callable[[], str]) -> dict:
    """An old dict-shaped result (see the module docstring) as a record tree."""
    obj = dict(obj)
    settings = obj.pop("settings", None)
    if not isinstance(settings, dict):
        raise ValueError("no settings")
    if kind == "eval":
        epoch = obj.pop("epoch", None)
        settings = upgrade_eval_settings(settings)
    elif kind == "ssl":
        run = dict(obj.get("run") or {})
        epoch = run.pop("epoch", None)
        obj["run"] = run
        settings = {k: v for k, v in settings.items() if k not in ("eval_seed", "train_binarization_seed")}
    else:
        epoch = obj.pop("epoch", None)
        ais = {k: settings[k] for k in ("chains", "leapfrog_steps", "start", "schedule") if k in settings}
        settings = {
            "steps": [b.get("steps") for b in obj.get("bdmc") or [] if isinstance(b, dict)],
            "n_points": obj.pop("n_points", None),
            "tol": obj.pop("tol", None),
            "seed": settings.get("seed", 0),
            "ais": ais,
        }
    obj["header"] = {
        "schema": SCHEMAS[kind].rsplit("-", 1)[0] + "-1",
        "fingerprint": fingerprint(),
        "epoch": epoch,
        "settings": settings,
        "smvi_version": "legacy",
        "created": None,
    }
    return obj


def parse_record(kind: str, raw: bytes, source: str, legacy_fingerprint: Callable[[], str]) -> Record:
    """The record ``kind`` from a file's bytes (old shapes upgraded, see the module docstring); one-line
    :class:`RecordError` for anything else: not UTF-8, not JSON, NaN/Infinity literals, wrong shape or values out of
    range (an accuracy above 1, a negative λ)."""

    def bad_constant(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=bad_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise RecordError(f"{source}: not a JSON record ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{source}: not a JSON object")
    try:
        if "header" not in obj and kind == "gaps":
            raise ValueError("a gaps.json from before records had headers; recompute it with smvi gaps --overwrite")
        if "header" not in obj and kind == "eval_partial":
            raise ValueError("no header")
        if "header" not in obj and kind in ("pictures", "ssl_refined"):  # came after the header: no legacy reader
            raise ValueError(f"no header; recompute it with smvi {kind.replace('_', '-')} --overwrite")
        if "header" not in obj:
            obj = _legacy(kind, obj, legacy_fingerprint)
        elif not isinstance(obj["header"], dict) or obj["header"].get("schema") != SCHEMAS[kind]:
            raise ValueError(f"schema is not {SCHEMAS[kind]!r}")
        return _CLASSES[kind].model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RecordError(
            f"{source}: invalid {kind} record ({where}: {first['msg']}; {e.error_count()} problem(s))"
        ) from None
    except (ValueError, TypeError, AttributeError) as e:
        raise RecordError(f"{source}: invalid {kind} record ({e})") from None


Integrity = Literal["ok", "edited", "no digest"]


def record_integrity(raw: bytes) -> Integrity:
    """Whether a record file's content is still what was written: ``"ok"`` when its ``header.digest`` is the
    :func:`payload_digest` of the rest, ``"edited"`` when it is not (changed by hand or damaged after writing),
    ``"no digest"`` for a record written before digests (or not a record: :func:`parse_record` says why). An
    integrity check against accidents, not authentication: anyone who edits a record can recompute the digest."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "no digest"
    header = obj.get("header") if isinstance(obj, dict) else None
    stored = header.get("digest") if isinstance(header, dict) else None
    if stored is None:
        return "no digest"
    try:
        return "ok" if stored == payload_digest(obj) else "edited"
    except (TypeError, ValueError):  # NaN literals and the like: not what dump_record writes
        return "edited"


# ---- freshness ------------------------------------------------------------------------------------------------------
def staleness(record: Record, fingerprint: str, epoch: int, settings: BaseModel | None = None) -> str | None:
    """Why ``record`` is not current for the run with ``fingerprint`` trained ``epoch`` epochs and the asked
    ``settings`` (compared after validation, so a setting added later with its default still matches); None if it
    is current. ``settings=None`` checks the run only (the report, which recomputes nothing)."""
    h = record.header
    if h.fingerprint != fingerprint:
        return f"computed for another run (fingerprint {h.fingerprint[:16]}, this run {fingerprint[:16]})"
    if h.epoch != epoch:
        return f"computed at epoch {h.epoch}, the run is at epoch {epoch}"
    if settings is not None:
        try:
            same = type(settings).model_validate(with_saved_precision(h.settings)) == settings
        except ValidationError:
            same = False
        if not same:
            return "computed with other settings"
    return None
