"""`smvi status`: each run's epochs and stages as the sweep would decide them on resuming, an evaluation under way
with the points it has scored, the work left with its time, and one-line errors; it writes nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import smvi.stages.evaluate as E
import smvi.studies.sweep as S
from smvi.cli import main
from smvi.data.loading import load_data
from smvi.store.rundir import RunDir, sweep_paths
from smvi.studies.status import sweep_progress
from test_frontier_report import write_gaps
from test_sweep import snapshot, tiny_sweep


@pytest.fixture
def sweep_dir(idx_dir, tmp_path):
    """A finished two-run sweep (train, evaluate, ssl; λ = 0, 0.5)."""
    S.run_sweep(tiny_sweep(idx_dir), tmp_path / "sw", progress=False)
    return tmp_path / "sw"


def status(*args) -> str:
    r = CliRunner().invoke(main, ["status", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_a_finished_sweep_is_complete(sweep_dir):
    out = status(sweep_dir)
    lines = out.splitlines()
    assert lines[0] == f"sweep {sweep_dir}" and lines[1].split() == ["run", "epochs", "evaluate", "ssl", "pictures"]
    assert lines[2].split() == ["lam0_seed0", "2/2", "done", "done", "—"]  # pictures: not a stage of this sweep
    assert lines[-1] == "2 of 2 runs complete"
    assert json.loads(sweep_paths(sweep_dir)[1].read_text())["workers"] == 1  # the sweep ran in-process


def test_a_record_made_outside_the_sweep_shows_its_state(sweep_dir):
    """A stage the sweep does not run (here: evaluate, after its stages changed) shows a run's record of it as done
    or stale, not as "—": an evaluation made by hand is not hidden. A run without one shows "—"."""
    toml = sweep_paths(sweep_dir)[0]
    toml.write_text(toml.read_text().replace('"evaluate",', ""))
    assert "evaluate" not in S.read_sweep(sweep_dir).stages
    runs = sweep_paths(sweep_dir)[2]
    RunDir(runs / "lam0.5_seed0").record_path("eval").unlink()
    lines = status(sweep_dir).splitlines()
    assert lines[1].split() == ["run", "epochs", "evaluate", "ssl", "pictures"]
    assert lines[2].split() == ["lam0_seed0", "2/2", "done", "done", "—"]
    assert lines[3].split() == ["lam0.5_seed0", "2/2", "—", "done", "—"]


def test_a_record_edited_after_it_was_written_shows_as_edited_with_its_fix(sweep_dir):
    """A record whose content no longer matches its digest is not shown as done: the cell says edited and a line
    names the file and the fix, as the report, which leaves it out. The work left is the sweep's (unchanged)."""
    path = RunDir(sweep_paths(sweep_dir)[2] / "lam0.5_seed0").record_path("ssl")
    record = json.loads(path.read_text())
    record["seconds"] += 1.0  # a hand edit: still a valid record
    path.write_text(json.dumps(record))
    before = snapshot(sweep_dir)
    lines = status(sweep_dir).splitlines()
    assert lines[2].split() == ["lam0_seed0", "2/2", "done", "done", "—"]
    assert lines[3].split() == ["lam0.5_seed0", "2/2", "done", "edited", "—"]
    assert lines[4] == (
        "lam0.5_seed0: ssl.json does not match its digest (edited or damaged after it was written; the digest catches "
        "accidents, it is no signature): recompute it with --overwrite"
    )
    assert lines[-1] == "2 of 2 runs complete" and snapshot(sweep_dir) == before


def test_the_sweep_records_its_workers_before_any_run_finishes(idx_dir, tmp_path, monkeypatch):
    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "run_job", stopped)
    with pytest.raises(KeyboardInterrupt):
        S.run_sweep(tiny_sweep(idx_dir), tmp_path / "sw", progress=False)
    status_file = json.loads(sweep_paths(tmp_path / "sw")[1].read_text())
    assert status_file == {"runs": [], "pending": ["lam0_seed0", "lam0.5_seed0"], "workers": 1}


def test_the_time_left_assumes_the_workers_the_sweep_last_ran(sweep_dir):
    toml = sweep_paths(sweep_dir)[0]
    toml.write_text(toml.read_text().replace("epochs = 2", "epochs = 3"))
    path = sweep_paths(sweep_dir)[1]
    path.write_text(json.dumps({**json.loads(path.read_text()), "workers": 2}))
    assert status(sweep_dir).rstrip().endswith("with 2 workers")
    assert status(sweep_dir, "--workers", 1).rstrip().endswith("with 1 worker")


