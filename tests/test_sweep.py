"""Sweeps: every stage runs once per (λ, seed); reruns redo nothing; failures are recorded and the rest go on; an
interrupted sweep resumes; Ray gives the same results as in-process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest
import tomli_w
from click.testing import CliRunner

import smvi.studies.sweep as S
from smvi.cli import main
from smvi.settings.run import ConfigError, build_config, config_to_toml
from smvi.store.rundir import RunDir, fingerprint

TINY_EVAL = {
    "n_test": 16,
    "n_train": 8,
    "elbo_samples": 10,
    "dsm_samples": 4,
    "iwae_k": 10,
    "ais": {"steps": 8, "chains": 2, "leapfrog_steps": 2},
    "batch_size": 8,
}
TINY_SSL = {"sizes": [20], "seeds": [0], "test_size": 64, "cv_folds": 2, "C_grid": [1.0], "gamma_grid": [1.0]}


def tiny_sweep(idx_dir, **top) -> S.SweepConfig:
    tree = {
        "lams": [0.0, 0.5],
        "seeds": [0],
        "run": {
            "model": {"z_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16]},
            "data": {"dataset": "idx", "data_dir": str(idx_dir), "monitor_size": 32},
            "train": {"epochs": 2, "batch_size": 64},
        },
        "eval": TINY_EVAL,
        "ssl": TINY_SSL,
        **top,
    }
    return build_config(S.SweepConfig, tree)


def with_epochs(cfg: S.SweepConfig, epochs: int) -> S.SweepConfig:
    """``cfg`` with every run trained for ``epochs``."""
    return cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"train": cfg.run.train.model_copy(update={"epochs": epochs})})}
    )


def sweep_process(cfg: S.SweepConfig, tmp_path, *options: str, **popen) -> subprocess.Popen:
    """`python -m smvi sweep TMP_PATH/sw --config TMP_PATH/sweep.toml OPTIONS --no-progress --no-report` on ``cfg``
    (written to that sweep.toml), started in its own session with its output piped (``popen``: more of Popen's
    keywords)."""
    (tmp_path / "sweep.toml").write_text(config_to_toml(cfg))
    cmd = [sys.executable, "-m", "smvi", "sweep", str(tmp_path / "sw"), "--config", str(tmp_path / "sweep.toml")]
    return subprocess.Popen(
        [*cmd, *options, "--no-progress", "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **popen,
    )


def until_a_checkpoint(proc: subprocess.Popen, sweep_dir) -> None:
    """Wait until a run of the sweep ``proc`` runs in ``sweep_dir`` has a checkpoint; a sweep that exits first, or has
    none after 4 minutes, is killed with its process group and fails the test with its output."""
    deadline = time.monotonic() + 240
    while not list(sweep_dir.glob("runs/*/checkpoint.safetensors")):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(proc.communicate())
        time.sleep(0.2)


def snapshot(sweep_dir):
    return {
        str(p.relative_to(sweep_dir)): p.read_bytes()
        for p in sorted((sweep_dir / "runs").rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_sweep_runs_every_stage_once_and_reruns_do_nothing(idx_dir, tmp_path):
    cfg = tiny_sweep(idx_dir)
    results = S.run_sweep(cfg, tmp_path / "sw", progress=False)
    assert [r["name"] for r in results] == ["lam0_seed0", "lam0.5_seed0"]
    assert all(r["status"] == "ok" and r["done"] == ["train", "evaluate", "ssl"] for r in results), results
    for r in results:
        run = tmp_path / "sw" / "runs" / r["name"]
        assert json.loads((run / "eval.json").read_text())["splits"]["test"]["n"] == 16
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    ssl = [json.loads((tmp_path / "sw" / "runs" / r["name"] / "ssl.json").read_text()) for r in results]
    assert ssl[0]["raw_pixels"] is not None and ssl[1]["raw_pixels"] is None  # the baseline is computed once
    before = snapshot(tmp_path / "sw")
    again = S.run_sweep(cfg, tmp_path / "sw", progress=False)
    assert all(r["status"] == "ok" and r["done"] == [] for r in again), again
    assert snapshot(tmp_path / "sw") == before
    status = json.loads((tmp_path / "sw" / "sweep_status.json").read_text())
    assert [r["name"] for r in status["runs"]] == ["lam0_seed0", "lam0.5_seed0"]


def with_run(stage: str, run):
    """The sweep's stage list with ``stage`` run by ``run``."""
    return {**S.STAGES, stage: dataclasses.replace(S.STAGES[stage], run=run)}


