"""A sweep never deletes what it did not make, and runs one at a time in a directory (issue 28, items 1 and 4).

Each case leaves the runs it must not touch byte for byte as they were, names the folder and the fix in one line,
records the run as refused while the others go on, and exits non-zero."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil

import pytest
from click.testing import CliRunner

import smvi.studies.sweep as S
from smvi.cli import main
from smvi.settings.run import config_to_toml
from smvi.store.rundir import RunDir, RunError
from test_sweep import tiny_sweep


def files(run):
    """Every file of a run directory (its lock aside) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != ".lock"}


def sweep_cli(sweep_dir, cfg, tmp_path, *extra):
    path = tmp_path / "settings.toml"
    path.write_text(config_to_toml(cfg))
    return CliRunner().invoke(
        main, ["sweep", str(sweep_dir), "--config", str(path), "--no-progress", "--no-report", *extra]
    )


def with_z(cfg, z: int):
    return cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"model": cfg.run.model.model_copy(update={"z_dim": z})})}
    )


def refused_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("refused: ")]


def test_a_sweep_without_its_settings_file_leaves_other_runs_alone(idx_dir, tmp_path):
    """sweep.toml missing, other settings: nothing says the sweep made the runs there, so none is retrained."""
    sw = tmp_path / "sw"
    S.run_sweep(tiny_sweep(idx_dir, stages=["train", "evaluate"]), sw, progress=False)
    (sw / "sweep.toml").unlink()
    before = {r.name: files(r) for r in (sw / "runs").iterdir()}
    for extra in ((), ("--overwrite",)):  # --overwrite has no saved settings to go by either
        r = sweep_cli(sw, with_z(tiny_sweep(idx_dir, stages=["train", "evaluate"]), 2), tmp_path, *extra)
        assert r.exit_code == 1, r.output
        assert {r.name: files(r) for r in (sw / "runs").iterdir()} == before
        lines = refused_lines(r.output)
        assert len(lines) == 2 and all(
            "did not make (model.z_dim is 2 but the run used 3)" in x and "move it out of runs/" in x for x in lines
        ), r.output
        assert str(sw / "runs" / "lam0_seed0") in r.output and "0/2 runs complete" in r.output
        (sw / "sweep.toml").unlink()


def test_a_foreign_run_copied_into_a_slot_is_refused_and_the_others_go_on(idx_dir, tmp_path):
    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.0, 0.5, 1.0])
    S.run_sweep(cfg, sw, progress=False)
    shutil.rmtree(sw / "runs" / "lam1_seed0")
    shutil.copytree(sw / "runs" / "lam0_seed0", sw / "runs" / "lam1_seed0")  # λ = 0's run in λ = 1's slot
    foreign = files(sw / "runs" / "lam1_seed0")
    shutil.rmtree(sw / "runs" / "lam0.5_seed0")  # a run the sweep still has to train
    for extra in ((), ("--overwrite",)):  # the saved settings plan λ = 1 there, not this run
        r = sweep_cli(sw, cfg, tmp_path, *extra)
        assert r.exit_code == 1, r.output
        assert files(sw / "runs" / "lam1_seed0") == foreign
        expected = (
            f"refused: lam1_seed0: {sw / 'runs' / 'lam1_seed0'} holds a run this sweep did not make "
            "(train.lam is 1.0 but the run used 0.0); the sweep leaves it as it is: move it out of runs/ (or "
            "use another sweep directory) and rerun the same command"
        )
        assert refused_lines(r.output) == [expected], r.output
        assert "2/3 runs complete" in r.output
    status = json.loads((sw / "sweep_status.json").read_text())["runs"]
    assert {r["name"]: r["status"] for r in status} == {
        "lam0_seed0": "ok",
        "lam0.5_seed0": "ok",
        "lam1_seed0": "refused",
    }
    assert (sw / "runs" / "lam0.5_seed0" / "eval.json").exists()  # the others went on
    shutil.move(sw / "runs" / "lam1_seed0", tmp_path / "kept")  # the fix the message names works
    assert all(r["status"] == "ok" for r in S.run_sweep(cfg, sw, progress=False))


