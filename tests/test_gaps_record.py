"""The gaps record through the run-directory layer: it round-trips, is current only for its run, epoch and settings,
is removed by ``train --overwrite``, and every refusal (a foreign checkpoint, an existing record, an unwritable
directory) comes before any AIS or fitting."""

from __future__ import annotations

import errno
import json
import math
import shutil

import pytest

import smvi.stages.gaps as G
from conftest import invoke, tiny_config
from smvi.settings.stages import AISConfig, GapConfig
from smvi.stages.train import train
from smvi.store.records import GapsRecord, RecordError
from smvi.store.rundir import RunDir, RunError
from test_rundir import made, one_error_line, run  # noqa: F401  (fixtures)

TINY_GAPS = GapConfig(
    n_points=6, ais=AISConfig(steps=3, chains=2, leapfrog_steps=1), steps=20, window=10, eval_samples=10, batch_size=6
)


def never(*a, **k):
    raise AssertionError("AIS ran before the inputs were checked")


def test_a_gaps_record_round_trips_and_is_current(made, run):
    _, _, data = made
    rec = G.gaps_run(run, TINY_GAPS, data=data, progress=False)
    rd = RunDir(run)
    assert isinstance(rec, GapsRecord) and rd.read_record("gaps") == rec
    assert rd.current_record("gaps", TINY_GAPS) == (rec, None)
    assert rec.header.fingerprint == rd.fingerprint() and rec.header.epoch == 1
    assert GapConfig.model_validate(rec.header.settings) == TINY_GAPS
    assert rec.objective == "smvi" and rec.knob == {"lam": 0.0} and rec.posterior == "diagonal" and rec.n == 6
    total = [a + b for a, b in zip(rec.per_image.approximation, rec.per_image.amortization, strict=True)]
    gap = [p - e for p, e in zip(rec.per_image.log_px, rec.per_image.elbo_amortized, strict=True)]
    assert all(math.isclose(t, g, abs_tol=1e-9) for t, g in zip(total, gap, strict=True))
    assert math.isclose(rec.gap.mean, sum(gap) / 6) and 0 < rec.ais_acceptance <= 1


def test_a_gaps_record_is_stale_after_retraining_or_with_other_settings(made, run):
    _, data_dir, data = made
    rd = RunDir(run)
    G.gaps_run(run, TINY_GAPS, data=data, progress=False)
    assert rd.current_record("gaps", TINY_GAPS.model_copy(update={"steps": 30}))[1] == "computed with other settings"
    train(tiny_config(data_dir, epochs=2), run, resume=True, progress=False, data=data)
    assert rd.current_record("gaps", TINY_GAPS)[1] == "computed at epoch 1, the run is at epoch 2"
    train(tiny_config(data_dir, lam=0.25), run, overwrite=True, progress=False, data=data)
    assert rd.read_record("gaps") is None  # train --overwrite clears it with the other records


def test_a_foreign_checkpoint_is_refused(made, run):
    root, _, _ = made
    shutil.copy(root / "b" / "checkpoint.safetensors", run / "checkpoint.safetensors")
    line = one_error_line(invoke("gaps", run, "--no-progress"))
    assert "belongs to another run (train.lam is 0.5 in the checkpoint, 0.0 in config.toml)" in line, line
    assert not RunDir(run).record_path("gaps").exists()


def test_an_unwritable_run_or_an_existing_record_fails_before_any_work(made, run, monkeypatch):
    _, _, data = made
    G.gaps_run(run, TINY_GAPS, data=data, progress=False)
    before = RunDir(run).record_path("gaps").read_bytes()
    monkeypatch.setattr(G, "ais", never)
    with pytest.raises(RunError, match="gaps.json exists: pass --overwrite"):
        G.gaps_run(run, TINY_GAPS, data=data, progress=False)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", no_space)
    with pytest.raises(RunError, match="cannot write in .*No space left") as err:
        G.gaps_run(run, TINY_GAPS, data=data, overwrite=True, progress=False)
    assert "\n" not in str(err.value) and RunDir(run).record_path("gaps").read_bytes() == before


def test_too_many_points_is_refused_before_any_work(made, run, monkeypatch):
    _, _, data = made
    monkeypatch.setattr(G, "ais", never)
    with pytest.raises(RunError, match="n_points = 100000 but the test split has"):
        G.gaps_run(run, TINY_GAPS.model_copy(update={"n_points": 100000}), data=data, progress=False)


def test_non_finite_values_are_null_with_a_note_and_old_files_are_refused(made, run):
    _, _, data = made
    rd = RunDir(run)
    rec = G.gaps_run(run, TINY_GAPS, data=data, progress=False)
    bad = rec.model_copy(
        update={
            "per_image": rec.per_image.model_copy(update={"log_px": [math.nan] + rec.per_image.log_px[1:]}),
            "ais_acceptance": math.inf,
        }
    )
    written = rd.write_record("gaps", bad)
    saved = json.loads(rd.record_path("gaps").read_text())
    assert saved["per_image"]["log_px"][0] is None and saved["ais_acceptance"] is None
    assert any("per_image.log_px: 1 non-finite" in n for n in written.notes) and rd.read_record("gaps") == written
    rd.record_path("gaps").write_text(json.dumps({"run": "a", "n": 6, "settings": {}}))  # the old dict shape
    with pytest.raises(RecordError, match="recompute it with smvi gaps --overwrite"):
        rd.read_record("gaps")


def test_a_learned_lambda_is_recorded_as_its_target_not_as_lam_0(made, tmp_path):
    _, data_dir, data = made
    train(tiny_config(data_dir, **{"constraint.target": 5.0}), tmp_path / "c", progress=False, data=data)
    rec = G.gaps_run(tmp_path / "c", TINY_GAPS, data=data, progress=False)
    assert rec.objective == "smvi" and rec.knob == {"target": 5.0}