def test_a_failing_run_is_recorded_and_the_others_go_on(idx_dir, tmp_path, monkeypatch):
    real, stages = S.STAGES["evaluate"].run, S.AFTER_TRAINING

    def flaky(run_dir, *a, **k):
        if "lam0_" in str(run_dir):
            raise RuntimeError("injected failure")
        return real(run_dir, *a, **k)

    monkeypatch.setattr(S, "AFTER_TRAINING", tuple(with_run("evaluate", flaky)[s.name] for s in S.AFTER_TRAINING))
    results = S.run_sweep(tiny_sweep(idx_dir, stages=["train", "evaluate"]), tmp_path / "sw", progress=False)
    bad, good = results
    assert bad["status"] == "failed" and "injected failure" in bad["error"] and bad["done"] == ["train"]
    assert good["status"] == "ok" and good["done"] == ["train", "evaluate"]
    monkeypatch.setattr(S, "AFTER_TRAINING", stages)  # the fault is gone: only the missing stage is redone
    results = S.run_sweep(tiny_sweep(idx_dir, stages=["train", "evaluate"]), tmp_path / "sw", progress=False)
    assert [r["done"] for r in results] == [["evaluate"], []]


def test_stages_run_on_the_device_the_run_trained_on(idx_dir, tmp_path, monkeypatch):
    import smvi.stages.registry as R

    seen = []
    real_evaluate, real_ssl = R.STAGES["evaluate"].run, R.ssl_run
    evaluate = with_run(
        "evaluate",
        lambda run_dir, *a, **k: seen.append(("evaluate_run", k.get("device"))) or real_evaluate(run_dir, *a, **k),
    )["evaluate"]
    monkeypatch.setattr(S, "AFTER_TRAINING", tuple(evaluate if s.name == "evaluate" else s for s in S.AFTER_TRAINING))
    monkeypatch.setattr(
        R, "ssl_run", lambda run_dir, *a, **k: seen.append(("ssl_run", k.get("device"))) or real_ssl(run_dir, *a, **k)
    )
    S.run_sweep(tiny_sweep(idx_dir, lams=[0.0]), tmp_path / "auto", progress=False)
    # train.device = "auto" (the default): evaluated where auto points, a GPU when there is one; ssl on the CPU
    assert seen == [("evaluate_run", "auto"), ("ssl_run", "cpu")]
    seen.clear()
    cfg = tiny_sweep(idx_dir, lams=[0.0])
    cfg = cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"train": cfg.run.train.model_copy(update={"device": "cpu"})})}
    )
    S.run_sweep(cfg, tmp_path / "cpu", progress=False)
    assert seen == [("evaluate_run", "cpu"), ("ssl_run", "cpu")]


