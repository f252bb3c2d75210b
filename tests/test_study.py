"""`smvi study` (smvi.studies.study, the frontier study behind `make frontier`): its config file, the lanes scheduler,
and a tiny study end to end on synthetic data: one sweep per arm with the arm's objective or family, a gaps record
where the gap is split, and a rerun that resumes without redoing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smvi.settings.run import ConfigError, build_config, config_to_toml
from smvi.settings.study import PRESET_NAMES, StudyConfig, load_study_config
from smvi.store.rundir import RunDir
from smvi.studies import study as m
from smvi.studies.presets import PRESETS, preset_base
from smvi.studies.sweep import SweepConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny(idx_dir: Path) -> list[str]:
    sets = [
        "run.data.dataset='idx'",
        f"run.data.data_dir='{idx_dir}'",
        "run.data.monitor_size=32",
        "run.model.z_dim=2",
        "run.model.encoder_hidden=[16]",
        "run.model.decoder_hidden=[16]",
        "run.train.epochs=1",
        "run.train.batch_size=64",
        "stages=['train', 'evaluate']",
        "eval.n_test=6",
        "eval.n_train=0",
        "eval.ais.steps=5",
        "eval.elbo_samples=10",
        "eval.dsm_samples=5",
        "eval.iwae_k=10",
        "lams=[0]",
    ]
    gaps = ["steps=30", "n_points=6", "ais.steps=5", "eval_samples=20"]
    return [a for s in sets for a in ("--set", s)] + [a for s in gaps for a in ("--gaps-set", s)]


def smvi(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smvi", *map(str, args)], check=False, capture_output=True, text=True, timeout=timeout
    )


TWO_ARMS = ("--config", "frontier", "--only", "beta2", "--only", "flow")
"""``smvi study`` options: two arms of the frontier study."""


def study(out: Path, idx_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return smvi("study", out, *TWO_ARMS, "--executor", "inprocess", *tiny(idx_dir), *extra, timeout=600)


# ---- the study file -------------------------------------------------------------------------------------------------
def test_the_frontier_study_file_is_the_study_scripts_frontier_study_ran():
    """smvi/studies/frontier.toml holds what scripts/frontier_study.py's ARMS, GAPS, COST, STUDY_SETS and `make
    frontier`'s options were (copied here from the script as it was), with AIS in fp32 for evaluation and the gap
    split, as the script's arms ran (the default then; "auto" since)."""
    arms = {
        "smvi": (None, []),
        "beta0.5": ([0.0], ["run.train.objective='beta'", "run.train.beta=0.5"]),
        "beta2": ([0.0], ["run.train.objective='beta'", "run.train.beta=2.0"]),
        "beta4": ([0.0], ["run.train.objective='beta'", "run.train.beta=4.0"]),
        "iwae5": ([0.0], ["run.train.objective='iwae'", "run.train.iwae_k=5"]),
        "iwae50": ([0.0], ["run.train.objective='iwae'", "run.train.iwae_k=50"]),
        "full": ([0.0, 0.01, 0.1], ["run.model.posterior='full'"]),
        "flow": ([0.0, 0.01, 0.1], ["run.model.posterior='flow'"]),
    }
    gaps = {"smvi": [0.0, 0.01, 0.1], "full": [0.0], "flow": [0.0]}
    cost = {"smvi": 18, "beta0.5": 2, "beta2": 2, "beta4": 2, "iwae5": 4, "iwae50": 30, "full": 9, "flow": 8}
    for a in ("0.5", "0.2", "0.05"):  # issue 27's arm, added after the script (results/frontier/launch/rejection.sh)
        arms[f"rejection{a}"] = (
            [0.0, 0.01],
            ["run.model.posterior='rejection'", f"run.model.rejection_acceptance={a}"],
        )
        gaps[f"rejection{a}"], cost[f"rejection{a}"] = [0.0, 0.01], 28
    s = load_study_config("frontier")
    assert (s.preset, s.sets, s.lanes, s.executor, s.workers) == (
        "cpu",
        ("run.train.precision='bf16'", "eval.ais.precision='fp32'"),
        2,
        "process",
        1,
    )
    assert list(s.arms) == list(arms) and not s.overwrite
    for name, arm in s.arms.items():
        lams, sets = arms[name]
        assert (list(arm.lams) if arm.lams else None, list(arm.sets), arm.cost, arm.dir) == (
            lams,
            sets,
            cost[name],
            None,
        ), name
        assert dict(arm.stages) == ({"gaps": tuple(gaps[name])} if name in gaps else {}), name
    gaps_config = s.stage_config("gaps")
    assert gaps_config.model_fields_set == {"ais"} and gaps_config.ais.model_fields_set == {"precision"}
    assert gaps_config.ais.precision == "fp32"  # else GapConfig's defaults, as `smvi gaps` without --set


def test_the_sweep_commands_are_the_scripts():
    """The commands of the arms, as scripts/frontier_study.py built them (the costliest first)."""
    s = load_study_config("frontier")
    jobs = m.study_jobs(s, Path("runs/f"), only=["beta2", "smvi", "flow"])
    sweeps = [j for j in jobs if j.after is None]
    assert [j.label for j in sweeps] == ["smvi", "flow", "beta2"]
    tail = ["--executor", "process", "--workers", "1", "--no-report", "--no-progress"]
    assert sweeps[2].args() == [
        "sweep",
        "runs/f/beta2",
        "--preset",
        "cpu",
        "--set",
        "run.train.precision='bf16'",
        "--set",
        "eval.ais.precision='fp32'",
        "--set",
        "lams=[0]",
        "--set",
        "run.train.objective='beta'",
        "--set",
        "run.train.beta=2.0",
        *tail,
    ]
    study_sets = ["--set", "run.train.precision='bf16'", "--set", "eval.ais.precision='fp32'"]
    assert sweeps[0].args() == ["sweep", "runs/f/smvi", "--preset", "cpu", *study_sets, *tail]
    assert sweeps[1].args()[4:10] == [*study_sets, "--set", "lams=[0, 0.01, 0.1]"]
    assert [(j.label, j.after) for j in jobs if j.after] == [
        ("smvi gaps lam0_seed0", "smvi"),
        ("smvi gaps lam0.01_seed0", "smvi"),
        ("smvi gaps lam0.1_seed0", "smvi"),
        ("flow gaps lam0_seed0", "flow"),
    ]
    assert next(j.args() for j in jobs if j.after) == [
        "gaps",
        "runs/f/smvi/runs/lam0_seed0",
        "--set",
        "ais.precision='fp32'",
        "--no-progress",
    ]


def test_the_cpu_study_is_make_reproduce(tmp_path):
    """smvi/studies/cpu.toml: the cpu preset's sweep in the folder itself, with `make reproduce`'s convergence
    checks (--steps 125,250,500,1000 --n-points 50 at λ = 0, 0.01, 1)."""
    s = load_study_config("cpu")
    jobs = m.study_jobs(s, tmp_path)
    assert jobs[0].args() == [
        "sweep",
        str(tmp_path),
        "--preset",
        "cpu",
        "--executor",
        "process",
        "--workers",
        "2",
        "--no-report",
        "--no-progress",
    ]
    conv = [j.args() for j in jobs[1:]]
    assert [a[1] for a in conv] == [str(tmp_path / "runs" / n) for n in ("lam0_seed0", "lam0.01_seed0", "lam1_seed0")]
    assert conv[0][2:] == ["--set", "steps=[125, 250, 500, 1000]", "--set", "n_points=50", "--no-progress"]
    cfg = s.stage_config("convergence")
    assert cfg.steps == (125, 250, 500, 1000) and cfg.n_points == 50


def test_the_presets_a_study_may_name_are_the_sweep_presets():
    assert set(PRESET_NAMES) == set(PRESETS)


@pytest.mark.parametrize(
    "text, words",
    [
        ('preset = "cpu"\nlanez = 2\n[arms.a]\n', "lanez"),
        ("[arms.a]\nlam = [0.0]\n", "lam"),
        ("[arms.a]\nstages = { train = [0.0] }\n", "per-run stage"),
        ("[arms.a]\n[stage_sets]\ngapz = []\n", "per-run stage"),
        ('preset = "big"\n[arms.a]\n', "preset"),
        ("arms = {}\n", "arms is empty"),
        ('[arms.a]\ndir = "b"\n[arms.b]\n', "share a folder"),
    ],
)
def test_a_study_file_with_an_unknown_key_or_a_bad_value_is_one_line(tmp_path, text, words):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as e:
        load_study_config(path)
    assert "\n" not in str(e.value)


def test_an_unknown_study_name_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="frontier"):
        load_study_config("frontiers")
    r = smvi("study", "x", "--config", "frontiers")
    assert r.returncode == 1 and r.stderr.startswith("error: no study file") and len(r.stderr.splitlines()) == 1


# ---- the lanes ------------------------------------------------------------------------------------------------------
def test_lanes_deal_out_the_usable_cores():
    cores = os.sched_getaffinity(0)
    assert m.lane_cores(1) == [None]  # one lane: every core, unpinned
    if len(cores) >= 2:
        two = m.lane_cores(2)
        assert two[0] and two[1] and not two[0] & two[1] and two[0] | two[1] == cores
    assert m.lane_cores(len(cores) + 1) == [None] * (len(cores) + 1)  # more lanes than cores: they share, unpinned


def test_a_free_lane_takes_the_gap_split_of_a_finished_arm_while_another_arm_trains():
    """The lanes' scheduler, with a stand-in for `smvi`: a job starts once its arm has succeeded, in whichever lane is
    free (not after every arm), a job after a failed arm is dropped, and a job with nothing to do runs nothing."""
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

    jobs = [
        m.Job("slow", lambda: ["sweep"]),
        m.Job("fast", lambda: ["sweep"]),
        m.Job("broken", lambda: ["sweep"]),
        m.Job("slow gaps", lambda: ["gaps"], after="slow"),
        m.Job("fast gaps", lambda: ["gaps"], after="fast"),
        m.Job("broken gaps", lambda: ["gaps"], after="broken"),
        m.Job("current", lambda: None, after="fast"),
    ]
    failed = m.in_lanes(jobs, 2, run=run)
    assert failed == ["broken"]
    started = [label for what, label in log if what == "start"]
    assert "broken gaps" not in started and "current" not in started
    assert started.index("fast gaps") < log.index(("end", "slow"))  # beside the slow arm, not after it
    assert log.index(("start", "slow gaps")) > log.index(("end", "slow"))


def test_a_stopped_study_starts_nothing_more_and_names_what_it_left():
    started = []

    def run(label, cores, *args):
        started.append(label)
        m._stop.set()  # the signal handler's flag, set while the first job runs
        return True

    try:
        failed = m.in_lanes(
            [
                m.Job("a", lambda: ["sweep"]),
                m.Job("b", lambda: ["sweep"]),
                m.Job("a gaps", lambda: ["gaps"], after="a"),
            ],
            1,
            run=run,
        )
    finally:
        m._stop.clear()
    assert started == ["a"] and failed == ["b", "a gaps"]


# ---- the command ----------------------------------------------------------------------------------------------------
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
    r = smvi("report", out, timeout=300)
    assert r.returncode == 0, r.stderr  # the study's folder of arm sweeps is reported as one, with its frontier
    md = (out / "report" / "results.md").read_text()
    assert (out / "report" / "fig4_frontier.png").stat().st_size > 1000 and "Figure 4: the trade-off frontier" in md
    assert "beta2/runs/lam0_seed0" in md and "flow/runs/lam0_seed0" in md
    r = smvi("export", out, tmp_path / "results")  # its small files, checkpoints left out
    assert r.returncode == 0, r.stderr
    exported = tmp_path / "results" / "flow" / "runs" / "lam0_seed0" / "gaps.json"
    assert exported.read_bytes() == RunDir(flow).record_path("gaps").read_bytes()
    assert not list((tmp_path / "results").rglob("checkpoint.safetensors"))
    assert not (tmp_path / "results" / "report").exists()


def test_the_deprecated_script_runs_smvi_study(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "frontier_study.py"),
            str(tmp_path / "f"),
            "--only",
            "flow",
            "--gaps-set",
            "ais_steps=5",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "ais_steps" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option", [["--gaps-set", "ais_steps=5"], ["--stage-set", "gaps.ais_steps=5"]])
def test_bad_gaps_settings_are_one_line_before_any_sweep(tmp_path, option):
    r = smvi("study", tmp_path / "f", "--config", "frontier", "--only", "flow", *option)  # the old flat name
    assert r.returncode == 1 and r.stderr.strip().startswith("error: gaps settings") and "ais_steps" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "f").exists()


def test_a_missing_reused_sweep_is_one_line(tmp_path):
    r = smvi(
        "study", tmp_path / "f", "--config", "frontier", "--only", "smvi", "--reuse", f"smvi={tmp_path / 'nowhere'}"
    )
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "no runs/" in r.stderr and not (tmp_path / "f").exists()


def test_bad_lanes_and_unknown_arms_are_refused(tmp_path):
    r = smvi("study", tmp_path / "f", "--config", "frontier", "--lanes", "0")
    assert r.returncode == 2 and "--lanes" in r.stderr and not (tmp_path / "f").exists()
    r = smvi("study", tmp_path / "f", "--config", "frontier", "--only", "beta3")
    assert r.returncode == 1 and "no arm 'beta3'" in r.stderr and not (tmp_path / "f").exists()


@pytest.mark.slow
def test_sigterm_stops_every_lane_keeping_their_finished_epochs(idx_dir, tmp_path):
    out = tmp_path / "frontier"
    cmd = [
        sys.executable,
        "-m",
        "smvi",
        "study",
        str(out),
        *TWO_ARMS,
        "--lanes",
        "2",
        "--executor",
        "inprocess",
        *tiny(idx_dir),
        "--set",
        "run.train.epochs=500",
        "--no-gaps",
    ]
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
    left = subprocess.run(["pgrep", "-f", str(out)], check=False, capture_output=True).stdout
    assert not left  # no sweep left running


def saved_sweep(path: Path, *sets: str) -> Path:
    """A sweep directory whose sweep.toml holds the cpu preset with ``sets`` (no runs trained)."""
    (path / "runs").mkdir(parents=True)
    cfg = build_config(SweepConfig, preset_base("cpu"), sets=list(sets))
    (path / "sweep.toml").write_text(config_to_toml(cfg))
    return path


def test_a_reused_sweep_is_linked_into_the_study(tmp_path):
    saved_sweep(tmp_path / "cpu", *load_study_config("frontier").sets)
    cmd = ["study", tmp_path / "f", "--config", "frontier", "--only", "smvi", "--no-gaps"]
    for reuse in (["--reuse", f"smvi={tmp_path / 'cpu'}"], ["--smvi-sweep", tmp_path / "cpu"]):
        r = smvi(*cmd, *reuse)  # the second run finds the link in place
        assert r.returncode == 0, r.stderr
        link = tmp_path / "f" / "smvi"
        assert link.is_symlink() and os.readlink(link) == "../cpu" and link.resolve() == (tmp_path / "cpu").resolve()
    saved_sweep(tmp_path / "other", *load_study_config("frontier").sets)
    r = smvi(*cmd, "--reuse", f"smvi={tmp_path / 'other'}")
    assert r.returncode == 1 and "exists and is not the sweep reused" in r.stderr and os.readlink(link) == "../cpu"


def test_a_reused_sweep_must_have_the_study_s_settings(tmp_path):
    """The study trains in bf16 and evaluates with fp32 AIS; the cpu preset's sweep (what `make reproduce` writes:
    fp32 training, AIS in "auto") is refused unless the study's settings are set to its own."""
    as_the_preset = ("--set", "run.train.precision='fp32'", "--set", "eval.ais.precision='auto'")
    saved_sweep(tmp_path / "cpu")  # the cpu preset as it is: fp32

    def reusing(sweep: str, *extra: str) -> subprocess.CompletedProcess:
        only = ("--only", "smvi", "--reuse", f"smvi={tmp_path / sweep}", "--no-gaps", *extra)
        return smvi("study", tmp_path / "f", "--config", "frontier", *only)

    r = reusing("cpu")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "does not have the study's settings" in r.stderr and "precision" in r.stderr
    assert not (tmp_path / "f").exists()  # nothing linked
    r = reusing("cpu", *as_the_preset)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f" / "smvi").resolve() == (tmp_path / "cpu").resolve()
    saved_sweep(tmp_path / "short", "run.train.epochs=3")
    r = reusing("short", *as_the_preset)
    assert r.returncode == 1 and "epochs" in r.stderr


def test_a_bad_study_setting_is_one_line_before_anything_starts(tmp_path):
    r = smvi("study", tmp_path / "f", "--config", "frontier", "--set", "run.train.precision='fp16'")
    assert r.returncode == 1 and r.stderr.strip().startswith("error: --set") and "precision" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "f").exists()


def test_a_study_file_of_ones_own(tmp_path):
    """A study file given by path, with its own per-run stage settings and an arm in a folder of another name."""
    path = tmp_path / "mine.toml"
    path.write_text(
        'preset = "quick"\nlanes = 1\n[stage_sets]\nconvergence = ["n_points=7"]\n'
        '[arms.a]\ndir = "x"\nlams = [0.5]\nstages = { convergence = [0.5] }\n'
    )
    s = load_study_config(path, ["workers=3"])
    assert isinstance(s, StudyConfig) and s.workers == 3
    jobs = m.study_jobs(s, tmp_path / "s")
    assert jobs[0].args()[:2] == ["sweep", str(tmp_path / "s" / "x")] and "lams=[0.5]" in jobs[0].args()
    assert jobs[1].label == "a convergence lam0.5_seed0" and jobs[1].args()[3] == "n_points=7"


def test_the_paper_study_is_make_paper(tmp_path):
    """smvi/studies/paper.toml: `make paper`'s two sweeps side by side on every core (the λ = 1 one in the sibling
    folder runs/paper-lam1), then its convergence checks at λ = 0 and 0.1."""
    s = load_study_config("paper")
    assert s.lanes == 2 and not s.pin
    jobs = m.study_jobs(s, tmp_path / "paper")
    tail = ["--executor", "process", "--workers", "2", "--overwrite", "--no-report", "--no-progress"]
    assert jobs[0].args() == ["sweep", str(tmp_path / "paper"), "--preset", "paper", *tail]
    assert jobs[1].args() == [
        "sweep",
        str(tmp_path / "paper-lam1"),
        "--preset",
        "paper",
        "--set",
        "lams=[1]",
        "--set",
        "seeds=[0]",
        *tail,
    ]
    assert [(j.label, j.after) for j in jobs[2:]] == [
        ("paper convergence lam0_seed0", "paper"),
        ("paper convergence lam0.1_seed0", "paper"),
    ]
    assert jobs[2].args()[2:6] == ["--set", "steps=[250, 500, 1000, 2000]", "--set", "n_points=50"]


def test_unpinned_lanes_share_every_core():
    seen = []
    m.in_lanes(
        [m.Job("a", lambda: ["sweep"]), m.Job("b", lambda: ["sweep"])],
        2,
        run=lambda label, cores, *args: seen.append(cores) or True,
        pin=False,
    )
    assert seen == [None, None]
