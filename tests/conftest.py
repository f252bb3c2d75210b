"""Shared fixtures: small synthetic IDX data sets (the suite never touches the network) and tiny-run settings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 2049 for 1-d labels, 2051 for 3-d images)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def make_idx_dir(directory: Path, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
    """Four MNIST-named IDX files of 28x28 gray images: 10 blurred class prototypes plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 28, 28)) ** 3
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        imgs = np.clip(protos[labels] + 0.15 * rng.standard_normal((n, 28, 28)), 0, 1)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", (imgs * 255).round())
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
    return directory


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "idx")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No test reads or writes the user's cache, or depends on the caller's environment or the global seed. Tiny
    tensors run fastest, and least disturbed by other processes, on one intra-op thread (restored afterwards)."""
    monkeypatch.setenv("SMVI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SMVI_DATA_DIR", raising=False)
    monkeypatch.delenv("SMVI_PROGRESS", raising=False)  # progress mode from the stream (plain lines under pytest)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_train_args(data_dir: Path) -> list[str]:
    """CLI options for a small, fast run on a synthetic IDX directory."""
    return [
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--z-dim",
        "4",
        "--batch-size",
        "64",
        "--no-progress",
        "--set",
        "model.encoder_hidden=[32]",
        "--set",
        "model.decoder_hidden=[32]",
        "--set",
        "data.monitor_size=64",
    ]


def tiny_config(data_dir: Path, *sets: str, **train_options):
    """A small run's config (16 hidden units, z_dim 3, batches of 64, one epoch) on a synthetic IDX directory, with
    ``sets`` (``section.key=value``) and ``train_options`` (``train.*`` keys) on top."""
    from smvi.settings.run import load_config

    return load_config(
        sets=[
            "model.encoder_hidden=[16]",
            "model.decoder_hidden=[16]",
            "model.z_dim=3",
            "data.dataset='idx'",
            f"data.data_dir='{data_dir}'",
            "data.monitor_size=32",
            "train.batch_size=64",
            *sets,
        ],
        overrides={"train.epochs": 1, **{f"train.{k}": v for k, v in train_options.items()}},
    )


TINY_AIS = ("--set", "ais.chains=2", "--set", "ais.leapfrog_steps=2")
"""Options of ``smvi evaluate`` or ``smvi convergence``: short AIS chains, two per point."""
TINY_EVALUATE = (
    *("--n-test", 8, "--n-train", 0, "--ais-steps", 3, "--no-progress"),
    *("--set", "elbo_samples=4", "--set", "dsm_samples=2", "--set", "iwae_k=4", "--set", "iwae_full_test_k=4"),
    *TINY_AIS,
)
"""Options of ``smvi evaluate`` for a fast evaluation of a tiny run (the whole-test-set IWAE included)."""


def invoke(*args):
    """Run the ``smvi`` command in-process (click's runner), every argument as a string."""
    from click.testing import CliRunner

    from smvi.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def load_script(path: Path) -> ModuleType:
    """The script at ``path`` (scripts/ is not a package) as a module, for its functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``benchmarks/SCRIPT --quick ARGS --out FILE`` in ``tmp_path`` (5 minutes at most), check that it exits 0,
    and return the finished process (its output captured as text) and the results it wrote."""
    out, path = tmp_path / f"{Path(script).stem}.json", Path(__file__).resolve().parents[1] / "benchmarks" / script
    r = subprocess.run(
        [sys.executable, str(path), "--quick", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r, json.loads(out.read_text())


@pytest.fixture
def trained(idx_dir, tmp_path):
    """A small run trained for 3 epochs through the CLI on the synthetic IDX data (a module may override it)."""
    out = tmp_path / "run"
    r = invoke("train", "--out", out, "--epochs", 3, *tiny_train_args(idx_dir))
    assert r.exit_code == 0, r.output
    return out