def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(idx_dir, tmp_path, monkeypatch, capsys):
    cfg = tiny_sweep(idx_dir, stages=["train"])
    real, calls = S.train, []

    def interrupted(config, run_dir, **k):
        calls.append(run_dir.name)
        if run_dir.name == "lam0.5_seed0":
            raise KeyboardInterrupt  # like Ctrl-C or a kill: not a recorded failure, the sweep stops
        return real(config, run_dir, **k)

    monkeypatch.setattr(S, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        S.run_sweep(cfg, tmp_path / "sw", progress=False)
    # the status file follows the sweep as it goes: what finished, and what had not when it stopped
    status = json.loads((tmp_path / "sw" / "sweep_status.json").read_text())
    assert [(r["name"], r["status"]) for r in status["runs"]] == [("lam0_seed0", "ok")]
    assert status["pending"] == ["lam0.5_seed0"]
    finished = (tmp_path / "sw" / "runs" / "lam0_seed0" / "checkpoint.safetensors").read_bytes()
    monkeypatch.setattr(S, "train", real)
    capsys.readouterr()
    results = S.run_sweep(cfg, tmp_path / "sw", progress=True)
    assert [r["done"] for r in results] == [[], ["train"]]
    err = capsys.readouterr().err  # one progress line per finished run, for following a long sweep
    # the tiny model has no prior, but the finished run's own epoch times measure one for the run left to train
    assert "1 of 2 runs to do (2 epochs to train); ETA " in err and "(measured in this sweep)" in err.splitlines()[0]
    assert "[1/2 runs] lam0_seed0: ok (nothing left to do); ETA " in err and "ETA ?" not in err
    assert "[2/2 runs] lam0.5_seed0: ok (train) in " in err
    assert json.loads((tmp_path / "sw" / "sweep_status.json").read_text())["pending"] == []
    assert (tmp_path / "sw" / "runs" / "lam0_seed0" / "checkpoint.safetensors").read_bytes() == finished


def test_a_changed_sweep_needs_overwrite_and_keeps_finished_runs(idx_dir, tmp_path):
    S.run_sweep(tiny_sweep(idx_dir, stages=["train"]), tmp_path / "sw", progress=False)
    with pytest.raises(S.ConfigError, match="different sweep"):
        S.run_sweep(tiny_sweep(idx_dir, stages=["train"], lams=[0.0, 0.5, 1.0]), tmp_path / "sw", progress=False)
    results = S.run_sweep(
        tiny_sweep(idx_dir, stages=["train"], lams=[0.0, 0.5, 1.0]), tmp_path / "sw", overwrite=True, progress=False
    )
    assert [r["done"] for r in results] == [[], [], ["train"]]


def test_sweep_cli_and_bad_settings(idx_dir, tmp_path):
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / "sw"), "--set", "lams=[0, 0]"])
    assert r.exit_code == 1 and "distinct" in r.output
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / "sw"), "--set", "lamz=[0]"])
    assert r.exit_code == 1 and "unknown key" in r.output
    for bad, message in (
        ("lams=[-0.1]", "lams.0"),
        ("lams=[]", "all empty"),
        ("seeds=[-1]", "seeds.0"),
        ("stages=['train', 'train']", "distinct"),
        ("ssl.sizes=[600, 600]", "ssl.sizes"),
    ):
        r = CliRunner().invoke(main, ["sweep", str(tmp_path / "sw"), "--set", bad])
        assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1, (bad, r.output)
    assert not (tmp_path / "sw").exists()


KILL_MARKER = {}  # set by the test below; read in the forked workers


def dies_once(spec, sweep, run_dir, **kwargs):
    """run_job, except that the worker running lam0.5 dies abruptly (os._exit) the first time it gets there."""
    marker = KILL_MARKER["path"]
    if spec.name == "lam0.5_seed0" and not marker.exists():
        marker.write_text("died once")
        os._exit(9)
    return S.__dict__["_real_run_job"](spec, sweep, run_dir, **kwargs)


def test_a_dying_worker_is_retried_and_every_run_completes_exactly_once(idx_dir, tmp_path, monkeypatch):
    KILL_MARKER["path"] = tmp_path / "died"
    monkeypatch.setitem(S.__dict__, "_real_run_job", S.run_job)
    monkeypatch.setattr(S, "run_job", dies_once)
    cfg = tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.0, 0.5, 1.0])
    results = S.run_sweep(cfg, tmp_path / "sw", executor="process", workers=2, progress=False)
    assert (tmp_path / "died").exists()  # the fault did happen
    assert sorted(r["name"] for r in results) == ["lam0.5_seed0", "lam0_seed0", "lam1_seed0"]
    assert all(r["status"] == "ok" for r in results), results
    for r in results:  # each epoch trained once, each evaluation written once
        run = tmp_path / "sw" / "runs" / r["name"]
        assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert (run / "eval.json").exists()


