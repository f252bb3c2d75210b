"""The report on damaged sweeps: every bad file is refused with one note and the rest is reported; copies count once;
names are escaped; the output set is replaced atomically; no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import smvi.report.page as R
from smvi.report.page import make_report
from test_report import read_csv, write_run

LAM = (0.0, 0.01)


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for lam in LAM:
        for seed in (0, 1):
            write_run(root / f"lam{lam}_seed{seed}", lam, seed)
    return root


def notes(sweep) -> str:
    return (sweep / "report" / "results.md").read_text().split("## Notes", 1)[1].split("\n## ")[0]


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: os.symlink("/dev/zero", p), "not a regular file"),
        (lambda p: p.write_bytes(b'{"run": "\xff\xfe"}'), "not a JSON record"),
        (lambda p: p.write_text('{"settings": {}, "epoch": NaN}'), "non-JSON constant NaN"),
        (lambda p: (p.touch(), os.truncate(p, 65 << 20)), "more than smvi ever writes"),  # sparse: cheap
    ],
    ids=["fifo", "dev-zero", "non-utf8", "nan-literal", "huge"],
)
def test_each_damaged_record_is_one_note_and_the_rest_is_reported(sweep, damage, why):
    target = sweep / "lam0.0_seed0" / "eval.json"
    target.unlink()
    damage(target)
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("gap", "test", "", "0.0")]["n_runs"] == "1" and rows[("gap", "test", "", "0.01")]["n_runs"] == "2"
    lines = [ln for ln in notes(sweep).splitlines() if "lam0.0\\_seed0" in ln or "lam0.0_seed0" in ln]
    assert len(lines) == 1 and why in lines[0] and "eval.json" in lines[0], lines


def test_a_fifo_in_place_of_a_checkpoint_or_metrics_does_not_hang(sweep):
    os.mkfifo(sweep / "lam0.01_seed1" / "checkpoint.safetensors")
    os.unlink(sweep / "lam0.0_seed1" / "metrics.jsonl")
    os.mkfifo(sweep / "lam0.0_seed1" / "metrics.jsonl")
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("gap", "test", "", "0.01")]["n_runs"] == "1" and rows[("gap", "test", "", "0.0")]["n_runs"] == "1"
    assert notes(sweep).count("not a regular file") == 2


def test_an_accuracy_above_one_is_refused(sweep):
    path = sweep / "lam0.01_seed1" / "ssl.json"
    ssl = json.loads(path.read_text())
    ssl["features"]["sizes"]["600"]["accuracy"][0] = 93.4  # a percentage where a fraction belongs
    path.write_text(json.dumps(ssl))
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("ssl_accuracy", "test", "600", "0.01")]["n_runs"] == "1"
    assert "unreadable ssl.json" in notes(sweep) and "less than or equal to 1" in notes(sweep)


def test_a_run_with_a_nan_lambda_is_skipped_with_a_note(sweep):
    path = sweep / "lam0.01_seed1" / "config.toml"
    path.write_text(path.read_text().replace("lam = 0.01", "lam = nan"))
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("gap", "test", "", "0.01")]["n_runs"] == "1" and "nan" not in rows
    assert "lam0.01\\_seed1: run skipped" in notes(sweep) or "lam0.01_seed1: run skipped" in notes(sweep)


def test_a_copied_run_is_counted_once(sweep):
    import shutil

    shutil.copytree(sweep / "lam0.01_seed1", sweep / "copy_of_lam0.01_seed1")
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("gap", "test", "", "0.01")]["n_runs"] == "2"
    assert "a copy: counted once" in notes(sweep)


def test_runs_behind_a_directory_link_are_reported_and_a_link_loop_ends(sweep, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_run(elsewhere / "runs" / "lam0.1_seed0", 0.1, 0)
    os.symlink(os.path.relpath(elsewhere / "runs", sweep), sweep / "linked")  # as results/constrained/fixed-lambda
    os.symlink("..", sweep / "lam0.0_seed0" / "loop")  # a loop back to the sweep
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("gap", "test", "", "0.1")]["n_runs"] == "1"  # the linked run
    assert rows[("gap", "test", "", "0.0")]["n_runs"] == "2" and "a copy" not in notes(sweep)  # none seen twice


def test_a_stale_record_is_left_out_and_named(sweep):
    metrics = sweep / "lam0.01_seed1" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + json.dumps({"epoch": 4}) + "\n")  # trained on after the evaluation
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert rows[("gap", "test", "", "0.01")]["n_runs"] == "1"
    assert "stale eval.json (computed at epoch 3, the run is at epoch 4); left out" in notes(sweep)


def test_names_are_escaped_in_markdown_and_html(sweep):
    evil = "x|<img src=x onerror=alert(1)>*[link](y)"
    (sweep / "lam0.0_seed1").rename(sweep / evil)
    page = make_report(sweep)
    md, html = (page.parent / "results.md").read_text(), page.read_text()
    assert "<img" not in md and "<img src=x" not in html
    assert "x\\|&lt;img src=x onerror=alert(1)>\\*\\[link\\](y)" in md
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| x")]
    assert len(table_rows) == 2  # the runs table and the provenance table; the name did not add a column to either
    assert table_rows[0].count(" | ") == 8 and table_rows[1].count(" | ") == 10


def test_the_output_set_is_replaced_atomically(sweep, monkeypatch):
    page = make_report(sweep)
    before = {p.name: p.read_bytes() for p in page.parent.iterdir()}
    (sweep / "lam0.0_seed0" / "eval.json").unlink()  # the next report would differ
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(R.ReportError, match="previous report is intact"):
        make_report(sweep)
    assert {p.name: p.read_bytes() for p in page.parent.iterdir()} == before
    assert [p.name for p in sweep.iterdir() if p.name.startswith(".report")] == []
    monkeypatch.undo()
    make_report(sweep)
    assert {p.name: p.read_bytes() for p in page.parent.iterdir()} != before


def test_a_report_directory_with_other_files_is_refused(sweep, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(R.ReportError, match="holds other files"):
        make_report(sweep, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_the_report_does_not_import_torch():
    code = (
        "import sys, smvi.report.page, smvi.store.rundir, smvi.store.records, smvi.report.aggregate; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
