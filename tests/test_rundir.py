"""The run-directory layer: identity, config integrity, foreign checkpoints, freshness of records, and the failure
cases of the stages (write failures, non-finite values) -- each refused in one line or recorded, never a wrong
number."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess

import pytest

import smvi.stages.evaluate as E
import smvi.store.checkpoint as C
from conftest import invoke, make_idx_dir, tiny_config
from smvi.data.loading import load_data
from smvi.settings.run import RunConfig, load_config
from smvi.settings.stages import AISConfig, EvalConfig
from smvi.stages.train import train
from smvi.store.records import EvalRecord, make_header
from smvi.store.rundir import RunDir, RunError, fingerprint, identity
from smvi.store.stats import mean_se

TINY_EVAL = EvalConfig(
    n_test=8,
    n_train=0,
    elbo_samples=5,
    dsm_samples=2,
    iwae_k=0,
    ais=AISConfig(steps=3, chains=2, leapfrog_steps=1),
    batch_size=8,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two one-epoch runs that differ only in λ, and their data."""
    root = tmp_path_factory.mktemp("rundir")
    data_dir = make_idx_dir(root / "idx")
    data = load_data("idx", data_dir)
    for name, lam in (("a", 0.0), ("b", 0.5)):
        train(tiny_config(data_dir, lam=lam), root / name, progress=False, data=data)
    return root, data_dir, data


@pytest.fixture
def run(made, tmp_path):
    root, _, _ = made
    shutil.copytree(root / "a", tmp_path / "a")
    return tmp_path / "a"


def one_error_line(r) -> str:
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


# ---- identity -------------------------------------------------------------------------------------------------------
def test_fingerprint_is_the_identity_without_defaults_epochs_device_and_mnist_location():
    base = RunConfig()
    assert identity(base) == {} and fingerprint(base) == fingerprint(RunConfig.model_validate({"train": {"lam": 0.0}}))
    same = [{"train": {"epochs": 7}}, {"train": {"device": "cpu"}}, {"data": {"data_dir": "/elsewhere"}}]
    for tree in same:  # settings that may change without changing the run
        assert fingerprint(RunConfig.model_validate(tree)) == fingerprint(base), tree
    other = [
        {"train": {"lam": 0.1}},
        {"train": {"seed": 1}},
        {"model": {"z_dim": 20}},
        {"data": {"eval_seed": 1}},
        {"data": {"dataset": "idx", "data_dir": "/x"}},
    ]
    prints = {fingerprint(RunConfig.model_validate(tree)) for tree in other}
    assert len(prints) == len(other) and fingerprint(base) not in prints
    a, b = (RunConfig.model_validate({"data": {"dataset": "idx", "data_dir": d}}) for d in ("/x", "/y"))
    assert fingerprint(a) != fingerprint(b)  # for idx files the directory is the data set
    assert len(fingerprint(base)) == 64


def test_a_legacy_run_without_fingerprints_loads_resumes_and_evaluates(made, run):
    """Runs trained before the layer: config.toml without its fingerprint line, checkpoint header without one."""
    _, data_dir, data = made
    cfg = RunDir(run).read_config()
    RunDir(run).config_path.write_text(RunDir(run).config_path.read_text().split("\n# smvi fingerprint")[0])
    tensors, meta = _contents(run / "checkpoint.safetensors")
    del meta["fingerprint"]
    _resign(run / "checkpoint.safetensors", tensors, meta)
    assert C.load_checkpoint(run / "checkpoint.safetensors").fingerprint is None
    assert RunDir(run).read_config() == cfg
    rec = E.evaluate_run(run, TINY_EVAL, data=data, progress=False)
    assert rec.header.fingerprint == fingerprint(cfg)
    train(tiny_config(data_dir, epochs=2), run, resume=True, progress=False, data=data)
    assert RunDir(run).epochs_done() == 2