def test_process_executor_matches_inprocess(idx_dir, tmp_path):
    cfg = tiny_sweep(idx_dir, stages=["train", "evaluate"])
    S.run_sweep(cfg, tmp_path / "a", progress=False)
    S.run_sweep(cfg, tmp_path / "b", executor="process", workers=2, progress=False)
    for name in ("lam0_seed0", "lam0.5_seed0"):
        ma = (tmp_path / "a" / "runs" / name / "metrics.jsonl").read_text().splitlines()
        mb = (tmp_path / "b" / "runs" / name / "metrics.jsonl").read_text().splitlines()

        def strip(lines):
            return [
                {k: v for k, v in json.loads(x).items() if k not in ("seconds", "device", "threads")} for x in lines
            ]

        # one thread per worker instead of two changes float reduction order, nothing more
        assert strip(ma) == [pytest.approx(m, rel=1e-5) for m in strip(mb)]


@pytest.mark.slow
def test_ray_executor_matches_inprocess(idx_dir, tmp_path):
    pytest.importorskip("ray")
    cfg = tiny_sweep(idx_dir, stages=["train", "evaluate"])
    S.run_sweep(cfg, tmp_path / "a", progress=False)
    # two workers: one thread each, like the in-process run here (conftest), so the floats agree exactly
    results = S.run_sweep(cfg, tmp_path / "b", executor="ray", workers=2, progress=False)
    assert all(r["status"] == "ok" for r in results), results
    for name in ("lam0_seed0", "lam0.5_seed0"):
        ea = json.loads((tmp_path / "a" / "runs" / name / "eval.json").read_text())
        eb = json.loads((tmp_path / "b" / "runs" / name / "eval.json").read_text())
        assert ea["splits"]["test"]["ais"] == eb["splits"]["test"]["ais"]
        assert ea["splits"]["test"]["elbo"] == eb["splits"]["test"]["elbo"]


def test_results_are_recomputed_when_settings_or_training_change(idx_dir, tmp_path):
    cfg = tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.5])
    S.run_sweep(cfg, tmp_path / "sw", progress=False)
    changed = tiny_sweep(
        idx_dir, stages=["train", "evaluate"], lams=[0.5], eval={**TINY_EVAL, "ais": {**TINY_EVAL["ais"], "steps": 5}}
    )
    results = S.run_sweep(changed, tmp_path / "sw", overwrite=True, progress=False)
    assert results[0]["done"] == ["evaluate"]  # same training, new evaluation settings
    longer = changed.model_copy(
        update={"run": changed.run.model_copy(update={"train": changed.run.train.model_copy(update={"epochs": 3})})}
    )
    results = S.run_sweep(longer, tmp_path / "sw", overwrite=True, progress=False)
    assert results[0]["done"] == ["train", "evaluate"]  # more epochs: the old evaluation is stale
    e = RunDir(tmp_path / "sw" / "runs" / "lam0.5_seed0").read_record("eval")
    assert e.header.epoch == 3 and e.header.settings["ais"]["steps"] == 5
    other = longer.model_copy(
        update={"run": longer.run.model_copy(update={"model": longer.run.model.model_copy(update={"z_dim": 2})})}
    )
    results = S.run_sweep(other, tmp_path / "sw", overwrite=True, progress=False)
    assert results[0]["done"] == ["train (retrained: model.z_dim is 2 but the run used 3)", "evaluate"]
    e = RunDir(tmp_path / "sw" / "runs" / "lam0.5_seed0").read_record("eval")
    assert e.header.fingerprint == fingerprint(S.plan(other)[0].config)


def test_run_names_are_unambiguous_and_keep_the_short_form():
    assert S.run_name(0.01, 0) == "lam0.01_seed0" and S.run_name(1e-5, 2) == "lam1e-05_seed2"
    assert S.run_name(0.1000001, 0) == "lam0.1000001_seed0" and S.run_name(0.1, 0) == "lam0.1_seed0"
    assert S.run_name(1 / 3, 0) == f"lam{1 / 3!r}_seed0"  # {:g} would give 0.333333, another λ
    names = [s.name for s in S.plan(S.SweepConfig(lams=(0.1, 0.1000001, 1 / 3)))]
    assert len(set(names)) == 3


