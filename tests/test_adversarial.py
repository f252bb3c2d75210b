"""The adversarial catalogue (issue 28): inputs meant to break smvi, each with the outcome it must have.

Each case is a name, an action (a CLI command run in-process, or a Python API call) on a copy of one small trained
and evaluated run -- or, for ``smvi sweep`` and ``smvi status``, on a finished sweep of it (:func:`_make_sweep`) --
and its outcome class:

- ``ERROR``: a one-line error -- exit status 1 and a single ``error:`` line for a command; one of smvi's error
  classes with a one-line message for an API call -- naming what the case's ``expect`` says, and **nothing lost**:
  every file of the run, of its data and of the sweep is byte-identical afterwards (a second sweep on a folder is
  refused without marking any run failed).
- ``OK``: a correct result, checked by the case's ``check``.

Every case is cheap (tiny settings on the synthetic IDX data of conftest.py). :func:`test_catalogue_counts` keeps
the tally honest (``python -m pytest tests/test_adversarial.py -q`` prints it with ``-s``).
"""

from __future__ import annotations

import gzip
import inspect
import json
import shutil
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import invoke, make_idx_dir, write_idx
from smvi.data.loading import DataError, ImageData, load_idx_dir, read_idx
from smvi.report.aggregate import collect_runs
from smvi.settings.run import ConfigError, RunConfig, build_config, config_to_toml
from smvi.settings.stages import (
    ConvergenceConfig,
    EvalConfig,
    GapConfig,
    PicturesConfig,
)
from smvi.stages.convergence import check_convergence
from smvi.stages.evaluate import evaluate_run
from smvi.stages.gaps import gaps_run
from smvi.stages.pictures import pictures_run
from smvi.stages.ssl import SSLConfig, ssl_run
from smvi.stages.train import train
from smvi.store.checkpoint import CheckpointError
from smvi.store.records import RecordError
from smvi.store.rundir import RunDir, RunError, hold_lock, sweep_paths
from smvi.studies.presets import preset_base
from smvi.studies.sweep import SweepConfig, read_sweep, run_name, run_sweep

ERROR, OK = "one-line error", "correct result"
SMVI_ERRORS = (ConfigError, RunError, DataError, CheckpointError, RecordError)

# ---- tiny settings ---------------------------------------------------------------------------------------------------
TRAIN_SETS = [
    "model.z_dim=4",
    "model.encoder_hidden=[32]",
    "model.decoder_hidden=[32]",
    "data.monitor_size=64",
    "train.batch_size=64",
    "train.epochs=2",
    "train.device=cpu",
]
QUICK_EVAL = dict(
    n_test=8,
    n_train=0,
    elbo_samples=2,
    dsm_samples=2,
    iwae_k=0,
    batch_size=8,
    ais={"steps": 2, "chains": 1, "leapfrog_steps": 1},
)
EVAL_ARGS = [
    "--n-test",
    "8",
    "--n-train",
    "0",
    "--set",
    "elbo_samples=2",
    "--set",
    "dsm_samples=2",
    "--set",
    "iwae_k=0",
    "--set",
    "ais.steps=2",
    "--set",
    "ais.chains=1",
    "--set",
    "ais.leapfrog_steps=1",
    "--set",
    "batch_size=8",
    "--no-progress",
]
QUICK_GAPS = dict(
    n_points=4,
    steps=2,
    window=1,
    n_samples=1,
    eval_samples=2,
    batch_size=4,
    ais={"steps": 2, "chains": 1, "leapfrog_steps": 1},
)
QUICK_PICTURES = dict(n_samples=4, n_reconstructions=2, n_latent=16, columns=2)
QUICK_SSL = dict(sizes=(20,), seeds=(0,), raw_pixels=False, test_size=20, n_jobs=1, C_grid=(1.0,), gamma_grid=(1.0,))
QUICK_CONV = dict(steps=(2, 3), n_points=4, ais={"chains": 1, "leapfrog_steps": 1})


def _evaluate(e: Env):
    """``smvi evaluate --overwrite`` of the run with the tiny settings."""
    return e.cli("evaluate", e.run, "--overwrite", *EVAL_ARGS)


def _resume(e: Env):
    """``smvi train --resume`` of the run to 3 epochs."""
    return e.cli("train", "--out", e.run, "--resume", "--epochs", "3", "--no-progress")


def run_config(idx: Path, *extra: str) -> RunConfig:
    return build_config(RunConfig, {"data": {"dataset": "idx", "data_dir": str(idx)}}, sets=[*TRAIN_SETS, *extra])


def other_arrays(seed: int = 7) -> ImageData:
    """Images of the fixture's shape that are not the fixture's."""
    g = torch.Generator().manual_seed(seed)
    return ImageData(
        torch.rand(256, 784, generator=g),
        torch.arange(256) % 10,
        torch.rand(128, 784, generator=g),
        torch.arange(128) % 10,
    )


