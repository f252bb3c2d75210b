"""Exact resume after SIGKILL: real ``smvi train`` processes are killed at chosen points — mid-epoch, before the first
checkpoint, and inside the atomic write of a checkpoint or of the metrics — then resumed with ``smvi train --resume``,
and the final checkpoint (weights, Adam state, RNG states) and metrics must equal an uninterrupted run's bit for bit.

The kill points are injected by this file, not by the library: run as a script, it installs a trap and then runs the
``smvi`` command line in the same process, so the process really dies by SIGKILL at a deterministic point::

    python tests/test_resume_kill.py KILL_SPEC -- train --out RUN ...

    step:N             SIGKILL at the start of training step N (0-based, counted in this process)
    torn:NAME:K        on the K-th atomic write of NAME, write half the bytes to the temporary file, then SIGKILL
    unrenamed:NAME:K   on the K-th atomic write of NAME, SIGKILL after the temporary file is complete, before the rename
    no-rng:torch|data  negative control: do not restore that RNG stream on resume (no kill)

Every process runs with one intra-op thread: results are bit-identical for a fixed device and thread count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import make_idx_dir, tiny_train_args
from safetensors.torch import load_file

import smvi.checkpoint as C
import smvi.train as T
from smvi.cli import main

EPOCHS = 4  # the fixture has 256 training images in batches of 64: 4 steps per epoch, 16 in all
LAM = 0.5
SCENARIOS = {  # name -> kill spec of each process before the final, undisturbed `--resume`
    "mid-epoch": ["step:6"],
    "before-first-checkpoint": ["step:1"],
    "torn-checkpoint": ["torn:checkpoint.safetensors:2"],
    "complete-but-unrenamed-first-checkpoint": ["unrenamed:checkpoint.safetensors:1"],
    "torn-metrics": ["torn:metrics.jsonl:3"],
    "killed-twice": ["step:6", "step:5"],
}
CONTROLS = {"no-torch-rng": "no-rng:torch", "no-data-rng": "no-rng:data"}  # resumed after the "mid-epoch" kill


# ---- the driver (this file run as a script) ------------------------------------------------------------------------
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(spec: str) -> None:
    kind, _, arg = spec.partition(":")
    if kind == "step":
        real, target, count = T.smvi_objective, int(arg), iter(range(10**9))

        def objective(*args, **kwargs):
            if torch.is_grad_enabled() and next(count) == target:  # training steps only, not the no-grad monitor
                _die()
            return real(*args, **kwargs)

        T.smvi_objective = objective
    elif kind in ("torn", "unrenamed"):
        name, k = arg.rsplit(":", 1)
        real_write, calls = C.atomic_write_bytes, iter(range(1, 10**9))
        real_fdopen, real_replace = os.fdopen, os.replace
        armed = []

        def atomic_write_bytes(path, data):
            if Path(path).name == name and next(calls) == int(k):
                armed.append(True)
            return real_write(path, data)

        class TornFile:  # the file object atomic_write_bytes writes through
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                os.fsync(self.f.fileno())
                _die()

            def __getattr__(self, attr):
                return getattr(self.f, attr)

        def fdopen(*args, **kwargs):
            f = real_fdopen(*args, **kwargs)
            return TornFile(f) if armed and kind == "torn" else f

        def replace(src, dst):
            if armed and kind == "unrenamed":
                _die()
            return real_replace(src, dst)

        C.atomic_write_bytes = atomic_write_bytes
        os.fdopen, os.replace = fdopen, replace
    elif kind == "no-rng":
        real_set = T._set_rng_state

        def set_rng_state(rng, device, data):  # keep that stream as it is after start-up instead of restoring it
            current = torch.get_rng_state() if arg == "torch" else data.state()
            real_set({**rng, arg: current}, device, data)

        T._set_rng_state = set_rng_state
    else:
        raise SystemExit(f"unknown kill spec {spec!r}")


# ---- the tests ------------------------------------------------------------------------------------------------------
def smvi(args, kill=None) -> subprocess.CompletedProcess:
    """Run ``smvi ARGS`` in a fresh process (through the driver above when ``kill`` is given)."""
    prefix = [__file__, kill, "--"] if kill else ["-m", "smvi"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *prefix, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def snapshot(run_dir: Path) -> tuple[int | None, int, list[str]]:
    """What a killed process left: the checkpoint's epoch (None if none), metric lines, temporary files (by target)."""
    ck = run_dir / "checkpoint.safetensors"
    metrics_file = run_dir / "metrics.jsonl"
    lines = len(metrics_file.read_text().splitlines()) if metrics_file.exists() else 0
    temps = sorted(p.name[1:].split(".tmp")[0].rsplit(".", 1)[0] for p in run_dir.glob(".*.tmp"))
    return (C.load_checkpoint(ck).progress["epoch"] if ck.exists() else None), lines, temps