def _fp32_eval() -> dict:
    return {**TINY_EVAL, "ais": {**TINY_EVAL["ais"], "precision": "fp32"}}


def test_a_sweep_toml_of_the_old_eval_keys_still_loads(idx_dir, tmp_path):
    cfg = tiny_sweep(idx_dir, stages=["train"], lams=[0.5], eval=_fp32_eval())  # old keys: before ais.precision
    S.run_sweep(cfg, tmp_path / "sw", progress=False)
    path = tmp_path / "sw" / "sweep.toml"
    tree = tomllib.loads(path.read_text())
    ais = tree["eval"].pop("ais")
    tree["eval"].update(
        {
            "ais_steps": ais["steps"],
            "ais_chains": ais["chains"],
            "ais_leapfrog": ais["leapfrog_steps"],
            "ais_start": ais["start"],
            "ais_schedule": ais["schedule"],
        }
    )
    path.write_text(tomli_w.dumps(tree))
    again = S.run_sweep(cfg, tmp_path / "sw", progress=False)  # the same sweep: no "different sweep" refusal
    assert again[0]["status"] == "ok" and again[0]["done"] == []
    tree["eval"]["ais"] = {"steps": 3}
    path.write_text(tomli_w.dumps(tree))
    with pytest.raises(ConfigError, match="both ais_steps and ais.steps"):
        S.run_sweep(cfg, tmp_path / "sw", progress=False)


def test_settings_saved_before_ais_precision_read_as_fp32(idx_dir, tmp_path):
    """A sweep.toml and an eval record written before ais.precision existed ran in fp32: today's default ("auto")
    neither relabels them nor silently resumes them; the refusal names the setting."""
    sw = tmp_path / "sw"
    S.run_sweep(tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.5], eval=_fp32_eval()), sw, progress=False)
    path, rd = sw / "sweep.toml", RunDir(sw / "runs" / "lam0.5_seed0")
    tree = tomllib.loads(path.read_text())
    del tree["eval"]["ais"]["precision"]
    path.write_text(tomli_w.dumps(tree))
    eval_path = rd.record_path("eval")
    record = json.loads(eval_path.read_text())
    del record["header"]["settings"]["ais"]["precision"]
    eval_path.write_text(json.dumps(record))
    asked = tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.5])
    assert asked.eval.ais.precision == "auto"
    with pytest.raises(ConfigError, match=r"different sweep \(eval\.ais\.precision \(saved 'fp32', asked 'auto'\)\)"):
        S.run_sweep(asked, sw, progress=False)
    assert S.read_sweep(sw).eval.ais.precision == "fp32"
    assert rd.current_record("eval", asked.eval)[1] == "computed with other settings"
    fp32 = tiny_sweep(idx_dir, stages=["train", "evaluate"], lams=[0.5], eval=_fp32_eval())
    assert rd.current_record("eval", fp32.eval)[1] is None and rd.read_record("eval").computed_precision == "fp32"
    again = S.run_sweep(fp32, sw, progress=False)  # resumed as it was made: nothing recomputed
    assert again[0]["status"] == "ok" and again[0]["done"] == []


def test_a_sweep_that_cannot_write_is_one_line(idx_dir, tmp_path, monkeypatch):
    from smvi.store.rundir import RunError

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RunError, match="cannot write in .*No space left.*rerun the same command") as err:
        S.run_sweep(tiny_sweep(idx_dir, stages=["train"]), tmp_path / "sw", progress=False)
    assert "\n" not in str(err.value)