# ---- the shared run -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of two runs trained 2 epochs on the synthetic IDX data, each with an eval record: ``run`` (the cases
    act on it) and ``other`` (another seed: the report always has a run to show); and their data directory."""
    root = tmp_path_factory.mktemp("adversarial")
    idx = make_idx_dir(root / "idx")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: fastest on one thread (conftest's rule, for this module's setup)
    try:
        for name, seed in (("run", 0), ("other", 1)):
            train(run_config(idx, f"train.seed={seed}"), root / "sweep" / name, progress=False)
            evaluate_run(root / "sweep" / name, EvalConfig(**QUICK_EVAL), progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return root / "sweep" / "run", idx


@dataclass
class Env:
    run: Path  # a fresh copy of the trained and evaluated run (in a folder of its own: a "sweep")
    idx: Path  # the data it was trained on (restored after each case)
    tmp: Path

    @property
    def sweep(self) -> Path:
        """Where :func:`_make_sweep` puts a finished sweep of the run (an arm of the folder of sweeps ``study``)."""
        return self.tmp / "study" / "arm"

    def cli(self, *args: Any):
        return invoke(*args)

    def data(self) -> ImageData:
        return load_idx_dir(self.idx)


@pytest.fixture
def env(template, tmp_path) -> Env:
    run, idx = template
    saved = {p.name: p.read_bytes() for p in idx.iterdir()}
    shutil.copytree(run.parent, tmp_path / "sweep")
    copy = tmp_path / "sweep" / run.name
    # the copy keeps the template's identity (data_dir is absolute): same fingerprint, same data
    yield Env(copy, idx, tmp_path)
    for p in idx.iterdir():
        if p.name not in saved:
            p.unlink()
    for name, data in saved.items():
        p = idx / name
        if not p.exists() or p.stat().st_size != len(data) or p.read_bytes() != data:
            p.unlink(missing_ok=True)
            p.write_bytes(data)


def snapshot(*dirs: Path) -> dict[str, Any]:
    """Every file's bytes (a file over 64 MB, e.g. a sparse one, by size and modification time)."""
    return {
        str(p): (p.read_bytes() if p.stat().st_size < 64 << 20 else (p.stat().st_size, p.stat().st_mtime_ns))
        for d in dirs
        if d.exists()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ---- cases -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    area: str  # train, evaluate, ssl, convergence, gaps, pictures, report, data, api, sweep, status
    act: Callable[[Env], Any]
    outcome: str
    expect: str = ""  # ERROR: text the error line must contain
    check: Callable[[Env, Any], None] | None = None  # OK: what makes the result correct
    setup: Callable[[Env], None] | None = None  # prepares the case (before the files are compared)


CASES: list[Case] = []


def case(*args, **kw) -> None:
    CASES.append(Case(*args, **kw))


# -- bounds on train's settings (CLI): refused before anything is created
TRAIN_BOUNDS = [
    ("z-dim-huge", "model.z_dim=1000000000", "model.z_dim"),
    ("z-dim-past-limit", "model.z_dim=4097", "model.z_dim"),
    ("encoder-width-huge", "model.encoder_hidden=[100000000]", "model.encoder_hidden"),
    ("decoder-width-huge", "model.decoder_hidden=[32, 70000]", "model.decoder_hidden"),
    ("decoder-too-many-layers", f"model.decoder_hidden=[{', '.join(['8'] * 65)}]", "model.decoder_hidden"),
    ("flow-layers-huge", "model.flow_layers=1000000", "model.flow_layers"),
    ("flow-hidden-huge", "model.flow_hidden=[10000000]", "model.flow_hidden"),
    ("flow-context-huge", "model.flow_context=100000000", "model.flow_context"),
    ("n-samples-huge", "train.n_samples=100000000", "train.n_samples"),
    ("batch-times-samples", "train.n_samples=100000", "train.batch_size × train.n_samples"),
    ("seed-2^63", f"train.seed={2**63}", "train.seed"),
    ("seed-2^64", f"train.seed={2**64}", "train.seed"),
    ("eval-seed-2^63", f"data.eval_seed={2**63}", "data.eval_seed"),
    ("monitor-size-huge", "data.monitor_size=100000000000", "data.monitor_size"),
    ("epochs-huge", "train.epochs=10000000000", "train.epochs"),
    ("batch-size-huge", "train.batch_size=10000000000", "train.batch_size"),
    ("max-bad-steps-huge", "train.max_bad_steps=100000000000", "train.max_bad_steps"),
    ("lam-1e300", "train.lam=1e300", "train.lam"),
    ("warmup-1e300", "train.lam_warmup_epochs=1e300", "train.lam_warmup_epochs"),
    ("target-dsm-1e300", "train.constraint.target=1e300", "train.constraint.target"),
    ("lam-max-1e300", "train.constraint.lam_max=1e300", "train.constraint.lam_max"),
]


def _train_new(*args: Any) -> Callable[[Env], Any]:
    """``smvi train`` into a new folder on the fixture's data with ``args``."""
    return lambda e: e.cli(
        "train", "--out", e.tmp / "new", "--dataset", "idx", "--data-dir", e.idx, "--no-progress", *args
    )


for _name, _set, _key in TRAIN_BOUNDS:
    extra = {"flow": ["--set", "model.posterior=flow"]}.get("flow" if "flow" in _set else "", [])
    if "lam_max" in _set:
        extra = ["--set", "train.constraint.target=30"]
    case(
        f"train-{_name}",
        "train",
        _train_new(*[a for t in TRAIN_SETS for a in ("--set", t)], *extra, "--set", _set),
        ERROR,
        f"{_key}: " if "×" not in _key else _key,
    )
TRAIN_OPTIONS = [  # name, train's options, what the error names
    ("target-dsm-option-1e300", ["--target-dsm", "1e300"], "at most 1e+06"),
    (
        "gap-k-huge",
        ["train.constraint.target=3", "train.constraint.measure=gap", "train.constraint.gap_k=100000000"],
        "train.constraint.gap_k",
    ),
    ("iwae-k-huge", ["train.objective=iwae", "train.iwae_k=100000000"], "train.iwae_k"),
    ("beta-1e300", ["train.objective=beta", "train.beta=1e300"], "train.beta"),
]
for _name, _opts, _expect in TRAIN_OPTIONS:
    _args = _opts if _opts[0].startswith("--") else [a for o in _opts for a in ("--set", o)]
    case(f"train-{_name}", "train", _train_new(*_args), ERROR, _expect)

# -- bounds on the stages' settings (CLI, on the trained run)
STAGE_BOUNDS = [
    ("evaluate", ["--n-test", "1000000000"], "n_test"),
    ("evaluate", ["--n-train", "1000000000"], "n_train"),
    ("evaluate", ["--set", "elbo_samples=1000000000"], "elbo_samples"),
    ("evaluate", ["--set", "dsm_samples=1000000000"], "dsm_samples"),
    ("evaluate", ["--set", "iwae_k=1000000000"], "iwae_k"),
    ("evaluate", ["--set", "iwae_full_test_k=1000000000"], "iwae_full_test_k"),
    ("evaluate", ["--ais-steps", "100000000000"], "ais.steps"),
    ("evaluate", ["--ais-chains", "1000000000"], "ais.chains"),
    ("evaluate", ["--set", "ais.leapfrog_steps=100000000000"], "ais.leapfrog_steps"),
    ("evaluate", ["--set", "batch_size=100000000000"], "batch_size"),
    ("evaluate", ["--set", f"seed={2**63}"], "seed"),
    ("evaluate", ["--set", f"subset_seed={2**64}"], "subset_seed"),
    ("gaps", ["--n-points", "1000000000"], "n_points"),
    ("gaps", ["--set", "steps=100000000000"], "steps"),
    ("gaps", ["--set", "n_samples=1000000000"], "n_samples"),
    ("gaps", ["--set", "eval_samples=1000000000"], "eval_samples"),
    ("gaps", ["--set", "window=100000000000"], "window"),
    ("gaps", ["--set", f"seed={2**63}"], "seed"),
    ("gaps", ["--ais-steps", "100000000000"], "ais.steps"),
    ("gaps", ["--set", "lr=1e300"], "lr"),
    ("pictures", ["--set", "n_samples=1000000"], "n_samples"),
    ("pictures", ["--set", "n_reconstructions=1000000"], "n_reconstructions"),
    ("pictures", ["--set", "n_latent=100000000000"], "n_latent"),
    ("pictures", ["--set", "columns=100000"], "columns"),
    ("pictures", ["--set", f"seed={2**63}"], "seed"),
    ("convergence", ["--steps", "2,100000000000"], "steps"),
    ("convergence", ["--n-points", "1000000000"], "n_points"),
    ("convergence", ["--set", f"seed={2**63}"], "seed"),
    ("convergence", ["--set", "ais.chains=1000000000"], "ais.chains"),
    ("ssl", ["--set", "sizes=[1000000000]"], "sizes"),
    ("ssl", ["--set", f"seeds=[{2**63}]"], "seeds"),
    ("ssl", ["--test-size", "1000000000"], "test_size"),
    ("ssl", ["--set", "n_jobs=1000000"], "n_jobs"),
    ("ssl", ["--set", "batch_size=100000000000"], "batch_size"),
]
for _stage, _args, _key in STAGE_BOUNDS:
    case(
        f"{_stage}-bound-{_key}",
        _stage,
        lambda e, s=_stage, a=_args: e.cli(s, e.run, *a, *(["--no-progress"] if "--no-progress" not in a else [])),
        ERROR,
        f"{_key}: ",
    )

# -- one validation path: settings objects re-validated, wrong types named (Python API)
STAGES = {
    "evaluate": (evaluate_run, EvalConfig, QUICK_EVAL),
    "gaps": (gaps_run, GapConfig, QUICK_GAPS),
    "pictures": (pictures_run, PicturesConfig, QUICK_PICTURES),
    "ssl": (ssl_run, SSLConfig, QUICK_SSL),
    "convergence": (check_convergence, ConvergenceConfig, QUICK_CONV),
}
FIRST_SIZE = {
    "evaluate": "n_test",
    "gaps": "n_points",
    "pictures": "n_samples",
    "ssl": "batch_size",
    "convergence": "n_points",
}


def _api(stage: str, cfg: Any = None, **kw) -> Callable[[Env], Any]:
    fn, cls, quick = STAGES[stage]

    def act(e: Env):
        c = cfg(cls(**quick)) if callable(cfg) else cls(**quick)
        args = {"progress": False, "overwrite": True, "device": "cpu", **kw}
        return fn(args.pop("run_dir", e.run), c, **args)

    return act


for _stage in STAGES:
    key = FIRST_SIZE[_stage]
    case(
        f"api-{_stage}-model-copy-negative",
        "api",
        _api(_stage, lambda c, k=key: c.model_copy(update={k: -3})),
        ERROR,
        f"{key}: ",
    )
    case(
        f"api-{_stage}-model-copy-string",
        "api",
        _api(_stage, lambda c, k=key: c.model_copy(update={k: "many"})),
        ERROR,
        f"{key}: ",
    )
    case(
        f"api-{_stage}-model-copy-huge",
        "api",
        _api(_stage, lambda c, k=key: c.model_copy(update={k: 10**12})),
        ERROR,
        "at most",
    )
    case(
        f"api-{_stage}-model-copy-unknown-key",
        "api",
        _api(_stage, lambda c: c.model_copy(update={"no_such_key": 1})),
        ERROR,
        "no_such_key",
    )
    case(f"api-{_stage}-settings-as-dict", "api", _api(_stage, lambda c: c.model_dump()), ERROR, "got dict")
    case(f"api-{_stage}-settings-none", "api", _api(_stage, lambda c: None), ERROR, "got NoneType")
    case(
        f"api-{_stage}-settings-of-another-stage",
        "api",
        _api(_stage, lambda c, s=_stage: GapConfig() if s != "gaps" else EvalConfig()),
        ERROR,
        "must be a",
    )
    case(
        f"api-{_stage}-data-not-imagedata",
        "api",
        _api(_stage, data=np.zeros((3, 784))),
        ERROR,
        "data must be an smvi.ImageData",
    )
    case(f"api-{_stage}-device-gpu", "api", _api(_stage, device="gpu"), ERROR, "device must be one of")
    case(f"api-{_stage}-run-dir-int", "api", _api(_stage, run_dir=123), ERROR, "non-empty path")
    case(f"api-{_stage}-run-dir-empty", "api", _api(_stage, run_dir=""), ERROR, "non-empty path")
case(
    "api-evaluate-nested-model-copy",
    "api",
    _api("evaluate", lambda c: c.model_copy(update={"ais": c.ais.model_copy(update={"steps": 0})})),
    ERROR,
    "ais.steps",
)
case(
    "api-evaluate-n-test-minus-3-not-recorded",
    "api",
    _api("evaluate", lambda c: c.model_copy(update={"n_test": -3})),
    ERROR,
    "greater than 0",
)


def _train_api(update: Callable[[RunConfig], Any], **kw) -> Callable[[Env], Any]:
    def act(e: Env):
        return train(update(run_config(e.idx)), e.tmp / "new", progress=False, **kw)

    return act


TRAIN_COPIES = [  # name, section, key, value, what the error names
    ("negative-z", "model", "z_dim", -1, "model.z_dim"),
    ("huge-z", "model", "z_dim", 10**9, "at most 4096"),
    ("seed-2^64", "train", "seed", 2**64, "train.seed"),
    ("wrong-type", "train", "lr", "fast", "train.lr"),
]
for _name, _section, _key, _value, _expect in TRAIN_COPIES:
    _copy = lambda c, s=_section, k=_key, v=_value: c.model_copy(  # noqa: E731
        update={s: getattr(c, s).model_copy(update={k: v})}
    )
    case(f"api-train-model-copy-{_name}", "api", _train_api(_copy), ERROR, _expect)
case("api-train-config-as-dict", "api", _train_api(lambda c: c.model_dump()), ERROR, "got dict")
case("api-train-config-is-eval-config", "api", _train_api(lambda c: EvalConfig()), ERROR, "must be a RunConfig")
case(
    "api-train-data-is-a-tensor",
    "api",
    _train_api(lambda c: c, data=torch.zeros(4, 784)),
    ERROR,
    "data must be an smvi.ImageData",
)
case("api-train-run-dir-none", "api", lambda e: train(run_config(e.idx), None, progress=False), ERROR, "non-empty path")


# -- data identity: what a run was trained on
def _replace_test_images(e: Env) -> None:
    path = e.idx / "t10k-images-idx3-ubyte"
    a = read_idx(path).copy()
    a[0] = 255 - a[0]
    write_idx(path, a)


def _gzip_in_place(e: Env) -> None:
    for p in list(e.idx.iterdir()):
        (p.parent / (p.name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
        p.unlink()


def _forget_data_json(e: Env) -> None:
    (e.run / "data.json").unlink()


def _api_trained(e: Env) -> None:
    """The run retrained (in place) on arrays through the Python API, its config still naming the IDX files."""
    train(run_config(e.idx), e.run, overwrite=True, progress=False, data=other_arrays())


for _stage in STAGES:
    case(
        f"{_stage}-on-replaced-idx-files",
        "data",
        lambda e, s=_stage: e.cli(s, e.run, "--no-progress", "--overwrite", *(EVAL_ARGS if s == "evaluate" else [])),
        ERROR,
        "changed: t10k-images-idx3-ubyte",
        setup=_replace_test_images,
    )
    case(
        f"{_stage}-api-other-arrays",
        "data",
        _api(_stage, data=other_arrays()),
        ERROR,
        "now arrays passed through the Python API",
    )
    case(
        f"{_stage}-cli-after-api-training",
        "data",
        lambda e, s=_stage: e.cli(s, e.run, "--no-progress", *(EVAL_ARGS if s == "evaluate" else [])),
        ERROR,
        "trained on arrays passed through the Python API",
        setup=_api_trained,
    )
case("evaluate-error-names-both", "data", _api("evaluate", data=other_arrays()), ERROR, "trained on IDX files in")
case(
    "resume-on-replaced-idx-files",
    "train",
    _resume,
    ERROR,
    "changed: t10k-images-idx3-ubyte",
    setup=_replace_test_images,
)
case(
    "resume-with-other-arrays",
    "train",
    lambda e: train(run_config(e.idx, "train.epochs=3"), e.run, resume=True, progress=False, data=other_arrays()),
    ERROR,
    "the data changed since the run was trained",
)
case(
    "resume-api-run-with-other-arrays",
    "train",
    lambda e: train(run_config(e.idx, "train.epochs=3"), e.run, resume=True, progress=False, data=other_arrays(seed=8)),
    ERROR,
    "now arrays",
    setup=_api_trained,
)
case(
    "data-json-damaged",
    "data",
    _evaluate,
    ERROR,
    "data.json is damaged",
    setup=lambda e: (e.run / "data.json").write_text('{"kind": "mnist"'),
)


def _evaluated_ok(e: Env, r: Any) -> None:
    assert r.exit_code == 0, r.output if hasattr(r, "exit_code") else r


def _named(runs: list, name: str):
    (run,) = [r for r in runs if r.name == name]
    return run


def _record_names_other_data(e: Env, kind: str) -> None:
    rec = RunDir(e.run).read_record("eval")
    assert rec.header.data is not None and rec.header.data.kind == kind, rec.header.data
    runs, notes = collect_runs(e.run.parent)
    assert _named(runs, "run").eval is None, notes
    assert any("not the data the run was trained on" in n for n in notes), notes


def _resumed(e: Env, r: Any) -> None:
    assert r.exit_code == 0, r.output
    assert RunDir(e.run).epochs_done() == 3


case(
    "evaluate-other-data-allowed",
    "data",
    _api("evaluate", data=other_arrays(), other_data=True),
    OK,
    check=lambda e, r: _record_names_other_data(e, "arrays"),
)
case(
    "evaluate-cli-other-data-flag",
    "data",
    lambda e: e.cli("evaluate", e.run, "--overwrite", "--other-data", *EVAL_ARGS),
    OK,
    check=lambda e, r: (
        _evaluated_ok(e, r),
        _record_names_other_data(e, "idx"),
        pytest.fail(r.output) if "not the data the run was trained on" not in r.output else None,
    ),
    setup=_api_trained,
)
case(
    "evaluate-same-images-as-arrays",
    "data",
    lambda e: evaluate_run(e.run, EvalConfig(**QUICK_EVAL), data=e.data(), overwrite=True, progress=False),
    OK,
    check=lambda e, r: RunDir(e.run).read_record("eval").header.data is None,
)
case(
    "evaluate-idx-gzipped-in-place",
    "data",
    _evaluate,
    OK,
    check=_evaluated_ok,
    setup=_gzip_in_place,
)
case(
    "resume-idx-gzipped-in-place",
    "train",
    _resume,
    OK,
    check=_resumed,
    setup=_gzip_in_place,
)
case(
    "resume-on-unchanged-data",
    "train",
    _resume,
    OK,
    check=_resumed,
)
case(
    "run-without-data-json-evaluates",
    "data",
    _evaluate,
    OK,
    check=_evaluated_ok,
    setup=_forget_data_json,
)
case(
    "run-without-data-json-resumes",
    "train",
    _resume,
    OK,
    check=lambda e, r: (_resumed(e, r), pytest.fail("data.json written") if (e.run / "data.json").exists() else 0),
    setup=_forget_data_json,
)
case(
    "overwrite-records-new-data",
    "train",
    lambda e: train(run_config(e.idx), e.run, overwrite=True, progress=False, data=other_arrays()),
    OK,
    check=lambda e, r: RunDir(e.run).read_data().kind == "arrays",
)
case(
    "train-records-data-json",
    "train",
    lambda e: RunDir(e.run).read_data(),
    OK,
    check=lambda e, d: (
        (
            d.kind == "idx"
            and d.location == str(e.idx.resolve())
            and sorted(d.files) == sorted(p.name for p in e.idx.iterdir())
        )
        or pytest.fail(str(d))
    ),
)


# -- records that notice edits
def _edit_eval(e: Env, change: Callable[[dict], dict | None], indent: int | None = 2) -> None:
    path = RunDir(e.run).record_path("eval")
    tree = json.loads(path.read_text())
    tree = change(tree) or tree
    path.write_text(json.dumps(tree, indent=indent))


def _report(e: Env):
    return collect_runs(e.run.parent)


def _left_out_as_edited(e: Env, got) -> None:
    runs, notes = got
    assert _named(runs, "run").eval is None and any("does not match its digest" in n for n in notes), notes


def _reported(e: Env, got) -> None:
    runs, notes = got
    assert _named(runs, "run").eval is not None and not any("digest" in n for n in notes), notes


def _set_elbo(tree: dict) -> None:
    tree["splits"]["test"]["elbo"]["mean"] = -80.0


def _drop_digest(tree: dict) -> None:
    del tree["header"]["digest"]


REPORT_EDITS = [  # name, the edit of eval.json (None: none), its indent, whether the report leaves the record out
    ("edited-mean", _set_elbo, 2, True),
    ("edited-per-image", lambda t: t["splits"]["test"]["per_image"]["elbo"].__setitem__(0, 1.0), 2, True),
    ("edited-lam", lambda t: t.__setitem__("lam", 0.5), 2, True),
    ("edited-settings", lambda t: t["header"]["settings"].__setitem__("n_test", 9), 2, True),
    ("edited-note-added", lambda t: t["notes"].append("fine"), 2, True),
    ("digest-of-another-record", lambda t: t["header"].__setitem__("digest", "0" * 64), 2, True),
    ("edited-and-digest-dropped", lambda t: (_set_elbo(t), _drop_digest(t))[-1], 2, False),
    ("record-before-digests", _drop_digest, 2, False),
    ("reindented-record", lambda t: None, None, False),
    ("keys-reordered", lambda t: dict(reversed(list(t.items()))), 2, False),
    ("unedited", None, 2, False),
]
for _name, _edit, _indent, _out in REPORT_EDITS:
    case(
        f"report-{_name}",
        "report",
        _report,
        OK,
        check=_left_out_as_edited if _out else _reported,
        setup=None if _edit is None else (lambda e, f=_edit, i=_indent: _edit_eval(e, f, indent=i)),
    )
case(
    "report-digest-not-hex",
    "report",
    _report,
    OK,
    check=lambda e, got: (
        (_named(got[0], "run").eval is None and any("unreadable" in n for n in got[1])) or pytest.fail(str(got[1]))
    ),
    setup=lambda e: _edit_eval(e, lambda t: t["header"].__setitem__("digest", "zz")),
)
INTEGRITY = [  # name, record, the edit of eval.json before (None: none), record_integrity's answer
    ("ok", "eval", None, "ok"),
    ("edited", "eval", _set_elbo, "edited"),
    ("legacy", "eval", _drop_digest, "no digest"),
    ("missing-record", "gaps", None, "no digest"),
]
for _name, _kind, _edit, _answer in INTEGRITY:
    case(
        f"integrity-{_name}",
        "report",
        lambda e, k=_kind: RunDir(e.run).record_integrity(k),
        OK,
        check=lambda e, s, a=_answer: s == a or pytest.fail(s),
        setup=None if _edit is None else (lambda e, f=_edit: _edit_eval(e, f)),
    )
case(
    "integrity-not-json",
    "report",
    lambda e: __import__("smvi.store.records").store.records.record_integrity(b"\xff\xfe"),
    OK,
    check=lambda e, s: s == "no digest" or pytest.fail(s),
)
case(
    "edited-record-still-reads",
    "report",
    lambda e: RunDir(e.run).read_record("eval"),
    OK,
    check=lambda e, r: r.splits["test"].elbo.mean == -80.0 or pytest.fail(str(r)),
    setup=lambda e: _edit_eval(e, _set_elbo),
)


# -- IDX files: bounded while inflating
def _bomb(e: Env) -> None:
    """Labels whose header says 128 items, followed by 64 MB of zeros: about 300 KB gzipped."""
    path = e.idx / "t10k-labels-idx1-ubyte"
    header = path.read_bytes()[:8]
    path.unlink()
    z = gzip.compress(header + bytes(128) + bytes(64 << 20), compresslevel=1)
    (e.idx / "t10k-labels-idx1-ubyte.gz").write_bytes(z)


def _bomb_bounded(e: Env):
    tracemalloc.start()
    try:
        read_idx(e.idx / "t10k-labels-idx1-ubyte.gz")
    except DataError as err:
        _, peak = tracemalloc.get_traced_memory()
        return str(err), peak
    finally:
        tracemalloc.stop()
    pytest.fail("the bomb was accepted")


case(
    "idx-gzip-bomb-stops-early",
    "data",
    _bomb_bounded,
    OK,
    setup=_bomb,
    check=lambda e, got: ("past what its header implies" in got[0] and got[1] < (8 << 20)) or pytest.fail(str(got)),
)
case(
    "idx-gzip-bomb-cli",
    "data",
    _evaluate,
    ERROR,
    "past what its header implies",
    setup=_bomb,
)


def _huge_header(e: Env) -> None:
    path = e.idx / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes()[:64])
    raw[4:8] = (2**31).to_bytes(4, "big")
    path.unlink()
    (e.idx / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))


case(
    "idx-header-implies-terabytes",
    "data",
    _evaluate,
    ERROR,
    "header implies",
    setup=_huge_header,
)


def _sparse_huge(e: Env) -> None:
    with open(e.idx / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.truncate(3 << 30)  # sparse: nothing is written


case(
    "idx-plain-file-over-limit",
    "data",
    _evaluate,
    ERROR,
    "more than the 2147483648",
    setup=_sparse_huge,
)


def _gzipped_then(name: str, change: Callable[[bytes], bytes]) -> Callable[[Env], None]:
    def setup(e: Env) -> None:
        _gzip_in_place(e)
        path = e.idx / name
        path.write_bytes(change(path.read_bytes()))

    return setup


case(
    "idx-truncated-gzip",
    "data",
    _evaluate,
    ERROR,
    "damaged gzip file",
    setup=_gzipped_then("t10k-images-idx3-ubyte.gz", lambda b: b[:-30]),
)
case(
    "idx-gzip-trailing-garbage",
    "data",
    _evaluate,
    ERROR,
    "damaged gzip file",
    setup=_gzipped_then("t10k-labels-idx1-ubyte.gz", lambda b: b + b"junk!"),
)


def _two_members(e: Env) -> None:
    p = e.idx / "t10k-labels-idx1-ubyte"
    raw = p.read_bytes()
    p.unlink()
    (e.idx / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:50]) + gzip.compress(raw[50:]))


