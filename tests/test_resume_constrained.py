"""Exact resume after SIGKILL with a learned λ: real ``smvi train --target-dsm`` processes are killed mid-epoch and
inside a checkpoint write, then resumed; weights, Adam state, RNG states, λ's state and metrics must equal an
uninterrupted run's bit for bit. A negative control resumes without restoring λ's state and must differ.

It reuses the traps and the fork server of ``test_resume_kill.py`` (see there), with a moving λ.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import smvi.stages.train as T
import test_resume_kill as K
from conftest import make_idx_dir, tiny_train_args
from smvi.core.constraint import DualState
from smvi.store.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 4  # 4 steps per epoch on the fixture
TARGET = ["--target-dsm", "3", "--set", "train.constraint.step_size=0.3"]  # λ moves every step
SCENARIOS = {"mid-epoch": ["step:6"], "torn-checkpoint": ["torn:checkpoint.safetensors:2"]}


class _Forgetful(DualState):
    @classmethod
    def from_json(cls, d):  # the negative control: ignore the saved state, restart λ from lam_init
        return DualState(lam=1e-3, avg=None, steps=0)


def _child(spec: str | None, argv: list[str], log: str) -> None:
    if spec == "no-dual":
        T.DualState = _Forgetful
        spec = None
    K._child(spec, argv, log)


def _chain(ctx, run_dir: Path, data_dir: Path, kills: list[str], last: str | None = None) -> list[int | None]:
    first = ["train", "--out", run_dir, "--epochs", EPOCHS, *TARGET, *tiny_train_args(data_dir)]
    resume = ["train", "--out", run_dir, "--resume", "--no-progress"]
    codes = []
    for i, spec in enumerate([*kills, last]):
        p = ctx.Process(
            target=_child, args=(spec, [str(a) for a in (resume if i else first)], str(run_dir.with_suffix(".log")))
        )
        p.start()
        p.join(300)
        codes.append(p.exitcode)
    return codes


def _reference(run_dir: Path, data_dir: Path) -> list[int]:
    args = ["train", "--out", run_dir, "--epochs", EPOCHS, *TARGET, *tiny_train_args(data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "smvi", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    run_dir.with_suffix(".log").write_text(r.stdout + r.stderr)
    return [r.returncode]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list]]:
    root = tmp_path_factory.mktemp("kill-constrained")
    data = make_idx_dir(root / "idx")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["smvi.cli", "torch._dynamo", "test_resume_kill", __name__])
    jobs = {**{n: (k, None) for n, k in SCENARIOS.items()}, "no-dual": (SCENARIOS["mid-epoch"], "no-dual")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        ref = pool.submit(_reference, root / "reference", data)
        futures = {n: pool.submit(_chain, ctx, root / n, data, kills, last) for n, (kills, last) in jobs.items()}
        out = {"reference": (root / "reference", ref.result())}
        return out | {n: (root / n, f.result()) for n, f in futures.items()}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_killed_and_resumed_constrained_run_is_bit_identical(runs, scenario):
    (ref, ref_codes), (got, codes) = runs["reference"], runs[scenario]
    assert ref_codes == [0] and codes == [-signal.SIGKILL] * len(SCENARIOS[scenario]) + [0], K.Chain(got).log
    assert K.differing(K.state(ref), K.state(got)) == []
    progress = load_checkpoint(got / "checkpoint.safetensors").progress
    assert progress == load_checkpoint(ref / "checkpoint.safetensors").progress and progress["dual"]["steps"] == 16
    assert K.metrics(got) == K.metrics(ref)
    assert len({e["lam"] for e in K.metrics(ref)}) == EPOCHS  # λ really moved


def test_negative_control_resume_without_lambda_state_differs(runs):
    (ref, _), (got, codes) = runs["reference"], runs["no-dual"]
    assert codes == [-signal.SIGKILL, 0], K.Chain(got).log
    assert any(k.startswith("model.") for k in K.differing(K.state(ref), K.state(got)))
    assert K.metrics(got)[-1]["lam"] != K.metrics(ref)[-1]["lam"]