def test_process_workers_share_out_the_usable_cores(monkeypatch):
    """Threads per worker come from the cores this process may use (its affinity), not from the machine's count."""
    import smvi.studies.sweep as S

    monkeypatch.setattr(S.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(S.os, "cpu_count", lambda: 64)
    assert [S.worker_threads(w) for w in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    monkeypatch.delattr(S.os, "sched_getaffinity")
    assert S.usable_cores() == 64


def long_process_sweep(idx_dir, tmp_path):
    """`smvi sweep --executor process --workers 2` on minutes of queued work, started in its own process group with
    SIGINT at its default, as a terminal's shell starts a foreground job (a shell's background job, which CI or a
    nohup may be, starts with SIGINT ignored, and a Python started so never raises KeyboardInterrupt); returned once
    a run has a checkpoint, with its config and the pids of its pool's workers (Linux)."""
    cfg = with_epochs(tiny_sweep(idx_dir, lams=[0.0, 0.1, 0.2, 0.5, 1.0, 2.0], stages=["train"]), 5000)
    proc = sweep_process(
        cfg,
        tmp_path,
        *("--executor", "process", "--workers", "2"),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    until_a_checkpoint(proc, tmp_path / "sw")
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        workers = [int(pid) for pid in f.read().split()]
    assert workers
    return proc, cfg, workers


def stopped_by(proc, send) -> str:
    """``send()`` a signal, then the sweep's stderr once it has exited; it must within 20 s. Whatever is left of its
    process group is killed."""
    import signal
    import time

    try:
        send()
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=120)
        assert time.monotonic() - t0 < 20, "the sweep did not stop promptly"
        return err.decode()
    finally:  # the whole group, so that no worker outlives a failed check
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.mark.slow
def test_ctrl_c_stops_a_process_pool_sweep_at_once_and_the_same_command_resumes(idx_dir, tmp_path):
    """SIGINT to the whole process group (what Ctrl-C in a terminal sends) stops `smvi sweep --executor process`
    within seconds, with exit status 130 and the rerun hint; rerunning the same command finishes the sweep. The
    workers ignore SIGINT (the parent alone stops them): one sent to them only leaves the sweep running."""
    import signal
    import time

    proc, cfg, workers = long_process_sweep(idx_dir, tmp_path)
    for pid in workers:
        os.kill(pid, signal.SIGINT)
    time.sleep(2)
    alive = proc.poll() is None
    err = stopped_by(proc, lambda: os.killpg(proc.pid, signal.SIGINT))
    assert alive, err
    assert proc.returncode == 130 and "rerun the same command" in err, err
    resumed = with_epochs(cfg, 2)  # the interrupted runs resume
    results = S.run_sweep(resumed, tmp_path / "sw", overwrite=True, progress=False)
    assert all(r["status"] == "ok" for r in results), results


@pytest.mark.slow
def test_sigterm_to_a_process_pool_sweep_stops_its_workers_too(idx_dir, tmp_path):
    """`kill PID` of the sweep (SIGTERM to it alone) stops it as Ctrl-C does, exit status 143: its pool's workers
    are terminated with it, not left training as orphans."""
    import time

    proc, _, workers = long_process_sweep(idx_dir, tmp_path)
    err = stopped_by(proc, proc.terminate)
    assert proc.returncode == 143 and "rerun the same command" in err, err
    time.sleep(1)
    for pid in workers:
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().split()[2] == "Z", f"worker {pid} still runs after its sweep ended"
        except FileNotFoundError:
            pass  # gone


def test_threads_sets_each_runs_torch_threads_and_refuses_zero(idx_dir, tmp_path):
    """``threads`` reaches each run (its metrics record the threads it trained with), whatever the caller's count;
    0 is refused before anything is written, by the function and by the command line."""
    import torch

    torch.set_num_threads(2)  # the caller's count; the conftest fixture restores it
    cfg = tiny_sweep(idx_dir, lams=[0.0], stages=["train"])
    (result,) = S.run_sweep(cfg, tmp_path / "sw", progress=False, threads=1)
    assert result["status"] == "ok", result
    lines = (tmp_path / "sw" / "runs" / "lam0_seed0" / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["threads"] for line in lines} == {1}
    assert torch.get_num_threads() == 2  # the in-process runs' count is not left to the caller
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        S.run_sweep(cfg, tmp_path / "other", progress=False, threads=0)
    assert not (tmp_path / "other").exists()
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / "third"), "--threads", "0", "--no-progress"])
    assert r.exit_code != 0 and "--threads" in r.output and not (tmp_path / "third").exists()
