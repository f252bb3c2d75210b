"""Progress and time (smvi.progress): a bar on a terminal, plain periodic lines in a log, nothing with --no-progress;
training told in epochs k/N; a sweep's ETA from its measured stage times (a stated prior before); the expected
duration when a long job starts."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

import smvi.studies.sweep as S
from conftest import tiny_train_args
from smvi.cli import main
from smvi.progress import (
    EPOCH_SECONDS,
    Progress,
    SweepETA,
    display_mode,
    duration,
    expected_epoch_seconds,
    stage_priors,
)
from smvi.settings.run import ConfigError, RunConfig
from smvi.settings.stages import EvalConfig
from test_sweep import tiny_sweep


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TTYStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_terminal_the_switch_and_the_environment(monkeypatch):  # conftest unsets SMVI_PROGRESS
    assert display_mode(True, io.StringIO()) == "lines"  # a log file or a pipe
    assert display_mode(True, TTYStream()) == "bar"
    assert display_mode(False, TTYStream()) == "off"  # --no-progress wins over everything
    assert display_mode(True, io.StringIO(), tty=True) == "bar"  # injected
    monkeypatch.setenv("SMVI_PROGRESS", "lines")
    assert display_mode(True, TTYStream()) == "lines" and display_mode(False, io.StringIO()) == "off"
    monkeypatch.setenv("SMVI_PROGRESS", "barz")
    with pytest.raises(ConfigError, match="SMVI_PROGRESS"):
        display_mode(True, io.StringIO())


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0.4, 42, 59.6, 61, 23 * 60 + 10, 2 * 3600 + 5 * 60, None, float("inf"))] == [
        "0 s",
        "42 s",
        "1 min",
        "1 min",
        "23 min",
        "2 h 05 min",
        "?",
        "?",
    ]


def test_plain_lines_tell_training_in_epochs_after_the_first_epoch_then_every_interval_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    steps, epochs = 10, 300
    with Progress(
        "train lam0.01_seed0",
        epochs * steps,
        unit="step",
        epoch_steps=steps,
        tty=False,
        stream=out,
        clock=clock,
        every=30.0,
    ) as bar:
        for _ in range(12 * steps):  # 12 epochs at 0.49 s per step: 4.9 s per epoch
            clock.t += 0.49
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "█" not in out.getvalue()  # no bar redraws in a log
    assert lines[0] == "train lam0.01_seed0: epoch 1/300 done, 4.9 s/epoch, ETA 24 min"  # 299 × 4.9 s
    assert lines[1].startswith("train lam0.01_seed0: epoch 8/300, 4.9 s/epoch, ETA 2")  # 30 s later, in epoch 8
    assert len(lines) == 3 and lines[-1].startswith("train lam0.01_seed0: epoch 12/300 done, 4.9 s/epoch, ETA ")
    # stopped early by Ctrl-C (or an error): the last line says where and after how long
    out = io.StringIO()
    with (
        pytest.raises(KeyboardInterrupt),
        Progress("evaluate r", 100, unit="image", tty=False, stream=out, clock=clock) as bar,
    ):
        clock.t += 5
        bar.update(10)
        raise KeyboardInterrupt
    assert out.getvalue() == "evaluate r: 10/100 images, 2 images/s, stopped after 5 s\n"


def test_a_finished_stage_ends_with_one_done_line_and_a_resumed_run_counts_only_its_own_pace():
    clock, out = FakeClock(), io.StringIO()
    with Progress("train r", 30, unit="step", initial=10, epoch_steps=10, tty=False, stream=out, clock=clock) as bar:
        for _ in range(20):
            clock.t += 0.5
            bar.update(1)
    assert out.getvalue().splitlines() == [
        "train r: epoch 2/3 done, 5 s/epoch, ETA 5 s",  # the first epoch of this process (resumed after epoch 1)
        "train r: epoch 3/3 done, 2 epochs in 10 s (5 s/epoch)",
    ]


def test_off_prints_nothing_but_warnings_and_a_bar_shows_the_stage_and_epoch(monkeypatch):
    out = io.StringIO()
    with Progress("train r", 20, epoch_steps=10, enabled=False, stream=out) as bar:
        bar.update(20)
        bar.write("a note")
        bar.write("warning: the target is not reached", always=True)
    assert out.getvalue() == "warning: the target is not reached\n"
    tty = TTYStream()
    with Progress("train r", 20, unit="step", epoch_steps=10, stream=tty) as bar:
        bar.update(12)
        bar.postfix({"elbo": "-93.1"})
    assert "train r epoch 2/2" in tty.getvalue() and "12/20" in tty.getvalue() and "elbo=-93.1" in tty.getvalue()
    tty = TTYStream()
    with Progress("evaluate r", 20, unit="pt", stream=tty) as bar:
        bar.relabel("evaluate r: train split")
        bar.update(20)
    assert "evaluate r: train split: 100%" in tty.getvalue()


def test_the_prior_is_for_the_papers_model_and_scales_with_the_data():
    paper = RunConfig()
    assert expected_epoch_seconds(paper) == EPOCH_SECONDS["fp32"]
    bf16 = paper.model_copy(update={"train": paper.train.model_copy(update={"precision": "bf16"})})
    assert expected_epoch_seconds(bf16, n_train=30_000) == EPOCH_SECONDS["bf16"] / 2
    small = paper.model_copy(update={"model": paper.model.model_copy(update={"z_dim": 4})})
    assert expected_epoch_seconds(small) is None and set(stage_priors(small, EvalConfig())) == {"ssl", "pictures"}
    iwae = RunConfig.model_validate({"train": {"objective": "iwae", "iwae_k": 50}})
    beta = RunConfig.model_validate({"train": {"objective": "beta", "beta": 4.0}})
    assert expected_epoch_seconds(iwae) is None and expected_epoch_seconds(beta) == EPOCH_SECONDS["fp32"]
    priors = stage_priors(paper, EvalConfig(n_test=100, n_train=100))
    assert priors["evaluate"] < stage_priors(paper, EvalConfig(n_test=200, n_train=200))["evaluate"]


def test_the_sweep_eta_starts_from_the_prior_and_moves_to_this_sweeps_measurements():
    work = {
        "a": {"epochs": 3, "evaluate": 1, "ssl": 1},
        "b": {"epochs": 3, "evaluate": 1, "ssl": 1},
        "c": {"epochs": 3, "evaluate": 1, "ssl": 0},
    }
    eta = SweepETA(work, {"epochs": 10.0, "evaluate": 60.0, "ssl": 30.0})
    assert eta.left() == (9 * 10 + 3 * 60 + 2 * 30, "prior") and eta.eta() == "ETA 6 min (rough prior)"
    # a: 3 epochs in 45 s, evaluation in 30 s, ssl in 12 s (per run, measured)
    eta.finished("a", {"train": 45.0, "evaluate": 30.0, "ssl": 12.0}, epochs=3)
    assert eta.left() == (6 * 15 + 2 * 30 + 12, "measured") and eta.eta() == "ETA 3 min (measured in this sweep)"
    eta.finished("b", {"train": 15.0}, epochs=3)  # trained faster; its stages not measured (it failed)
    assert eta.left() == (3 * 10 + 30, "measured")  # the mean over the 6 epochs measured: 10 s
    eta.finished("c", {})
    assert eta.eta() == "nothing left"
    # two workers side by side: the remaining work is shared, and each job of the prior is twice as slow
    assert SweepETA({"a": {"ssl": 1}, "b": {"ssl": 1}}, {"ssl": 30.0}, workers=2).left() == (60.0, "prior")
    unknown = SweepETA({"a": {"epochs": 3, "ssl": 1}}, {"ssl": 30.0})  # another model: no prior per epoch
    assert unknown.left() == (None, "prior") and unknown.eta().startswith("ETA ?")
    unknown.finished("z", {"train": 8.0}, epochs=2)
    assert unknown.left() == (3 * 4.0 + 30.0, "partly measured")


def test_a_sweep_says_what_it_will_do_and_prints_an_eta_per_finished_run(idx_dir, tmp_path, capsys):
    results = S.run_sweep(tiny_sweep(idx_dir), tmp_path / "sw", progress=True)
    assert all(r["seconds"].keys() == {"train", "evaluate", "ssl"} and r["epochs"] == 2 for r in results), results
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert not captured.out  # progress goes to stderr; results are returned
    assert err[0].startswith(
        f"sweep {tmp_path / 'sw'}: 2 of 2 runs to do (4 epochs to train, 2 evaluations, "
        "2 ssl stages); ETA ? (no time measured yet for: epochs, evaluate)"
    )  # tiny: no prior
    assert "Ctrl-C stops it; rerunning the same command resumes" in err[0]
    done = [ln for ln in err if ln.startswith("[")]
    assert done[0].startswith("[1/2 runs] lam0_seed0: ok (train, evaluate, ssl) in ")
    assert done[0].endswith("(measured in this sweep)") and done[1].endswith("; nothing left")
    assert any(ln.startswith("train lam0_seed0: epoch 1/2 done, ") for ln in err)  # the runs' own plain lines
    assert any(ln.startswith("evaluate lam0_seed0: done, 24 images in ") for ln in err)  # the stage, not its last part
    status = json.loads((tmp_path / "sw" / "sweep_status.json").read_text())
    assert all(set(r["seconds"]) == {"train", "evaluate", "ssl"} for r in status["runs"])  # wall time per stage
    S.run_sweep(tiny_sweep(idx_dir), tmp_path / "sw", progress=True)
    assert capsys.readouterr().err.splitlines()[0] == f"sweep {tmp_path / 'sw'}: 2 runs, nothing left to do"


def test_smvi_train_states_its_length_and_logs_plain_lines_not_bars(idx_dir, tmp_path):
    args = [a for a in tiny_train_args(idx_dir) if a != "--no-progress"]
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "vae"), "--epochs", "2", *args])
    assert r.exit_code == 0, r.output
    err = r.stderr.splitlines()
    assert err[0].startswith("train vae: 2 epochs to go, duration measured from the first epoch on. Ctrl-C stops it")
    assert "--resume" in err[0]
    assert err[1].startswith("train vae: epoch 1/2 done, ") and " s/epoch, ETA " in err[1]
    assert err[-1].startswith("train vae: epoch 2/2 done, 2 epochs in ")
    assert "\r" not in r.stderr and "it/s" not in r.stderr
    assert r.stdout.startswith("epoch 2: train ELBO")  # the result, on stdout
    r = CliRunner().invoke(
        main, ["train", "--out", str(tmp_path / "vae"), "--epochs", "3", "--resume", *args, "--no-progress"]
    )
    assert r.exit_code == 0 and r.stderr == "", r.output  # --no-progress: nothing but the result


def test_smvi_ssl_prints_its_table_with_standard_errors_and_the_raw_pixel_row(trained):
    from smvi.store.rundir import RunDir
    from smvi.store.stats import mean_se

    sets = [
        "--set",
        "sizes=[20,50]",
        "--set",
        "seeds=[0,1,2]",
        "--set",
        "C_grid=[1.0]",
        "--set",
        "gamma_grid=[1.0]",
        "--set",
        "cv_folds=2",
        "--set",
        "n_jobs=1",
    ]
    r = CliRunner().invoke(main, ["ssl", str(trained), "--test-size", "64", "--no-progress", "--device", "cpu", *sets])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""  # the table is the result, on stdout even with --no-progress
    lines = r.stdout.splitlines()
    assert lines[0] == "test accuracy (%), mean ± SE over 3 label subsets, 64 test images:"
    assert lines[1].split() == ["s", "=", "20", "s", "=", "50"]
    rec = RunDir(trained).read_record("ssl")
    for row, scores in ((lines[2], rec.features), (lines[3], rec.raw_pixels)):
        for s in ("20", "50"):
            m = mean_se(scores.sizes[s].accuracy)  # the report's SE convention
            assert f"{100 * m.mean:.2f} ± {100 * m.se:.2f}" in row
    assert lines[2].startswith("encoder means μ(x), d=4") and lines[3].startswith("raw pixels, d=784")
    assert lines[-1].startswith("-> ") and lines[-1].split()[1].endswith("ssl.json")
    r = CliRunner().invoke(
        main,
        [
            "ssl",
            str(trained),
            "--test-size",
            "64",
            "--overwrite",
            *sets,
            "--set",
            "raw_pixels=false",
            "--set",
            "seeds=[0]",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "raw pixels: not computed" in r.stdout and "mean ± SE over 1 label subsets" in r.stdout
    assert "ssl run: SVMs on encoder means: done, 2 labeled sets in " in r.stderr  # progress, on stderr


def test_the_docstring_examples_hold():
    import doctest

    import smvi.progress

    assert doctest.testmod(smvi.progress).failed == 0


def test_each_preset_has_one_time_quoted_alike_everywhere():
    """presets.PRESET_TIMES owns the numbers; the CLI's torch-free copy, `smvi sweep --help` and the docs' sweeps page
    quote them. The ETA a paper sweep shows before it has measured anything (smvi.progress's per-stage figures) lies
    between the measured pace of results/paper and that of its uncontended runs."""
    from pathlib import Path

    from smvi.cli import SWEEP_PRESET_TIMES
    from smvi.studies.presets import PRESET_TIMES, PRESETS
    from smvi.studies.sweep import plan

    flat = lambda text: " ".join(text.split())  # noqa: E731 -- click and Markdown wrap lines
    assert SWEEP_PRESET_TIMES == PRESET_TIMES and set(PRESET_TIMES) == set(PRESETS)
    readme = flat((Path(__file__).resolve().parents[1] / "docs" / "guide" / "sweeps.md").read_text())
    helptext = flat(CliRunner().invoke(main, ["sweep", "--help"]).output)
    for name, time in PRESET_TIMES.items():
        assert flat(time) in readme and flat(time) in helptext, name
    assert "10 min" not in helptext  # the old, unmeasured figure
    paper = PRESETS["paper"]
    work = {s.name: {"epochs": s.config.train.epochs, "evaluate": 1, "ssl": 1} for s in plan(paper)}
    hours = SweepETA(work, stage_priors(paper.run, paper.eval)).left()[0] / 3600
    assert "about 17 h" in PRESET_TIMES["paper"] and "about 9 h" in PRESET_TIMES["paper"] and 9 <= hours <= 17


def test_ctrl_c_says_how_to_continue(monkeypatch, tmp_path):
    import smvi.studies.sweep

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(smvi.studies.sweep, "run_sweep", interrupted)
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / "sw")])
    assert r.exit_code == 130 and "rerun the same command to continue" in r.stderr


def test_ctrl_c_in_evaluate_says_its_scored_batches_are_kept(monkeypatch, trained):
    import smvi.stages.evaluate

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(smvi.stages.evaluate, "evaluate_run", interrupted)
    r = CliRunner().invoke(main, ["evaluate", str(trained), "--preset", "quick"])
    assert r.exit_code == 130
    assert r.stderr.strip() == (
        "interrupted: scored batches are saved (eval.partial.json); rerun the same command to continue from them"
    )
