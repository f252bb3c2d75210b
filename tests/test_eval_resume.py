"""A killed `smvi evaluate` resumes from its saved progress (eval.partial.json): the record it then writes holds
exactly the values of an uninterrupted evaluation; the progress is used only for the same run, epoch and settings,
is used by a sweep (which evaluates with overwrite), is removed by retraining, and is gone once eval.json is
written."""

from __future__ import annotations

import json
import shutil

import pytest

import smvi.stages.evaluate as E
from conftest import invoke
from smvi.data.loading import load_data
from smvi.settings.stages import AISConfig, EvalConfig
from smvi.store.rundir import RunDir

CFG = EvalConfig(
    n_test=24,
    n_train=16,
    elbo_samples=20,
    dsm_samples=2,
    iwae_k=10,
    iwae_full_test_k=10,
    ais=AISConfig(steps=3, chains=2, leapfrog_steps=2),
    batch_size=8,
)


def killed_at(monkeypatch, name: str, calls: int):
    """Make ``E.<name>`` raise KeyboardInterrupt on its ``calls``-th call (as Ctrl-C or a session's end would)."""
    real, seen = getattr(E, name), []

    def dying(*a, **k):
        seen.append(1)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(E, name, dying)


def kill_evaluation(monkeypatch, run, data, name: str = "ais", calls: int = 2, **kw) -> None:
    """Start evaluating ``run`` and kill it at the ``calls``-th call of ``E.<name>``."""
    with monkeypatch.context() as m:
        killed_at(m, name, calls)
        with pytest.raises(KeyboardInterrupt):
            E.evaluate_run(run, CFG, data=data, progress=False, **kw)


def count_ais(monkeypatch) -> list:
    """From now on, one item per AIS call (a batch scored)."""
    calls, real = [], E.ais
    monkeypatch.setattr(E, "ais", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def values(record) -> dict:
    tree = record.model_dump(mode="json")
    for split in tree["splits"].values():
        split.pop("seconds")
    tree["full_test"].pop("seconds")
    return {"splits": tree["splits"], "full_test": tree["full_test"]}


@pytest.fixture
def pair(trained, tmp_path, idx_dir):
    """The trained run and an identical copy, with the data."""
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    return trained, copy, load_data("idx", idx_dir)


@pytest.mark.parametrize(
    "name, calls",
    [("ais", 3), ("iwae_bound", 3 + 2 + 4)],
    ids=["in the test split's AIS", "in the whole-test-set IWAE"],
)
def test_a_killed_evaluation_resumes_to_the_same_record(pair, monkeypatch, capsys, name, calls):
    # iwae_bound's calls: 3 test batches, 2 train batches, then the whole test set (its 4th batch)
    run, copy, data = pair
    whole = E.evaluate_run(copy, CFG, data=data, progress=False)
    kill_evaluation(monkeypatch, run, data, name, calls)
    rd = RunDir(run)
    assert not rd.record_path("eval").exists() and rd.partial_path("eval").exists()
    saved, why = rd.read_partial("eval", CFG)
    assert why is None and len(saved.splits["test"].ais) == (16 if name == "ais" else 24)
    assert len(saved.full_test) == (0 if name == "ais" else 24)  # 3 batches of 8 of the whole test set
    calls_after = count_ais(monkeypatch)
    resumed = E.evaluate_run(run, CFG, data=data, progress=True)
    assert values(resumed) == values(whole)  # exactly: each point's noise is its own, the batches are the same
    assert len(calls_after) == (3 - 2 + 2 if name == "ais" else 0)  # only the batches not saved are scored
    assert "resuming," in capsys.readouterr().err
    assert not rd.partial_path("eval").exists() and rd.read_record("eval") == resumed


def test_progress_for_other_settings_is_not_used_and_overwrite_resumes_too(pair, monkeypatch, capsys):
    run, _, data = pair
    kill_evaluation(monkeypatch, run, data)
    rd = RunDir(run)
    other = CFG.model_copy(update={"seed": 1})
    assert rd.read_partial("eval", other) == (None, "computed with other settings")
    calls = count_ais(monkeypatch)
    E.evaluate_run(run, other, data=data, progress=True)
    assert len(calls) == 5 and "not used (computed with other settings); starting over" in capsys.readouterr().err
    assert not rd.partial_path("eval").exists()
    kill_evaluation(monkeypatch, run, data, overwrite=True)  # killed while replacing the record, as in a sweep
    calls = count_ais(monkeypatch)
    E.evaluate_run(run, CFG, data=data, overwrite=True, progress=False)
    assert len(calls) == 4 and not rd.partial_path("eval").exists()  # the first batch was saved


def test_damaged_progress_is_ignored_in_one_line(pair, capsys):
    run, copy, data = pair
    rd = RunDir(run)
    rd.partial_path("eval").write_text('{"header": {"schema": "smvi-eval-partial-1"}, "splits": ')
    got = E.evaluate_run(run, CFG, data=data, progress=True)
    err = capsys.readouterr().err
    assert "eval.partial.json not used (" in err and "not a JSON record" in err and "starting over" in err
    assert values(got) == values(E.evaluate_run(copy, CFG, data=data, progress=False))


def test_retraining_removes_the_progress(pair, monkeypatch, idx_dir):
    from conftest import tiny_train_args

    run, _, data = pair
    kill_evaluation(monkeypatch, run, data)
    assert RunDir(run).partial_path("eval").exists()
    r = invoke("train", "--out", run, "--epochs", 1, "--overwrite", *tiny_train_args(idx_dir))
    assert r.exit_code == 0, r.output
    assert not RunDir(run).partial_path("eval").exists()


def test_progress_from_an_earlier_epoch_is_not_used(pair, monkeypatch, idx_dir):
    from conftest import tiny_train_args

    run, _, data = pair
    kill_evaluation(monkeypatch, run, data)
    r = invoke("train", "--out", run, "--epochs", 4, "--resume", *tiny_train_args(idx_dir))
    assert r.exit_code == 0, r.output
    saved, why = RunDir(run).read_partial("eval", CFG)
    assert saved is None and why == "computed at epoch 3, the run is at epoch 4"
    assert json.loads(RunDir(run).partial_path("eval").read_text())["header"]["epoch"] == 3
