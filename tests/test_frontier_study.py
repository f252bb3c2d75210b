"""scripts/frontier_study.py (the study behind `make frontier`) runs end to end on tiny synthetic data: one sweep per
arm with the arm's objective or family, a gaps record where the gap is split, and a rerun that resumes without
redoing."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smvi.settings.run import build_config, config_to_toml
from smvi.store.rundir import RunDir
from smvi.studies.presets import preset_base
from smvi.studies.sweep import SweepConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny(idx_dir: Path) -> list[str]:
    sets = ["run.data.dataset='idx'", f"run.data.data_dir='{idx_dir}'", "run.data.monitor_size=32",
            "run.model.z_dim=2", "run.model.encoder_hidden=[16]", "run.model.decoder_hidden=[16]",
            "run.train.epochs=1", "run.train.batch_size=64", "stages=['train', 'evaluate']", "eval.n_test=6",
            "eval.n_train=0", "eval.ais.steps=5", "eval.elbo_samples=10", "eval.dsm_samples=5", "eval.iwae_k=10",
            "lams=[0]"]
    gaps = ["steps=30", "n_points=6", "ais.steps=5", "eval_samples=20"]
    return [a for s in sets for a in ("--set", s)] + [a for s in gaps for a in ("--gaps-set", s)]


def study(out: Path, idx_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(out), "--only", "beta2", "--only", "flow",
           *tiny(idx_dir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_frontier_study_runs_on_tiny_data_and_resumes(idx_dir, tmp_path):
    out = tmp_path / "frontier"
    r = study(out, idx_dir, "--lanes", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    starts = [line.split("]")[0] for line in r.stdout.splitlines() if "] + smvi sweep" in line]
    assert starts == ["[flow", "[beta2"]  # the costlier arm first; every line names its arm
    assert all(line.startswith("[") for line in r.stdout.splitlines())
    beta, flow = out / "beta2" / "runs" / "lam0_seed0", out / "flow" / "runs" / "lam0_seed0"
    config = (beta / "config.toml").read_text()
    assert 'objective = "beta"' in config and "beta = 2.0" in config
    assert 'posterior = "flow"' in (flow / "config.toml").read_text()
    assert (beta / "eval.json").exists() and (flow / "eval.json").exists()
    g, stale = RunDir(flow).current_record("gaps")
    assert stale is None and g.posterior == "flow" and g.n == 6 and RunDir(beta).read_record("gaps") is None
    before = RunDir(flow).record_path("gaps").read_bytes()
    r = study(out, idx_dir)  # resumes: nothing is recomputed
    assert r.returncode == 0 and RunDir(flow).record_path("gaps").read_bytes() == before
    assert "+ smvi gaps" not in r.stdout
    r = study(out, idx_dir, "--gaps-set", "eval_samples=21")  # other settings: the stale record is recomputed
    assert r.returncode == 0 and "+ smvi gaps" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert RunDir(flow).read_record("gaps").header.settings["eval_samples"] == 21
    r = subprocess.run([sys.executable, "-m", "smvi", "report", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # the study's folder of arm sweeps is reported as one, with its frontier
    md = (out / "report" / "results.md").read_text()
    assert (out / "report" / "fig4_frontier.png").stat().st_size > 1000 and "Figure 4: the trade-off frontier" in md
    assert "beta2/runs/lam0_seed0" in md and "flow/runs/lam0_seed0" in md


def test_bad_gaps_settings_are_one_line_before_any_sweep(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--only", "flow",
           "--gaps-set", "ais_steps=5"]  # the old flat name: now ais.steps
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: --gaps-set") and "ais_steps" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "f").exists()


def test_a_missing_smvi_sweep_is_one_line(idx_dir, tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--only", "smvi",
           "--smvi-sweep", str(tmp_path / "nowhere")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def load_study_module():
    spec = importlib.util.spec_from_file_location("frontier_study", ROOT / "scripts" / "frontier_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["frontier_study"] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_lanes_deal_out_the_usable_cores():
    lanes = load_study_module()._lane_cores
    cores = os.sched_getaffinity(0)
    assert lanes(1) == [None]  # one lane: every core, unpinned
    if len(cores) >= 2:
        two = lanes(2)
        assert two[0] and two[1] and not two[0] & two[1] and two[0] | two[1] == cores
    assert lanes(len(cores) + 1) == [None] * (len(cores) + 1)  # more lanes than cores: they share, unpinned


def test_a_free_lane_takes_the_gap_split_of_a_finished_arm_while_another_arm_trains():
    """The lanes' scheduler, with a stand-in for `smvi`: a job starts once its arm has succeeded, in whichever lane is
    free (not after every arm), a job after a failed arm is dropped, and a job with nothing to do runs nothing."""
    m = load_study_module()
    log, lock = [], threading.Lock()
    release_slow = threading.Event()

    def run(label, cores, *args):
        with lock:
            log.append(("start", label))
        if label == "slow":
            assert release_slow.wait(10), "the fast arm's gap split never ran beside the slow arm"
        with lock:
            log.append(("end", label))
        if label == "fast gaps":
            release_slow.set()
        return label != "broken"

    jobs = [m.Job("slow", lambda: ["sweep"]), m.Job("fast", lambda: ["sweep"]), m.Job("broken", lambda: ["sweep"]),
            m.Job("slow gaps", lambda: ["gaps"], after="slow"), m.Job("fast gaps", lambda: ["gaps"], after="fast"),
            m.Job("broken gaps", lambda: ["gaps"], after="broken"), m.Job("current", lambda: None, after="fast")]
    failed = m._in_lanes(jobs, 2, run=run)
    assert failed == ["broken"]
    started = [label for what, label in log if what == "start"]
    assert "broken gaps" not in started and "current" not in started
    assert started.index("fast gaps") < log.index(("end", "slow"))  # beside the slow arm, not after it
    assert log.index(("start", "slow gaps")) > log.index(("end", "slow"))


def test_a_stopped_study_starts_nothing_more_and_names_what_it_left():
    m = load_study_module()
    started = []

    def run(label, cores, *args):
        started.append(label)
        m._stop.set()  # the signal handler's flag, set while the first job runs
        return True

    failed = m._in_lanes([m.Job("a", lambda: ["sweep"]), m.Job("b", lambda: ["sweep"]),
                          m.Job("a gaps", lambda: ["gaps"], after="a")], 1, run=run)
    assert started == ["a"] and failed == ["b", "a gaps"]


def test_bad_lanes_are_one_line(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--lanes", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == "error: --lanes and --workers take a whole number of at least 1"
    assert not (tmp_path / "f").exists()


@pytest.mark.slow
def test_sigterm_stops_every_lane_keeping_their_finished_epochs(idx_dir, tmp_path):
    out = tmp_path / "frontier"
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(out), "--only", "beta2", "--only", "flow",
           "--lanes", "2", *tiny(idx_dir), "--set", "run.train.epochs=500", "--no-gaps"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = [out / arm / "runs" / "lam0_seed0" for arm in ("beta2", "flow")]
    deadline = time.monotonic() + 120
    while not all(RunDir(r).epochs_done() for r in runs if r.exists()) or not all(r.exists() for r in runs):
        assert time.monotonic() < deadline and proc.poll() is None, "both lanes should be training"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and stderr.strip().endswith("error: interrupted; rerun this command to resume")
    assert "interrupted: stopping the running jobs" in stdout
    done = [RunDir(r).epochs_done() for r in runs]
    assert all(0 < d < 500 for d in done)  # both stopped part-way, with their finished epochs checkpointed
    time.sleep(1)
    assert not subprocess.run(["pgrep", "-f", str(out)], capture_output=True).stdout  # no sweep left running


def saved_sweep(path: Path, *sets: str) -> Path:
    """A sweep directory whose sweep.toml holds the cpu preset with ``sets`` (no runs trained)."""
    (path / "runs").mkdir(parents=True)
    cfg = build_config(SweepConfig, preset_base("cpu"), sets=list(sets))
    (path / "sweep.toml").write_text(config_to_toml(cfg))
    return path


def test_a_reused_smvi_sweep_is_linked_into_the_study(tmp_path):
    saved_sweep(tmp_path / "cpu", *load_study_module().STUDY_SETS)
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--only", "smvi",
           "--smvi-sweep", str(tmp_path / "cpu"), "--no-gaps"]
    for _ in range(2):  # the second run finds the link in place
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        link = tmp_path / "f" / "smvi"
        assert link.is_symlink() and os.readlink(link) == "../cpu" and link.resolve() == (tmp_path / "cpu").resolve()
    saved_sweep(tmp_path / "other", *load_study_module().STUDY_SETS)
    r = subprocess.run(cmd[:-3] + ["--smvi-sweep", str(tmp_path / "other"), "--no-gaps"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "exists and is not --smvi-sweep" in r.stderr and os.readlink(link) == "../cpu"


def test_a_reused_smvi_sweep_must_have_the_study_s_settings(tmp_path):
    """The study trains in bf16; an fp32 sweep (what `make reproduce` writes) is refused unless the study is fp32."""
    saved_sweep(tmp_path / "cpu")  # the cpu preset as it is: fp32
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--only", "smvi",
           "--smvi-sweep", str(tmp_path / "cpu"), "--no-gaps"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "does not have the study's settings" in r.stderr and "precision" in r.stderr
    assert not (tmp_path / "f").exists()  # nothing linked
    r = subprocess.run(cmd + ["--set", "run.train.precision='fp32'"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f" / "smvi").resolve() == (tmp_path / "cpu").resolve()
    saved_sweep(tmp_path / "short", "run.train.epochs=3")
    r = subprocess.run(cmd[:-3] + ["--smvi-sweep", str(tmp_path / "short"), "--no-gaps", "--set",
                                   "run.train.precision='fp32'"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "epochs" in r.stderr


def test_a_bad_study_setting_is_one_line_before_anything_starts(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "frontier_study.py"), str(tmp_path / "f"), "--set",
           "run.train.precision='fp16'"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: --set") and "precision" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "f").exists()