def _contents(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _resign(path, tensors, meta):
    from safetensors.torch import save_file

    meta.pop("sha256", None)
    meta["sha256"] = C._digest(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


# ---- config integrity -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["with fingerprint line", "legacy"])
def test_a_truncated_config_is_refused_never_defaulted(run, legacy):
    path = RunDir(run).config_path
    text = path.read_text()
    if legacy:
        text = text.split("\n# smvi fingerprint")[0]
    at = text.index("\nepochs =") + 1
    for cut, problem in ((at, "incomplete"), (at + 3, "damaged")):
        path.write_text(text[:cut])  # at a line boundary (valid TOML, keys missing), or mid-line
        for command in ("evaluate", "ssl", "convergence"):
            line = one_error_line(invoke(command, run, "--no-progress"))
            assert f"config.toml is {problem}" in line and "restore it" in line, line
        r = invoke("train", "--out", run, "--resume", "--epochs", 2, "--no-progress")
        assert f"config.toml is {problem}" in one_error_line(r)
    if not legacy:  # cut just before the fingerprint line: every old key is there, but the checkpoint is new
        path.write_text(text.split("\n# smvi fingerprint")[0])
        assert "lost its last line" in one_error_line(invoke("evaluate", run, "--no-progress"))


def test_a_foreign_checkpoint_is_refused_by_every_stage(made, run):
    """A checkpoint of the same architecture but another λ, copied into the run, is named, not evaluated."""
    root, _, _ = made
    shutil.copy(root / "b" / "checkpoint.safetensors", run / "checkpoint.safetensors")
    for command in ("evaluate", "ssl", "convergence"):
        line = one_error_line(invoke(command, run, "--no-progress"))
        assert "belongs to another run (train.lam is 0.5 in the checkpoint, 0.0 in config.toml)" in line, line
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock",
        "checkpoint.safetensors",
        "config.toml",
        "data.json",
        "metrics.jsonl",
    ]


# ---- training and records -------------------------------------------------------------------------------------------
def test_overwrite_removes_the_old_runs_records(made, run):
    _, data_dir, data = made
    E.evaluate_run(run, TINY_EVAL, data=data, progress=False)
    (run / "ssl.json").write_text("{}")
    train(tiny_config(data_dir, lam=0.25), run, overwrite=True, progress=False, data=data)
    assert not (run / "eval.json").exists() and not (run / "ssl.json").exists()


def test_resume_with_fewer_epochs_changes_nothing(made, run):
    _, data_dir, data = made
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = train(tiny_config(data_dir, epochs=1), run, resume=True, progress=False, data=data)
    assert r.last_metrics == {} and load_config(run / "config.toml").train.epochs == 1
    train(tiny_config(data_dir, epochs=2), run, resume=True, progress=False, data=data)
    before = RunDir(run).config_path.read_text()
    r = invoke("train", "--out", run, "--resume", "--epochs", 1, "--no-progress")
    assert r.exit_code == 0 and "nothing to do" in r.output
    assert RunDir(run).config_path.read_text() == before and RunDir(run).read_config().train.epochs == 2


def test_a_record_is_current_only_for_its_run_epoch_and_settings(made, run):
    _, data_dir, data = made
    rd = RunDir(run)
    E.evaluate_run(run, TINY_EVAL, data=data, progress=False)
    assert rd.current_record("eval", TINY_EVAL)[1] is None
    assert rd.current_record("eval", TINY_EVAL.model_copy(update={"seed": 1}))[1] == "computed with other settings"
    train(tiny_config(data_dir, epochs=2), run, resume=True, progress=False, data=data)
    assert rd.current_record("eval", TINY_EVAL)[1] == "computed at epoch 1, the run is at epoch 2"
    rec = rd.read_record("eval")
    foreign = rec.model_copy(update={"header": rec.header.model_copy(update={"fingerprint": "0" * 64})})
    rd.write_record("eval", foreign)
    assert rd.current_record("eval")[1].startswith("computed for another run")


def test_non_finite_values_are_written_as_null_with_a_note(run):
    rd = RunDir(run)
    split = {
        "n": 2,
        "elbo": mean_se([1.0, math.nan]),
        "d_sm": {"mean": math.inf, "se": None},
        "ais": mean_se([1.0, 2.0]),
        "gap": mean_se([]),
        "per_image": {"elbo": [1.0, math.nan], "d_sm": [math.inf, 1.0], "ais": [1.0, 2.0], "gap": [0.0, 0.0]},
    }
    rec = EvalRecord(
        header=make_header("eval", rd.fingerprint(), 1, TINY_EVAL), run="a", lam=0.0, splits={"test": split}
    )
    written = rd.write_record("eval", rec)
    saved = json.loads(rd.record_path("eval").read_text())
    assert saved["splits"]["test"]["d_sm"]["mean"] is None and saved["splits"]["test"]["per_image"]["elbo"][1] is None
    assert saved["splits"]["test"]["elbo"] == {"mean": 1.0, "se": None, "n": 1, "n_nonfinite": 1}
    assert any("splits.test.d_sm.mean" in n for n in written.notes)
    assert any("per_image.elbo: 1 non-finite" in n for n in written.notes) and rd.read_record("eval") == written


def test_one_point_evaluation_has_no_se_and_does_not_crash(made, run):
    _, _, data = made
    rec = E.evaluate_run(run, TINY_EVAL.model_copy(update={"n_test": 1}), data=data, progress=False)
    assert rec.splits["test"].gap.se is None and rec.splits["test"].gap.n == 1
    r = invoke("convergence", run, "--tol", "nan", "--no-progress")
    assert "tol" in one_error_line(r)


# ---- write failures -------------------------------------------------------------------------------------------------
def test_an_unwritable_run_is_refused_before_any_work(made, run, monkeypatch):
    _, _, data = made

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def never(*a, **k):
        raise AssertionError("AIS ran before the output was checked")

    monkeypatch.setattr("tempfile.mkstemp", no_space)
    monkeypatch.setattr(E, "ais", never)
    with pytest.raises(RunError, match="cannot write in .*No space left"):
        E.evaluate_run(run, TINY_EVAL, data=data, progress=False)


def test_a_failed_record_write_is_one_line_and_keeps_the_old_record(made, run, monkeypatch):
    _, _, data = made
    E.evaluate_run(run, TINY_EVAL, data=data, progress=False)
    before = (run / "eval.json").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RunError, match="eval.partial.json was not written, the previous one is intact") as err:
        E.evaluate_run(run, TINY_EVAL.model_copy(update={"seed": 3}), data=data, overwrite=True, progress=False)
    assert "\n" not in str(err.value) and (run / "eval.json").read_bytes() == before  # stopped at the first batch
    monkeypatch.setattr(RunDir, "write_partial", lambda *a: None)  # the progress saved: the record's write fails
    with pytest.raises(RunError, match="eval.json was not written, the previous one is intact") as err:
        E.evaluate_run(run, TINY_EVAL.model_copy(update={"seed": 3}), data=data, overwrite=True, progress=False)
    assert "\n" not in str(err.value) and (run / "eval.json").read_bytes() == before
    assert not list(run.glob(".eval.json.*")) and not list(run.glob(".eval.partial.json.*"))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_a_full_disk_during_evaluate_is_one_line(made, tmp_path):
    """A real small tmpfs filled up while the evaluation runs: a one-line error, exit status 1, nothing partial."""
    root, _, data = made
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(root / "a", disk / "a", ignore=shutil.ignore_patterns(".lock"))
        real = E.ais

        def fill_then_ais(*a, **k):  # the disk fills up while AIS runs
            with open(disk / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            return real(*a, **k)

        E.ais = fill_then_ais
        try:
            with pytest.raises(RunError, match="No space left") as err:
                E.evaluate_run(disk / "a", TINY_EVAL, data=data, progress=False)
        finally:
            E.ais = real
        assert "\n" not in str(err.value) and not (disk / "a" / "eval.json").exists()
        assert not list((disk / "a").glob(".eval.json.*"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_the_mnist_location_from_the_environment_is_saved_without_changing_identity(monkeypatch, tmp_path):
    from smvi.stages.train import with_data_dir

    cfg = RunConfig()
    monkeypatch.setenv("SMVI_DATA_DIR", str(tmp_path / "mnist"))
    got = with_data_dir(cfg)
    assert got.data.data_dir == str(tmp_path / "mnist") and fingerprint(got) == fingerprint(cfg)
    monkeypatch.delenv("SMVI_DATA_DIR")
    monkeypatch.setenv("SMVI_CACHE_DIR", str(tmp_path / "cache"))
    assert with_data_dir(cfg).data.data_dir == str(tmp_path / "cache")
    idx = RunConfig.model_validate({"data": {"dataset": "idx", "data_dir": "rel/dir"}})
    assert with_data_dir(idx) == idx  # for idx the directory is the data set: never rewritten


def test_an_edited_record_is_named_once_for_every_reader(tmp_path):
    """RunDir.edited: the one line that the report and smvi status give for a record changed after it was written;
    None for a record as written and for none."""
    import json

    from test_frontier_report import write_run

    rd = write_run(tmp_path / "run", {"lam": 0.0}, ais=-85.0, gap=5.0)
    assert rd.edited("eval") is None and rd.edited("ssl") is None
    tree = json.loads(rd.record_path("eval").read_text())
    tree["lam"] = 0.5
    rd.record_path("eval").write_text(json.dumps(tree))
    assert rd.edited("eval") == (
        "eval.json does not match its digest (edited or damaged after it was written; the digest catches accidents, "
        "it is no signature): recompute it with --overwrite"
    )