case(
    "idx-gzip-two-members",
    "data",
    lambda e: read_idx(e.idx / "t10k-labels-idx1-ubyte.gz"),
    OK,
    check=lambda e, a: a.shape == (128,) or pytest.fail(str(a.shape)),
    setup=_two_members,
)
case(
    "idx-gzip-too-short-for-header",
    "data",
    _evaluate,
    ERROR,
    "truncated",
    setup=lambda e: (
        (e.idx / "t10k-labels-idx1-ubyte").unlink(),
        (e.idx / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08")),
    )[0],
)


# -- one device default for every stage
for _stage in ("evaluate", "gaps", "pictures", "convergence"):
    case(
        f"{_stage}-help-device-default-auto",
        _stage,
        lambda e, s=_stage: e.cli(s, "--help"),
        OK,
        check=lambda e, r: "[default: auto]" in " ".join(r.output.split()) or pytest.fail(r.output),
    )
for _stage, (_fn, _cls, _q) in STAGES.items():
    case(
        f"{_stage}-api-device-default-auto",
        _stage,
        lambda e, f=_fn: inspect.signature(f).parameters["device"],
        OK,
        check=lambda e, p: p.default == "auto" or pytest.fail(str(p)),
    )

# -- correct results on ordinary input (each stage once, tiny)
case(
    "evaluate-quick",
    "evaluate",
    _evaluate,
    OK,
    check=lambda e, r: (_evaluated_ok(e, r), RunDir(e.run).record_integrity("eval") == "ok" or pytest.fail()),
)
case(
    "gaps-quick",
    "gaps",
    _api("gaps"),
    OK,
    check=lambda e, r: (r.n == 4 and RunDir(e.run).record_integrity("gaps") == "ok") or pytest.fail(str(r.n)),
)
case(
    "pictures-quick",
    "pictures",
    _api("pictures"),
    OK,
    check=lambda e, r: RunDir(e.run).record_integrity("pictures") == "ok" or pytest.fail(),
)
case(
    "convergence-quick",
    "convergence",
    _api("convergence"),
    OK,
    check=lambda e, r: [b.steps for b in r.bdmc] == [2, 3] or pytest.fail(str(r.bdmc)),
)
case(
    "evaluate-n-test-past-split",
    "evaluate",
    _api("evaluate", lambda c: c.model_copy(update={"n_test": 1000})),
    ERROR,
    "n_test = 1000 but the test split has 128 images",
)


# -- sweep and status, on a finished sweep of the run (its sweep.toml, the run in runs/lam0_seed0)
def _sweep_config(e: Env) -> SweepConfig:
    """The settings of a sweep that made ``e.run``: its config at λ = 0, seed 0, trained and evaluated."""
    return SweepConfig(
        lams=(0.0,), seeds=(0,), stages=("train", "evaluate"), run=RunDir(e.run).read_config(), eval=QUICK_EVAL
    )


def _make_sweep(change: Callable[[Env], Any] | None = None) -> Callable[[Env], None]:
    """A setup: ``e.sweep`` a finished sweep of one run (a copy of ``e.run``), its settings also in ``tmp/sweep.toml``
    (what the commands are given); then ``change``."""

    def setup(e: Env) -> None:
        text = config_to_toml(_sweep_config(e))
        config, _, runs = sweep_paths(e.sweep)
        shutil.copytree(e.run, runs / run_name(0.0, 0))
        config.write_text(text)
        (e.tmp / "sweep.toml").write_text(text)
        if change is not None:
            change(e)

    return setup


def _sweep_cli(*extra: Any) -> Callable[[Env], Any]:
    """``smvi sweep`` on ``e.sweep`` with its own settings (and ``extra``)."""
    return lambda e: e.cli("sweep", e.sweep, "--config", e.tmp / "sweep.toml", "--no-report", "--no-progress", *extra)


def _sweep_api(e: Env):
    return run_sweep(read_sweep(e.sweep), e.sweep, progress=False)


def _while_running(act: Callable[[Env], Any]) -> Callable[[Env], Any]:
    """``act`` while another sweep holds ``e.sweep`` (its lock, held as a running sweep holds it)."""

    def held(e: Env):
        with hold_lock(e.sweep / ".lock", f"sweep directory {e.sweep}"):
            return act(e)

    return held


def _slot(e: Env) -> RunDir:
    return RunDir(sweep_paths(e.sweep)[2] / run_name(0.0, 0))


def _truncate_checkpoint(e: Env) -> None:
    path = _slot(e).checkpoint_path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign_run(e: Env) -> None:
    """The sweep's settings plan another run (another learning rate) than the one in its slot."""
    cfg = _sweep_config(e)
    other = cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"train": cfg.run.train.model_copy(update={"lr": 2e-3})})}
    )
    for path in (sweep_paths(e.sweep)[0], e.tmp / "sweep.toml"):
        path.write_text(config_to_toml(other))


