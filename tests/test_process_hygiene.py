"""Processes (issue 28, item 4): a process-pool sweep's workers end with their parent however it dies, so the rerun
finds the runs free; every stage holds its run's lock; a Ray address where nothing answers is one line."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import smvi.studies.sweep as S
from conftest import invoke
from test_sweep import long_process_sweep, stopped_by, sweep_process, tiny_sweep, until_a_checkpoint, with_epochs
from test_sweep_safety import _hold


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_a_process_pool_sweep_ends_its_workers_and_the_rerun_succeeds(idx_dir, tmp_path):
    """SIGKILL of the sweep (or the OOM killer) cannot be handled by it: its workers end by themselves (the kernel's
    parent-death signal, or their watchdog), release their runs' locks, and the same sweep reruns to completion."""
    proc, cfg, workers = long_process_sweep(idx_dir, tmp_path)
    try:
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = [pid for pid in workers if not _gone(pid)]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, so that no worker outlives a failed check
        except ProcessLookupError:
            pass
        for pipe in (proc.stdout, proc.stderr):  # the killed sweep's output pipes (else a ResourceWarning)
            if pipe is not None:
                pipe.close()
    assert not orphans, f"workers {orphans} train on after their sweep was killed"
    results = S.run_sweep(with_epochs(cfg, 1), tmp_path / "sw", overwrite=True, progress=False)
    assert all(r["status"] == "ok" for r in results), results


def test_a_pool_worker_ends_when_its_parent_is_gone(monkeypatch):
    """The portable half of the above, without a kill: the watchdog ends a worker whose parent is not alive."""
    ended, parent = [], 2**22 + 7  # above any pid Linux gives (pid_max ≤ 2^22)

    def kill(pid, sig):
        if sig == 0:  # the liveness probe: no such process
            raise ProcessLookupError(pid)
        ended.append((pid, sig))

    monkeypatch.setattr(S.os, "kill", kill)
    monkeypatch.setattr(S.ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("no libc here")))
    monkeypatch.setattr(S.threading, "Thread", lambda **k: type("T", (), {"start": lambda self: None})())
    S._end_with_parent(parent)
    assert ended == [(os.getpid(), signal.SIGKILL)]


@pytest.mark.parametrize(
    "stage", [["evaluate", "--n-test", 4, "--n-train", 0], ["gaps", "--n-points", 2], ["pictures"], ["ssl"]]
)
def test_every_stage_holds_the_runs_lock(trained, stage):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(trained / ".lock", ready, release))  # e.g. smvi train --resume
    other.start()
    try:
        assert ready.wait(60)
        before = sorted(p.name for p in trained.iterdir())
        r = invoke(stage[0], trained, *stage[1:], "--no-progress")
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        assert f"run directory {trained} is in use by another smvi process (pid {other.pid})" in r.output
        assert sorted(p.name for p in trained.iterdir()) == before
    finally:
        release.set()
        other.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.slow
def test_a_ray_address_that_does_not_answer_is_one_line(idx_dir, tmp_path):
    pytest.importorskip("ray")
    cfg = tiny_sweep(idx_dir, stages=["train"])
    proc = sweep_process(cfg, tmp_path, "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}")
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM must stop it too
        try:
            _, err = proc.communicate(timeout=20)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(  # noqa: B904 -- the timeout itself is the failure; its traceback adds nothing
            f"the sweep waited on the address (exit {proc.returncode} after SIGTERM): {err[-500:]}"
        )
    err = err.decode()
    assert proc.returncode == 1 and "does not answer" in err and "--address" in err, err
    assert len(err.strip().splitlines()) == 1, err


HOLD_AND_FORK = """
import os, sys, time
from pathlib import Path
from smvi.store.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    if os.fork() == 0:  # a child (a pool worker) that outlives its parent; fork() returns after its at-fork hooks
        print("child", flush=True)
        time.sleep(60)
        os._exit(0)
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_lock_ends_with_its_holder_even_while_a_forked_child_lives(tmp_path):
    from smvi.store.rundir import RunDir

    (tmp_path / "run").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_FORK, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        lines = {proc.stdout.readline(), proc.stdout.readline()}  # both started (the child's hooks have run)
        assert lines == {b"held\n", b"child\n"}, (lines, proc.stderr.read())
        proc.kill()  # the holder dies; its child lives on
        proc.wait()
        with RunDir(tmp_path / "run").lock():  # free: not "in use"
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.slow
def test_sigterm_stops_a_ray_sweep(idx_dir, tmp_path):
    """`kill PID` of `smvi sweep --executor ray` stops it with the rerun hint: Ray's own SIGTERM handler (which
    aborts the driver) is replaced by the CLI's again, and the driver waits for its tasks in short steps."""
    pytest.importorskip("ray")
    cfg = with_epochs(tiny_sweep(idx_dir, stages=["train"]), 5000)
    proc = sweep_process(
        cfg, tmp_path, "--executor", "ray", "--workers", "2", env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    until_a_checkpoint(proc, tmp_path / "sw")
    err = stopped_by(proc, proc.terminate)
    # Ray's wait turns the handler's exception into a plain KeyboardInterrupt: 130, not 143; never an abort (-6)
    assert proc.returncode in (130, 143) and "rerun the same command" in err, err