def test_more_epochs_and_an_evaluation_under_way_are_shown_as_the_sweep_would_resume(sweep_dir, idx_dir, monkeypatch):
    toml = sweep_paths(sweep_dir)[0]
    toml.write_text(toml.read_text().replace("epochs = 2", "epochs = 3"))  # as `sweep --overwrite` with 3 epochs
    run = sweep_dir / "runs" / "lam0.5_seed0"
    before = snapshot(sweep_dir)
    sweep, rows = sweep_progress(sweep_dir)
    assert [(r.epochs, r.planned, r.work["epochs"], r.stages["evaluate"]) for r in rows] == [(2, 3, 1, "to do")] * 2
    out = status(sweep_dir, "--workers", 2)
    assert "2/3 (last " in out and "0 of 2 runs complete; left: 2 epochs, 2 evaluate, 2 ssl; ETA " in out
    assert "measured in this sweep) with 2 workers" in out  # from the runs' own epoch and record times
    assert snapshot(sweep_dir) == before  # it wrote nothing
    # back to 2 epochs, with lam0.5's evaluation killed after its first batch: the points it has scored
    toml.write_text(toml.read_text().replace("epochs = 3", "epochs = 2"))
    RunDir(run).record_path("eval").unlink()
    real, calls = E.ais, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(E, "ais", dying)
    with pytest.raises(KeyboardInterrupt):
        E.evaluate_run(run, sweep.eval, data=load_data("idx", idx_dir), progress=False)
    line = next(line for line in status(sweep_dir).splitlines() if line.startswith("lam0.5_seed0"))
    assert "scoring: 8/24 points (" in line and " ago)" in line  # one batch of 8 of 16 + 8
    assert status(sweep_dir).splitlines()[-1].startswith("1 of 2 runs complete; left: 0 epochs, 1 evaluate; ETA ")


def test_a_run_without_a_finished_epoch_shows_zero(sweep_dir):
    (sweep_dir / "runs" / "lam0.5_seed0" / "checkpoint.safetensors").unlink()  # as before its first epoch ends
    line = next(line for line in status(sweep_dir).splitlines() if line.startswith("lam0.5_seed0"))
    assert line.split()[:3] == ["lam0.5_seed0", "0/2", "to"]


def test_several_sweeps_are_shown_one_after_the_other(sweep_dir, tmp_path):
    import shutil

    shutil.copytree(sweep_dir, tmp_path / "other")
    out = status(sweep_dir, tmp_path / "other")
    assert out.count("2 of 2 runs complete") == 2 and f"sweep {tmp_path / 'other'}" in out


def test_a_folder_of_sweeps_shows_each(sweep_dir, tmp_path):
    import shutil

    study = tmp_path / "study"
    study.mkdir()
    shutil.copytree(sweep_dir, study / "beta2")
    shutil.copytree(sweep_dir, study / "smvi")
    (study / "notes").mkdir()  # not a sweep: passed over
    out = status(study)
    assert [line for line in out.splitlines() if line.startswith("sweep ")] == [
        f"sweep {study / 'beta2'}",
        f"sweep {study / 'smvi'}",
    ]


def test_not_a_sweep_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert r.exit_code == 1 and r.stderr.strip().startswith("error: ") and "no sweep.toml" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_gaps_column_appears_once_a_run_has_a_gap_split(sweep_dir):
    """`smvi gaps` is not a sweep stage: no column until some run has a gaps record; then done, stale (computed at
    another epoch) or — per run, and the work left is unchanged."""
    before = status(sweep_dir)
    assert "gaps" not in before.splitlines()[1]
    runs = sweep_paths(sweep_dir)[2]
    write_gaps(RunDir(runs / "lam0_seed0"), 2, -90.0, 2.0, 3.0)
    lines = status(sweep_dir).splitlines()
    assert lines[1].split() == ["run", "epochs", "evaluate", "ssl", "pictures", "gaps"]
    assert lines[2].split()[-1] == "done" and lines[3].split()[-1] == "—"
    assert lines[-1] == before.splitlines()[-1]
    write_gaps(RunDir(runs / "lam0.5_seed0"), 1, -90.0, 2.0, 3.0)  # the run has 2 epochs: stale
    assert status(sweep_dir).splitlines()[3].split()[-1] == "stale"
