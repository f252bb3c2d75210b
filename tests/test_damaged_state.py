"""Damaged state named as damaged, with a fix that works (issue 28, item 5): metrics files with bad epochs refused on
resume, names that are not UTF-8 and empty paths refused before training, TensorBoard failures one warning."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys

import pytest
from click.testing import CliRunner

import smvi.studies.sweep as S
from conftest import invoke, tiny_train_args
from smvi.cli import main
from smvi.studies.status import status_text
from test_sweep import tiny_sweep


def metrics_lines(run):
    return (run / "metrics.jsonl").read_text().splitlines()


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda ms: [ms[0], ms[1].replace('"epoch": 2', '"epoch": Infinity'), *ms[2:]], "epoch inf after epoch 1"),
        (lambda ms: [ms[0], ms[0], *ms[2:]], "epoch 1 after epoch 1"),
        (lambda ms: [ms[1], ms[0], *ms[2:]], "epoch 1 after epoch 2"),
        (lambda ms: [ms[0], ms[1].replace('"epoch": 2', '"epoch": 2.0'), *ms[2:]], "epoch 2.0 after epoch 1"),
    ],
)
def test_metrics_with_bad_epochs_are_refused_on_resume(trained, edit, said):
    before = metrics_lines(trained)
    (trained / "metrics.jsonl").write_text("\n".join(edit(before)) + "\n")
    damaged = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != ".lock"}
    r = invoke("train", "--out", trained, "--resume", "--epochs", 4, "--no-progress")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"metrics.jsonl: line 2 has {said}" in r.output and "start over with --overwrite" in r.output, r.output
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != ".lock"} == damaged


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_run_name_that_is_not_utf8_is_refused_before_training(idx_dir, tmp_path):
    name = os.fsdecode(b"run-\xff")
    r = invoke("train", "--out", tmp_path / name, "--epochs", 1, *tiny_train_args(idx_dir))
    assert r.exit_code == 1 and "is not valid UTF-8: choose a UTF-8 name" in r.output, r.output
    assert not (tmp_path / name).exists()
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / name), "--no-progress"])
    assert r.exit_code == 1 and "is not valid UTF-8" in r.output and not (tmp_path / name).exists(), r.output


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--out", ""],
        ["train", "--out", "run", "--tensorboard", ""],
        ["sweep", ""],
        ["evaluate", ""],
        ["report", ""],
        ["status", ""],
    ],
)
def test_empty_paths_are_refused(idx_dir, tmp_path, monkeypatch, args):
    """An empty path would mean the current folder: refused, and nothing is written there."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    r = invoke(*args, *(["--epochs", 1, *tiny_train_args(idx_dir)] if args[0] == "train" else []))
    assert r.exit_code != 0 and "empty" in r.output, r.output
    assert list((tmp_path / "cwd").iterdir()) == []


def test_a_tensorboard_folder_that_cannot_be_written_is_one_warning(idx_dir, tmp_path):
    pytest.importorskip("tensorboard")
    (tmp_path / "tb").write_text("a file where the folder should be")
    r = invoke(
        "train", "--out", tmp_path / "run", "--epochs", 2, *tiny_train_args(idx_dir), "--tensorboard", tmp_path / "tb"
    )
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if "TensorBoard" in line]
    assert (
        len(warnings) == 1
        and warnings[0].startswith("warning: TensorBoard logging to ")
        and "training goes on" in warnings[0]
    ), r.output
    assert [json.loads(m)["epoch"] for m in metrics_lines(tmp_path / "run")] == [1, 2]


def test_a_full_tensorboard_folder_mid_run_never_stops_training(idx_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    real, calls = SummaryWriter.add_scalar, []

    def fills_up(self, *a, **k):
        calls.append(a[0])
        if len(calls) > 20:  # some steps in: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(SummaryWriter, "add_scalar", fills_up)
    r = invoke(
        "train", "--out", tmp_path / "run", "--epochs", 3, *tiny_train_args(idx_dir), "--tensorboard", tmp_path / "tb"
    )
    assert r.exit_code == 0, r.output
    assert r.output.count("warning: TensorBoard logging") == 1 and "No space left on device" in r.output, r.output
    assert len(calls) == 21  # logging stopped at the failure
    assert [json.loads(m)["epoch"] for m in metrics_lines(tmp_path / "run")] == [1, 2, 3]


def test_status_names_damaged_and_foreign_runs_and_their_fix_works(idx_dir, tmp_path):
    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train"], lams=[0.0, 0.5, 1.0])
    S.run_sweep(cfg, sw, progress=False)
    ck = sw / "runs" / "lam0_seed0" / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:-100])  # truncated
    config = sw / "runs" / "lam0.5_seed0" / "config.toml"
    config.write_text(config.read_text()[:40])  # damaged
    shutil.rmtree(sw / "runs" / "lam1_seed0")
    shutil.copytree(sw / "runs" / "lam0_seed0", sw / "runs" / "lam1_seed0")
    (sw / "runs" / "lam1_seed0" / "checkpoint.safetensors").unlink()  # λ = 0's config in λ = 1's slot
    text = status_text(sw)
    assert text.splitlines()[1].split() == ["run", "epochs", "evaluate", "ssl", "pictures"], text  # no empty columns
    rows = {line.split()[0]: line for line in text.splitlines()[2:5]}
    assert "damaged" in rows["lam0_seed0"] and "damaged" in rows["lam0.5_seed0"], text
    assert "refused" in rows["lam1_seed0"], text
    assert "checkpoint.safetensors is truncated" in text and "config.toml is damaged (not valid TOML" in text, text
    assert "holds a run this sweep did not make" in text, text
    assert "0 of 3 runs complete; 3 left as they are (fix them first)" in text, text
    for name in ("lam0_seed0", "lam0.5_seed0"):  # the fix the lines name: remove the folder, rerun
        shutil.rmtree(sw / "runs" / name)
    shutil.move(sw / "runs" / "lam1_seed0", tmp_path / "moved")
    assert all(r["status"] == "ok" for r in S.run_sweep(cfg, sw, progress=False))
    assert "3 of 3 runs complete" in status_text(sw)


def test_the_report_names_a_damaged_run_and_the_sweeps_refusals(idx_dir, tmp_path):
    from smvi.report.aggregate import collect_runs

    sw = tmp_path / "sw"
    cfg = tiny_sweep(idx_dir, stages=["train", "evaluate"])
    S.run_sweep(cfg, sw, progress=False)
    ck = sw / "runs" / "lam0.5_seed0" / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:-100])  # truncated after its evaluation: the record no longer has its model
    S.run_sweep(cfg, sw, progress=False)
    runs, notes = collect_runs(sw)
    assert [r.name for r in runs] == ["runs/lam0_seed0"], notes
    assert any(n.startswith("runs/lam0.5_seed0: run skipped: damaged (") and "is truncated" in n for n in notes), notes
    assert any("sweep_status.json: lam0.5_seed0 damaged" in n for n in notes), notes


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_the_report_skips_a_run_folder_whose_name_is_not_utf8(idx_dir, tmp_path):
    from smvi.report.page import make_report

    sw = tmp_path / "sw"
    S.run_sweep(tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.0]), sw, progress=False)
    shutil.copytree(sw / "runs" / "lam0_seed0", sw / "runs" / os.fsdecode(b"copy-\xff"))
    make_report(sw)  # no UnicodeEncodeError
    text = (sw / "report" / "results.md").read_text()
    assert "copy-\\\\xff: run skipped (its folder name is not valid UTF-8; rename it)" in text, text