def _damage_settings(text: Callable[[str], str]) -> Callable[[Env], None]:
    def change(e: Env) -> None:
        path = sweep_paths(e.sweep)[0]
        path.write_text(text(path.read_text()))

    return change


def _left_alone(status: str) -> Callable[[Env, Any], None]:
    """The sweep's result for the run is ``status``, with one line naming its folder, and the run is as it was."""

    def check(e: Env, results: list[dict]) -> None:
        (r,) = results
        assert r["status"] == status and str(_slot(e).path) in r["error"] and "\n" not in r["error"], r
        assert r["done"] == [] and not r.get("epochs"), r

    return check


def _says(*texts: str) -> Callable[[Env, Any], None]:
    def check(e: Env, r: Any) -> None:
        assert all(t in r.output for t in texts), r.output

    return check


SWEEP_ERRORS = [  # name, setup of the sweep, act, what the one error line names
    ("sweep-second-on-same-folder", _make_sweep(), _while_running(_sweep_cli()), "is in use by another smvi process"),
    ("sweep-second-on-same-folder-api", _make_sweep(), _while_running(_sweep_api), "is in use by another smvi process"),
    (
        "sweep-damaged-sweep-toml",
        _make_sweep(_damage_settings(lambda t: t[: len(t) // 2] + "[[[")),
        _sweep_cli(),
        "is not valid TOML",
    ),
    (
        "sweep-sweep-toml-is-a-folder",
        _make_sweep(lambda e: (sweep_paths(e.sweep)[0].unlink(), sweep_paths(e.sweep)[0].mkdir())),
        _sweep_cli(),
        "cannot read config file",
    ),
    ("sweep-sweep-toml-unknown-key", _make_sweep(_damage_settings(lambda t: "bogus = 1\n" + t)), _sweep_cli(), "bogus"),
    ("sweep-other-settings", _make_sweep(), _sweep_cli("--set", "lams=[0,0.5]"), "holds a different sweep"),
    (
        "sweep-lock-is-a-symlink",
        _make_sweep(lambda e: (e.sweep / ".lock").symlink_to(e.tmp / "elsewhere")),
        _sweep_cli(),
        "is a symbolic link",
    ),
    (
        "sweep-status-file-is-a-folder",
        _make_sweep(lambda e: sweep_paths(e.sweep)[1].mkdir()),
        _sweep_cli(),
        "cannot write in",
    ),
    ("sweep-unknown-preset-api", None, lambda e: preset_base("bogus"), "unknown sweep preset 'bogus'"),
    ("sweep-no-lams-nor-targets", None, lambda e: e.cli("sweep", e.tmp / "new", "--set", "lams=[]"), "all empty"),
    (
        "sweep-unknown-stage",
        None,
        lambda e: e.cli("sweep", e.tmp / "new", "--set", 'stages=["train", "bogus"]'),
        "bogus",
    ),
    ("sweep-empty-folder-name-api", None, lambda e: run_sweep(_sweep_config(e), "", progress=False), "is empty"),
]
for _name, _setup, _act, _expect in SWEEP_ERRORS:
    case(_name, "sweep", _act, ERROR, _expect, setup=_setup)
SWEEP_RESULTS = [  # name, setup, act, check
    ("sweep-rerun-finished", _make_sweep(), _sweep_cli(), _says("1/1 runs complete")),
    ("sweep-truncated-checkpoint-left-alone", _make_sweep(_truncate_checkpoint), _sweep_api, _left_alone("damaged")),
    ("sweep-foreign-run-left-alone", _make_sweep(_foreign_run), _sweep_api, _left_alone("refused")),
]
for _name, _setup, _act, _check in SWEEP_RESULTS:
    case(_name, "sweep", _act, OK, check=_check, setup=_setup)


def _status(e: Env):
    return e.cli("status", e.sweep)


STATUS_ERRORS = [  # name, setup, act, what the one error line names
    (
        "status-empty-folder",
        lambda e: (e.tmp / "empty").mkdir(),
        lambda e: e.cli("status", e.tmp / "empty"),
        "not a sweep",
    ),
    ("status-nonexistent-folder", None, lambda e: e.cli("status", e.tmp / "nowhere"), "not a sweep directory"),
    ("status-a-run-folder", None, lambda e: e.cli("status", e.run), "not a sweep directory"),
    (
        "status-damaged-sweep-toml",
        _make_sweep(_damage_settings(lambda t: t[: len(t) // 2] + "[[[")),
        _status,
        "is not valid TOML",
    ),
    ("status-sweep-toml-unknown-key", _make_sweep(_damage_settings(lambda t: "bogus = 1\n" + t)), _status, "bogus"),
    (
        "status-sweep-toml-is-a-folder",
        _make_sweep(lambda e: (sweep_paths(e.sweep)[0].unlink(), sweep_paths(e.sweep)[0].mkdir())),
        _status,
        "sweep.toml is not a file",
    ),
]
for _name, _setup, _act, _expect in STATUS_ERRORS:
    case(_name, "status", _act, ERROR, _expect, setup=_setup)
STATUS_RESULTS = [  # name, setup, act, check
    ("status-finished-sweep", _make_sweep(), _status, _says("lam0_seed0", "1 of 1 runs complete")),
    (
        "status-folder-of-sweeps",
        _make_sweep(),
        lambda e: e.cli("status", e.sweep.parent),
        _says("sweep ", "1 of 1 runs complete"),
    ),
    ("status-while-the-sweep-runs", _make_sweep(), _while_running(_status), _says("1 of 1 runs complete")),
    (
        "status-truncated-checkpoint",
        _make_sweep(_truncate_checkpoint),
        _status,
        _says("damaged", "restore the file, or remove", "1 left as they are"),
    ),
    ("status-foreign-run", _make_sweep(_foreign_run), _status, _says("refused", "did not make", "1 left as they are")),
    (
        "status-garbage-status-file",
        _make_sweep(lambda e: sweep_paths(e.sweep)[1].write_text("{")),
        _status,
        _says("1 of 1 runs complete"),
    ),
    (
        "status-torn-metrics-line",
        _make_sweep(lambda e: _slot(e).metrics_path.write_text(_slot(e).metrics_path.read_text() + '{"epoch": 3, "el')),
        _status,
        _says("1 of 1 runs complete"),
    ),
]
for _name, _setup, _act, _check in STATUS_RESULTS:
    case(_name, "status", _act, OK, check=_check, setup=_setup)


# ---- the test -------------------------------------------------------------------------------------------------------
def _error_line(got: Any) -> str:
    """The one error line of a command's result, or of an API call's exception."""
    if isinstance(got, BaseException):
        assert isinstance(got, SMVI_ERRORS), f"{type(got).__name__}: {got}"
        text = str(got)
        assert text and "\n" not in text, text
        return text
    assert got.exit_code == 1, (got.exit_code, got.output, got.exception)
    lines = got.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), got.output
    return lines[0]


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_case(c: Case, env: Env):
    if c.setup:
        c.setup(env)
    before = snapshot(env.run, env.idx, env.sweep.parent)
    try:
        got = c.act(env)
    except Exception as e:  # judged below: only smvi's one-line errors are expected
        if c.outcome == OK:
            raise
        got = e
    if c.outcome == ERROR:
        line = _error_line(got)
        assert c.expect in line, f"expected {c.expect!r} in: {line}"
        assert snapshot(env.run, env.idx, env.sweep.parent) == before, "files changed"
        assert not (env.tmp / "new").exists() or not any((env.tmp / "new").iterdir()), "a run was started"
    else:
        if hasattr(got, "exit_code"):
            assert got.exit_code == 0, got.output
        if c.check:
            c.check(env, got)


def test_catalogue_counts(capsys):
    """At least 150 cases, every name unique, every area of the issue with some (sweep and status with at least 10
    each); prints the tally."""
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n, k in Counter(names).items() if k > 1]
    by = Counter((c.area, c.outcome) for c in CASES)
    with capsys.disabled():
        print(
            f"\nadversarial catalogue: {len(CASES)} cases; "
            + ", ".join(f"{o}: {sum(v for (a, oo), v in by.items() if oo == o)}" for o in (ERROR, OK))
        )
    assert len(CASES) >= 150
    areas = Counter(c.area for c in CASES)
    assert {"train", "evaluate", "ssl", "gaps", "pictures", "convergence", "report", "data", "api"} <= set(areas)
    assert areas["sweep"] >= 10 and areas["status"] >= 10, areas