@dataclass
class Chain:
    run_dir: Path
    codes: list[int]  # exit status of every process, killed ones first
    left: list[tuple]  # snapshot() after each killed process
    stderr: str  # of the last process


def chain(run_dir: Path, data_dir: Path, kills: list[str], resume_with: str | None = None) -> Chain:
    """Start a run, let the processes in ``kills`` die one after another (each resuming the previous one), then
    resume to the end (through the driver when ``resume_with`` is a negative-control spec)."""
    first = ["train", "--out", run_dir, "--epochs", EPOCHS, "--lam", LAM, *tiny_train_args(data_dir)]
    resume = ["train", "--out", run_dir, "--resume", "--no-progress"]
    out = Chain(run_dir, [], [], "")
    for i, kill in enumerate(kills):
        out.codes.append(smvi(first if i == 0 else resume, kill).returncode)
        out.left.append(snapshot(run_dir))
    r = smvi(resume if kills else first, resume_with)
    out.codes.append(r.returncode)
    out.stderr = r.stderr
    return out


def state(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoint.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in lines]


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Chain]:
    """The uninterrupted reference run, every kill scenario and the negative controls, two processes at a time."""
    root = tmp_path_factory.mktemp("kill")
    data = make_idx_dir(root / "idx")
    jobs = {"reference": ([], None), **{n: (k, None) for n, k in SCENARIOS.items()},
            **{n: (SCENARIOS["mid-epoch"], spec) for n, spec in CONTROLS.items()}}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(chain, root / n, data, kills, ctrl) for n, (kills, ctrl) in jobs.items()}
        done = {n: f.result() for n, f in futures.items()}
    return done


def assert_exits(c: Chain, kills: int) -> None:
    assert c.codes == [-signal.SIGKILL] * kills + [0], f"exit statuses {c.codes}: {c.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_killed_and_resumed_run_is_bit_identical(runs, scenario):
    assert_exits(runs["reference"], 0)
    assert_exits(runs[scenario], len(SCENARIOS[scenario]))
    ref, got = runs["reference"].run_dir, runs[scenario].run_dir
    assert differing(state(ref), state(got)) == []  # every weight, Adam moment and RNG state
    assert metrics(got) == metrics(ref)  # one line per epoch, same numbers, nothing lost or repeated
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in ref.iterdir())  # no stale temp files


@pytest.mark.slow
def test_each_kill_left_the_state_it_targets(runs):
    """The kills hit what the scenarios claim: (checkpoint epoch, metric lines, temporary files) after each one."""
    assert [runs[n].left for n in SCENARIOS] == [
        [(1, 1, [])],  # mid-epoch 2
        [(None, 0, [])],  # mid-epoch 1: only config.toml exists
        [(1, 2, ["checkpoint.safetensors"])],  # epoch 2's metrics are in, its checkpoint is half-written
        [(None, 1, ["checkpoint.safetensors"])],  # epoch 1's checkpoint is complete but was never renamed
        [(2, 2, ["metrics.jsonl"])],  # epoch 3's metrics are half-written
        [(1, 1, []), (2, 2, [])],  # mid-epoch 2, then (after resuming) mid-epoch 3
    ]


@pytest.mark.slow
@pytest.mark.parametrize("control, stream", [("no-torch-rng", "z sampling"), ("no-data-rng", "shuffling and binarization")])
def test_negative_control_resume_without_rng_state_differs(runs, control, stream):
    """The comparison above has teeth: restoring everything but one RNG stream already changes the weights."""
    assert_exits(runs[control], 1)
    changed = differing(state(runs["reference"].run_dir), state(runs[control].run_dir))
    assert any(k.startswith("model.") for k in changed), f"not restoring the {stream} stream went unnoticed"


if __name__ == "__main__":
    spec, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: test_resume_kill.py KILL_SPEC -- SMVI_ARGS..."
    _install(spec)
    main(argv, prog_name="smvi")
