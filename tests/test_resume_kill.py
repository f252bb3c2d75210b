"""Exact resume after SIGKILL: real ``smvi train`` processes are killed at chosen points — mid-epoch, before the first
checkpoint, inside the atomic write of a checkpoint or of the metrics — and resumed with ``smvi train --resume``; the
final checkpoint (weights, Adam state, both RNG states) and metrics must equal an uninterrupted run's, bit for bit.

The kill points are injected by this file, not by the library. Each training process is a child of a fork server
that has imported smvi once (fast: no interpreter start-up per process); before running the ``smvi`` command line
the child installs one trap, and it really dies by SIGKILL at a deterministic point:

    step:N             at the start of training step N (0-based, counted in this process)
    torn:NAME:K        in the K-th atomic write of NAME: half the bytes reach the temporary file, then SIGKILL
    unrenamed:NAME:K   in the K-th atomic write of NAME: the temporary file is complete and fsynced, then SIGKILL
    no-rng:torch|data  negative control, no kill: on resume, leave that RNG stream as it is instead of restoring it

The uninterrupted reference is a plain ``python -m smvi train`` process, so the forked children are also checked
against a fresh interpreter. Every process uses one intra-op thread (bit-identity holds per device and thread count).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import smvi.stages.train as T
import smvi.store.atomic as A
import smvi.store.checkpoint as C
from conftest import make_idx_dir, tiny_train_args
from smvi.cli import main

pytestmark = pytest.mark.slow

EPOCHS = 4  # the fixture has 256 training images in batches of 64: 4 steps per epoch, 16 in all
LAM = 0.5
SCENARIOS = {  # name -> the kill of each process before the final, undisturbed `--resume`
    "mid-epoch": ["step:6"],
    "before-first-checkpoint": ["step:1"],
    "torn-checkpoint": ["torn:checkpoint.safetensors:2"],
    "complete-but-unrenamed-first-checkpoint": ["unrenamed:checkpoint.safetensors:1"],
    "torn-metrics": ["torn:metrics.jsonl:3"],
    "killed-twice": ["step:6", "step:5"],
}
CONTROLS = {"no-torch-rng": "no-rng:torch", "no-data-rng": "no-rng:data"}  # resumed after the "mid-epoch" kill


# ---- the traps, installed in a child process before it runs the command line ---------------------------------------
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _trap_step(target: int) -> None:
    real, count = T.training_objective, iter(range(10**9))

    def objective(*args, **kwargs):
        if torch.is_grad_enabled() and next(count) == target:  # training steps only, not the no-grad monitor
            _die()
        return real(*args, **kwargs)

    T.training_objective = objective


def _trap_write(kind: str, name: str, k: int) -> None:
    """Arm on the K-th ``atomic_write_bytes`` to a file called ``name``; then die inside its write or its rename."""
    real_write, real_fdopen, real_replace = C.atomic_write_bytes, os.fdopen, os.replace
    calls, armed = iter(range(1, 10**9)), []

    def atomic_write_bytes(path, data):
        if Path(path).name == name and next(calls) == k:
            armed.append(True)
        return real_write(path, data)

    class TornFile:  # what `with os.fdopen(fd, "wb") as f: f.write(data)` gets once armed
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

    def fdopen(*args, **kwargs):
        f = real_fdopen(*args, **kwargs)
        return TornFile(f) if armed and kind == "torn" else f

    def replace(src, dst):
        if armed and kind == "unrenamed":
            _die()
        return real_replace(src, dst)

    # checkpoints; metrics and config (smvi.store.atomic)
    C.atomic_write_bytes = A.atomic_write_bytes = atomic_write_bytes
    os.fdopen, os.replace = fdopen, replace


def _trap_no_rng(stream: str) -> None:
    real = T._set_rng_state

    def set_rng_state(rng, device, data):
        current = torch.get_rng_state() if stream == "torch" else data.state()
        real({**rng, stream: current}, device, data)

    T._set_rng_state = set_rng_state


def _child(spec: str | None, argv: list[str], log: str) -> None:
    """Entry point of a forked training process: trap, then ``smvi ARGV`` with stdout and stderr going to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    if spec:
        kind, _, arg = spec.partition(":")
        if kind == "step":
            _trap_step(int(arg))
        elif kind in ("torn", "unrenamed"):
            name, k = arg.rsplit(":", 1)
            _trap_write(kind, name, int(k))
        elif kind == "no-rng":
            _trap_no_rng(arg)
        else:
            raise ValueError(f"unknown trap {spec!r}")
    main(argv, prog_name="smvi")


# ---- running chains of processes ------------------------------------------------------------------------------------
@dataclass
class Chain:
    run_dir: Path
    codes: list[int] = field(default_factory=list)  # exit status of each process; -9 is SIGKILL
    left: list[tuple] = field(default_factory=list)  # snapshot() after each killed process

    @property
    def log(self) -> str:
        path = self.run_dir.with_suffix(".log")
        return path.read_text() if path.exists() else ""