def test_overwrite_retrains_only_the_runs_the_saved_settings_made(idx_dir, tmp_path):
    """A run trained by hand into a slot of a sweep: --overwrite with new settings retrains the sweep's own run of
    the old identity, and leaves the hand-trained one as it is."""
    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train"])
    S.run_sweep(cfg.model_copy(update={"lams": (0.0,)}), sw, progress=False)
    S.run_sweep(cfg, sw, overwrite=True, progress=False)  # the sweep's settings now plan λ = 0.5 too
    hand = sw / "runs" / "lam0.5_seed0"
    shutil.rmtree(hand)
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--out",
            str(hand),
            "--dataset",
            "idx",
            "--data-dir",
            str(idx_dir),
            "--lam",
            "0.5",
            "--z-dim",
            "5",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--no-progress",
            "--set",
            "data.monitor_size=32",
        ],
    )
    assert r.exit_code == 0, r.output
    by_hand, own = files(hand), files(sw / "runs" / "lam0_seed0")
    r = sweep_cli(sw, with_z(cfg, 2), tmp_path, "--overwrite")
    assert r.exit_code == 1, r.output
    assert files(hand) == by_hand
    assert files(sw / "runs" / "lam0_seed0") != own  # the sweep's own run: retrained with the new settings
    assert RunDir(sw / "runs" / "lam0_seed0").read_config().model.z_dim == 2
    assert len(refused_lines(r.output)) == 1 and "lam0.5_seed0" in refused_lines(r.output)[0], r.output


def test_a_damaged_run_is_named_damaged_and_left_alone(idx_dir, tmp_path):
    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train"])
    S.run_sweep(cfg, sw, progress=False)
    run = sw / "runs" / "lam0.5_seed0"
    data = (run / "checkpoint.safetensors").read_bytes()
    (run / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    before = files(run)
    (sw / "runs" / "lam0_seed0" / "config.toml").unlink()  # and a run that lost its config
    other = files(sw / "runs" / "lam0_seed0")
    for overwrite in (False, True):
        results = S.run_sweep(cfg, sw, overwrite=overwrite, progress=False)
        assert [r["status"] for r in results] == ["damaged", "damaged"], results
        assert "config.toml is missing though training files are there" in results[0]["error"]
        assert "is truncated" in results[1]["error"] and f"remove {run} and rerun" in results[1]["error"]
        assert "\n" not in results[1]["error"] and files(run) == before
        assert files(sw / "runs" / "lam0_seed0") == other
    shutil.rmtree(run)  # the fix it names
    shutil.rmtree(sw / "runs" / "lam0_seed0")
    assert [r["status"] for r in S.run_sweep(cfg, sw, progress=False)] == ["ok", "ok"]


def _hold(path, ready, release):
    """What another smvi process holds: the flock of the lock file, its pid written in it."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        ready.set()
        release.wait(60)


def test_a_second_sweep_on_one_directory_is_refused_without_marking_anything(idx_dir, tmp_path):
    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train"])
    S.run_sweep(cfg, sw, progress=False)
    status = (sw / "sweep_status.json").read_bytes()
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(sw / ".lock", ready, release))  # another process's sweep
    other.start()
    try:
        assert ready.wait(60)
        r = sweep_cli(sw, cfg, tmp_path)
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        assert f"sweep directory {sw} is in use by another smvi process (pid {other.pid})" in r.output
        assert (sw / "sweep_status.json").read_bytes() == status
    finally:
        release.set()
        other.join()
    r = sweep_cli(sw, cfg, tmp_path)  # its holder gone, the lock is free
    assert r.exit_code == 0, r.output


def test_a_run_in_use_is_busy_not_failed(idx_dir, tmp_path):
    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train"])
    S.run_sweep(cfg, sw, progress=False)
    longer = cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"train": cfg.run.train.model_copy(update={"epochs": 3})})}
    )
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(sw / "runs" / "lam0_seed0" / ".lock", ready, release))
    other.start()
    try:
        assert ready.wait(60)
        results = S.run_sweep(longer, sw, overwrite=True, progress=False)
    finally:
        release.set()
        other.join()
    assert [r["status"] for r in results] == ["busy", "ok"], results
    assert "in use by another smvi process" in results[0]["error"]


def test_the_lock_file_is_never_followed_through_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(target)
    with (
        pytest.raises(RunError, match=r"\.lock is a symbolic link, not smvi's lock file: remove it"),
        RunDir(tmp_path / "run").lock(),
    ):
        pass
    assert target.read_text() == "precious"