def snapshot(run_dir: Path) -> tuple[int | None, int, list[str]]:
    """What a killed process left: the checkpoint's epoch (None if none), metric lines, temporary files (by target)."""
    ck, m = run_dir / "checkpoint.safetensors", run_dir / "metrics.jsonl"
    temps = sorted(p.name[1:].split(".tmp")[0].rsplit(".", 1)[0] for p in run_dir.glob(".*.tmp"))
    return (
        C.load_checkpoint(ck).progress["epoch"] if ck.exists() else None,
        len(m.read_text().splitlines()) if m.exists() else 0,
        temps,
    )


def chain(ctx, run_dir: Path, data_dir: Path, kills: list[str], last: str | None = None) -> Chain:
    """A run whose processes die as listed in ``kills`` (each one resuming the previous), resumed to the end by one
    more process (with the negative-control trap ``last``, if given)."""
    first = ["train", "--out", run_dir, "--epochs", EPOCHS, "--lam", LAM, *tiny_train_args(data_dir)]
    resume = ["train", "--out", run_dir, "--resume", "--no-progress"]
    out = Chain(run_dir)
    for i, spec in enumerate([*kills, last]):
        p = ctx.Process(
            target=_child, args=(spec, [str(a) for a in (resume if i else first)], str(run_dir.with_suffix(".log")))
        )
        p.start()
        p.join(300)
        out.codes.append(p.exitcode)
        if i < len(kills):
            out.left.append(snapshot(run_dir))
    return out


def reference_run(run_dir: Path, data_dir: Path) -> Chain:
    """The uninterrupted run, in a fresh interpreter: ``python -m smvi train``."""
    args = ["train", "--out", run_dir, "--epochs", EPOCHS, "--lam", LAM, *tiny_train_args(data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "smvi", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    run_dir.with_suffix(".log").write_text(r.stdout + r.stderr)
    return Chain(run_dir, [r.returncode])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Chain]:
    """The reference, every kill scenario and the negative controls, two chains at a time."""
    root = tmp_path_factory.mktemp("kill")
    data = make_idx_dir(root / "idx")
    ctx = multiprocessing.get_context("forkserver")  # the pytest process itself is never forked
    ctx.set_forkserver_preload(["smvi.cli", "torch._dynamo", __name__])  # Adam imports torch._dynamo (slow)
    jobs = {
        **{n: (k, None) for n, k in SCENARIOS.items()},
        **{n: (SCENARIOS["mid-epoch"], spec) for n, spec in CONTROLS.items()},
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        ref = pool.submit(reference_run, root / "reference", data)
        futures = {n: pool.submit(chain, ctx, root / n, data, kills, last) for n, (kills, last) in jobs.items()}
        return {"reference": ref.result(), **{n: f.result() for n, f in futures.items()}}


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoint.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in ("seconds", "device", "threads")} for ln in lines]


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def assert_exits(c: Chain, kills: int) -> None:
    assert c.codes == [-signal.SIGKILL] * kills + [0], f"exit statuses {c.codes}:\n{c.log}"


# ---- the tests ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_killed_and_resumed_run_is_bit_identical(runs, scenario):
    assert_exits(runs["reference"], 0)
    assert_exits(runs[scenario], len(SCENARIOS[scenario]))
    ref, got = runs["reference"].run_dir, runs[scenario].run_dir
    assert differing(state(ref), state(got)) == []  # every weight, Adam moment and RNG state
    assert metrics(got) == metrics(ref)  # one line per epoch, same numbers, nothing lost or repeated
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in ref.iterdir())  # no temporary files left


def test_each_kill_left_the_state_it_targets(runs):
    """The kills hit what the scenarios claim: (checkpoint epoch, metric lines, temporary files) after each one."""
    assert {n: runs[n].left for n in SCENARIOS} == {
        "mid-epoch": [(1, 1, [])],
        "before-first-checkpoint": [(None, 0, [])],  # only config.toml exists
        "torn-checkpoint": [(1, 2, ["checkpoint.safetensors"])],  # epoch 2's metrics are in, its checkpoint is not
        "complete-but-unrenamed-first-checkpoint": [(None, 1, ["checkpoint.safetensors"])],
        "torn-metrics": [(2, 2, ["metrics.jsonl"])],
        "killed-twice": [(1, 1, []), (2, 2, [])],  # mid-epoch 2, then (resumed) mid-epoch 3
    }


@pytest.mark.parametrize("control, stream", [("no-torch-rng", "z sampling"), ("no-data-rng", "shuffling/binarization")])
def test_negative_control_resume_without_rng_state_differs(runs, control, stream):
    """The comparison has teeth: restoring everything but one RNG stream already changes the weights."""
    assert_exits(runs[control], 1)
    changed = differing(state(runs["reference"].run_dir), state(runs[control].run_dir))
    assert any(k.startswith("model.") for k in changed), f"not restoring the {stream} stream went unnoticed"
