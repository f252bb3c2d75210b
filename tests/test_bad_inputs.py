"""The bad-input catalogue: every case is one row of a table, run through the real command line.

Each bad input — a corrupt, truncated or missing data file, an invalid setting, a missing or damaged run directory,
an unwritable output, a second writer — must end with exactly one error line and a non-zero exit status (1 for the
library's errors, 2 for click's usage errors), with no traceback, and must leave every existing file byte-for-byte
as it was (``--overwrite`` included: nothing is removed before the new run's inputs have been checked).

User-supplied arrays get the same treatment from Python: ``ImageData`` and the objectives refuse wrong shapes and
dtypes with a ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import smvi
from conftest import make_idx_dir, tiny_train_args, write_idx
from smvi.cli import main
from smvi.data.loading import ImageData

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"


@dataclass
class Env:
    """A fresh copy, per case, of a data directory, a finished 2-epoch run and a finished run with another λ."""

    root: Path
    data: Path
    run: Path
    other: Path
    keep_open: list = field(default_factory=list)  # file objects holding locks, closed after the case

    def train(self, out, *extra) -> list:
        return ["train", "--out", out, "--epochs", 2, "--lam", 0.5, *tiny_train_args(self.data), *extra]

    def resume(self, *extra) -> list:
        return ["train", "--out", self.run, "--resume", "--no-progress", "--epochs", 3, *extra]

    @property
    def new(self) -> Path:
        return self.root / "new-run"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    data = make_idx_dir(root / "data")
    for name, lam in (("run", 0.5), ("other", 0.25)):
        args = ["train", "--out", root / name, "--epochs", 2, "--lam", lam, *tiny_train_args(data)]
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def env(originals, tmp_path) -> Env:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("data", "run", "other"):
        shutil.copytree(originals / name, tmp_path / name)
    e = Env(tmp_path, tmp_path / "data", tmp_path / "run", tmp_path / "other")
    yield e
    for f in e.keep_open:
        f.close()
    torch.set_num_threads(threads)


# ---- damage -------------------------------------------------------------------------------------------------------
def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


def write(path: Path, data: str | bytes) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def set_byte(index: int, value: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[:index] + bytes([value]) + raw[index + 1 :]


def flip_last_byte(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


def hold_lock(e: Env, run_dir: Path) -> None:
    """What another smvi process writing into ``run_dir`` holds (see test_a_real_second_process_is_refused)."""
    f = open(run_dir / ".lock", "a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    e.keep_open.append(f)


def disk_full(e: Env, monkeypatch) -> None:
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def skip_if_root() -> None:
    if os.geteuid() == 0:
        pytest.skip("permissions do not bind root")


# ---- the catalogue: (id, setup returning the command line, expected text, exit status) -----------------------------
Setup = Callable[[Env, pytest.MonkeyPatch], list]
CASES: list[tuple[str, Setup, str, int]] = [
    # data files
    ("data dir missing", lambda e, m: e.train(e.new, "--data-dir", e.root / "nope"), "does not exist", 1),
    ("data dir is a file", lambda e, m: e.train(e.new, "--data-dir", e.data / IMAGES), "is not a directory", 1),
    ("data file missing", lambda e, m: (e.data / IMAGES).unlink() or e.train(e.new), "file is missing", 1),
    (
        "data file truncated",
        lambda e, m: rewrite(e.data / IMAGES, lambda r: r[:-100]) or e.train(e.new),
        "truncated",
        1,
    ),
    ("data file empty", lambda e, m: rewrite(e.data / LABELS, lambda r: b"") or e.train(e.new), "truncated", 1),
    ("data file header only", lambda e, m: rewrite(e.data / IMAGES, lambda r: r[:3]) or e.train(e.new), "truncated", 1),
    (
        "data file too long",
        lambda e, m: rewrite(e.data / IMAGES, lambda r: r + b"\0" * 10) or e.train(e.new),
        "too long",
        1,
    ),
    (
        "data file wrong magic",
        lambda e, m: rewrite(e.data / IMAGES, set_byte(3, 7)) or e.train(e.new),
        "wrong IDX magic number",
        1,
    ),
    (
        "data file gzipped, cut short",
        lambda e, m: rewrite(e.data / IMAGES, lambda b: gzip.compress(b)[:-30]) or e.train(e.new),
        "damaged gzip file",
        1,
    ),
    (
        "data file is a directory",
        lambda e, m: (e.data / LABELS).unlink() or (e.data / LABELS).mkdir() or e.train(e.new),
        "cannot read",
        1,
    ),
    (
        "images not 28x28",
        lambda e, m: write_idx(e.data / IMAGES, np.zeros((256, 14, 14))) or e.train(e.new),
        "expected 28x28",
        1,
    ),
    (
        "labels do not match images",
        lambda e, m: write_idx(e.data / LABELS, np.zeros(100)) or e.train(e.new),
        "header says 100 items, expected 256",
        1,
    ),
    (
        "no training images",
        lambda e, m: write_idx(e.data / IMAGES, np.zeros((0, 28, 28))) or e.train(e.new),
        "holds no images",
        1,
    ),
    ("idx without a data dir", lambda e, m: ["train", "--out", e.new, "--dataset", "idx"], "needs a directory", 1),
    (
        "mnist check of other files",
        lambda e, m: e.train(e.new, "--dataset", "mnist"),
        "header says 256 items, expected 60000",
        1,
    ),
    (
        "SMVI_DATA_DIR missing",
        lambda e, m: m.setenv("SMVI_DATA_DIR", str(e.root / "nope")) or ["train", "--out", e.new, "--dataset", "mnist"],
        "does not exist",
        1,
    ),
    # settings
    ("negative width", lambda e, m: e.train(e.new, "--set", "model.encoder_hidden=[-3]"), "positive", 1),
    ("zero width", lambda e, m: e.train(e.new, "--set", "model.decoder_hidden=[32, 0]"), "positive", 1),
    ("width not a list", lambda e, m: e.train(e.new, "--set", "model.encoder_hidden=5"), "model.encoder_hidden", 1),
    ("NaN lambda", lambda e, m: e.train(e.new, "--lam", "nan"), "train.lam", 1),
    ("infinite lambda", lambda e, m: e.train(e.new, "--lam", "inf"), "train.lam", 1),
    ("negative lambda", lambda e, m: e.train(e.new, "--lam", -0.1), "train.lam", 1),
    ("zero batch size", lambda e, m: e.train(e.new, "--batch-size", 0), "train.batch_size", 1),
    ("negative batch size", lambda e, m: e.train(e.new, "--batch-size", -64), "train.batch_size", 1),
    ("zero epochs", lambda e, m: e.train(e.new, "--epochs", 0), "train.epochs", 1),
    ("negative learning rate", lambda e, m: e.train(e.new, "--lr", -0.1), "train.lr", 1),
    ("zero gradient clip", lambda e, m: e.train(e.new, "--grad-clip", 0), "train.grad_clip", 1),
    ("zero max_bad_steps", lambda e, m: e.train(e.new, "--set", "train.max_bad_steps=0"), "train.max_bad_steps", 1),
    ("a count of the wrong type", lambda e, m: e.train(e.new, "--set", 'train.n_samples="ten"'), "train.n_samples", 1),
    ("unknown activation", lambda e, m: e.train(e.new, "--set", "model.activation=swish"), "model.activation", 1),
    ("unknown key", lambda e, m: e.train(e.new, "--set", "train.lamda=0.1"), "unknown key", 1),
    ("unknown section", lambda e, m: e.train(e.new, "--set", "optim.lr=0.1"), "unknown key", 1),
    ("--set without =", lambda e, m: e.train(e.new, "--set", "garbage"), "expected section.key=value", 1),
    ("config file missing", lambda e, m: e.train(e.new, "--config", e.root / "none.toml"), "does not exist", 1),
    (
        "config file not TOML",
        lambda e, m: write(e.root / "c.toml", "[train\nlam=") or e.train(e.new, "--config", e.root / "c.toml"),
        "not valid TOML",
        1,
    ),
    (
        "config file unknown key",
        lambda e, m: write(e.root / "c.toml", "[train]\nlambda = 1\n") or e.train(e.new, "--config", e.root / "c.toml"),
        "unknown key",
        1,
    ),
    (
        "cuda without a GPU",
        lambda e, m: (
            (torch.cuda.is_available() and pytest.skip("a GPU is present")) or e.train(e.new, "--device", "cuda")
        ),
        "no CUDA device",
        1,
    ),
    ("batch size not a number", lambda e, m: e.train(e.new, "--batch-size", "abc"), "Invalid value", 2),
    ("--resume with --overwrite", lambda e, m: e.resume("--overwrite"), "contradict", 2),
    # run directories
    ("existing run without --overwrite", lambda e, m: e.train(e.run), "already holds a run", 1),
    (
        "metrics-only dir without --overwrite",
        lambda e, m: (e.run / "config.toml").unlink() or (e.run / "checkpoint.safetensors").unlink() or e.train(e.run),
        "already holds a run",
        1,
    ),
    ("resume a missing dir", lambda e, m: ["train", "--out", e.new, "--resume"], "does not exist", 1),
    (
        "resume an empty dir",
        lambda e, m: e.new.mkdir() or ["train", "--out", e.new, "--resume"],
        "nothing to resume",
        1,
    ),
    (
        "resume with config.toml damaged",
        lambda e, m: rewrite(e.run / "config.toml", lambda r: b"[model\n") or e.resume(),
        "not valid TOML",
        1,
    ),
    (
        "resume with config.toml missing",
        lambda e, m: (e.run / "config.toml").unlink() or e.resume(),
        "the run directory is damaged",
        1,
    ),
    (
        "resume a truncated checkpoint",
        lambda e, m: rewrite(e.run / "checkpoint.safetensors", lambda r: r[:200]) or e.resume(),
        "not a readable safetensors checkpoint",
        1,
    ),
    (
        "resume a pickled checkpoint",
        lambda e, m: write(e.run / "checkpoint.safetensors", pickle.dumps({"model": {}})) or e.resume(),
        "not a readable safetensors checkpoint",
        1,
    ),
    (
        "resume a tampered checkpoint",
        lambda e, m: rewrite(e.run / "checkpoint.safetensors", flip_last_byte) or e.resume(),
        "checksum mismatch",
        1,
    ),
    (
        "resume another run's checkpoint",
        lambda e, m: shutil.copy(e.other / "checkpoint.safetensors", e.run) and e.resume(),
        "belongs to another run (train.lam",
        1,
    ),
    (
        "resume with a damaged metrics line",
        lambda e, m: rewrite(e.run / "metrics.jsonl", lambda r: b"{oops\n" + r) or e.resume(),
        "line 1 is not a metrics record",
        1,
    ),
    (
        "resume with metrics ahead of the checkpoint",
        lambda e, m: (e.run / "checkpoint.safetensors").unlink() or e.resume(),
        "records epochs past the checkpoint",
        1,
    ),
    ("resume with another lambda", lambda e, m: e.resume("--lam", 2.0), "only train.epochs", 1),
    ("out is a file", lambda e, m: e.train(e.data / IMAGES), "is a file", 2),
    ("out below a file", lambda e, m: e.train(e.data / IMAGES / "run"), "cannot create run directory", 1),
    ("out not writable", lambda e, m: skip_if_root() or e.new.mkdir(mode=0o555) or e.train(e.new), "not writable", 1),
    (
        "out where no file can be created",
        lambda e, m: (Path("/sys").is_dir() or pytest.skip("no /sys")) and e.train("/sys"),
        "not writable",
        1,
    ),
    (
        "run in use by another process",
        lambda e, m: hold_lock(e, e.run) or e.resume(),
        "in use by another smvi process",
        1,
    ),
    (
        "--overwrite of a run in use",
        lambda e, m: hold_lock(e, e.run) or e.train(e.run, "--overwrite"),
        "in use by another smvi process",
        1,
    ),
    (
        "--overwrite with bad data",
        lambda e, m: (e.data / IMAGES).unlink() or e.train(e.run, "--overwrite"),
        "file is missing",
        1,
    ),
    ("disk full on resume", lambda e, m: disk_full(e, m) or e.resume(), "No space left on device", 1),
    ("evaluate a missing run", lambda e, m: ["evaluate", e.new], "does not exist", 1),
    (
        "evaluate a pickled checkpoint",
        lambda e, m: write(e.run / "checkpoint.safetensors", pickle.dumps(1)) or ["evaluate", e.run],
        "not a readable safetensors checkpoint",
        1,
    ),
    ("pictures of a missing run", lambda e, m: ["pictures", e.new], "does not exist", 1),
    (
        "pictures of a run in an unwritable dir",
        lambda e, m: skip_if_root() or os.chmod(e.run, 0o555) or ["pictures", e.run, "--no-progress"],
        "cannot write in",
        1,
    ),
    (
        "pictures on a full disk",
        lambda e, m: m.setattr("tempfile.mkstemp", no_space) or ["pictures", e.run, "--no-progress"],
        "No space left on device",
        1,
    ),
]


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@pytest.mark.parametrize("setup, expected, status", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_a_nonzero_exit_and_loses_nothing(env, monkeypatch, setup, expected, status):
    argv = [str(a) for a in setup(env, monkeypatch)]
    before = files(env.root)
    r = CliRunner().invoke(main, argv)
    monkeypatch.undo()  # e.g. a patched os.fsync
    assert isinstance(r.exception, SystemExit) and r.exit_code == status, (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    errors = [ln for ln in lines if ln.lower().startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], r.output
    assert "Traceback" not in r.output
    if status == 1:
        assert lines == errors  # nothing but the one line
    after = files(env.root)
    assert {k: after.get(k) for k in before} == before, "an existing file was changed or removed"
    assert set(after) == set(before), f"new files: {sorted(set(after) - set(before))}"


def test_overwrite_replaces_a_run_only_once_its_inputs_are_good(env):
    """The positive side of the last rows: with good inputs --overwrite does replace the run."""
    old = (env.run / "checkpoint.safetensors").read_bytes()
    r = CliRunner().invoke(main, [str(a) for a in env.train(env.run, "--overwrite", "--seed", 3, "--epochs", 1)])
    assert r.exit_code == 0, r.output
    assert (env.run / "checkpoint.safetensors").read_bytes() != old
    assert len((env.run / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_real_second_process_is_refused_and_the_lock_dies_with_its_holder(env):
    """Two real `smvi train` processes on one run: the second is refused while the first lives; once the first is
    SIGKILLed, its lock is gone and the run resumes."""
    first = subprocess.Popen(
        [sys.executable, "-m", "smvi", *map(str, env.train(env.new, "--epochs", 10**6))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while not (env.new / "checkpoint.safetensors").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.1)
        r = CliRunner().invoke(main, ["train", "--out", str(env.new), "--resume", "--no-progress"])
        assert r.exit_code == 1 and "in use by another smvi process" in r.output, r.output
    finally:
        first.kill()
        first.wait()
        first.stderr.close()  # else the pipe is reported, as a ResourceWarning, in whichever later test collects it
    r = CliRunner().invoke(main, ["train", "--out", str(env.new), "--resume", "--no-progress", "--epochs", 1])
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output


# ---- user-supplied arrays -----------------------------------------------------------------------------------------
def gray(n=8, d=784, dtype=torch.float32):
    return torch.rand(n, d, dtype=dtype)


def labels(n=8):
    return torch.zeros(n, dtype=torch.int64)


IMAGE_DATA_CASES = {  # name -> (train_x, train_y, test_x, test_y), expected text
    "NaN pixel": (
        (gray().index_put_((torch.tensor(0), torch.tensor(0)), torch.tensor(float("nan"))), labels(), gray(), labels()),
        "in [0, 1]",
    ),
    "pixel above 1": ((gray() * 255, labels(), gray(), labels()), "in [0, 1]"),
    "negative pixel": ((gray() - 1, labels(), gray(), labels()), "in [0, 1]"),
    "float64 images": ((gray(dtype=torch.float64), labels(), gray(), labels()), "must be float32"),
    "uint8 images": (((gray() * 255).to(torch.uint8), labels(), gray(), labels()), "must be float32"),
    "3-d images": ((gray().reshape(8, 28, 28), labels(), gray(), labels()), "[n > 0, d]"),
    "no training images": ((gray(0), labels(0), gray(), labels()), "[n > 0, d]"),
    "widths differ": ((gray(), labels(), gray(d=783), labels()), "width 783"),
    "too few labels": ((gray(), labels(7), gray(), labels()), "integer labels of shape [8]"),
    "float labels": ((gray(), labels().float(), gray(), labels()), "integer labels"),
    "numpy array": ((gray().numpy(), labels(), gray(), labels()), "must be torch tensors"),
}


@pytest.mark.parametrize("arrays, expected", list(IMAGE_DATA_CASES.values()), ids=list(IMAGE_DATA_CASES))
def test_image_data_refuses_bad_arrays(arrays, expected):
    with pytest.raises(ValueError) as err:
        ImageData(*arrays)
    assert expected in str(err.value) and "\n" not in str(err.value)


X_CASES = {  # name -> (x for a 784-d float32 VAE, exception type, expected text)
    "numpy array": (lambda: gray().numpy(), TypeError, "x must be a torch.Tensor"),
    "1-d": (lambda: gray(1)[0], ValueError, "x must have shape [N, 784]"),
    "3-d": (lambda: gray().reshape(2, 4, 784), ValueError, "x must have shape [N, 784]"),
    "wrong width": (lambda: gray(d=783), ValueError, "x must have shape [N, 784]"),
    "uint8": (lambda: (gray() * 255).to(torch.uint8), ValueError, "floating-point"),
    "int64": (lambda: gray().long(), ValueError, "floating-point"),
    "float64 for a float32 model": (lambda: gray(dtype=torch.float64), ValueError, "torch.float32"),
}
OBJECTIVES = {
    "elbo": lambda m, x: smvi.elbo(m, x),
    "score_matching_divergence": lambda m, x: smvi.score_matching_divergence(m, x),
    "smvi_objective": lambda m, x: smvi.smvi_objective(m, x, lam=0.1),
}


@pytest.mark.parametrize("objective", list(OBJECTIVES.values()), ids=list(OBJECTIVES))
@pytest.mark.parametrize("make_x, error, expected", list(X_CASES.values()), ids=list(X_CASES))
def test_objectives_refuse_a_batch_of_the_wrong_shape_or_dtype(objective, make_x, error, expected):
    model = smvi.VAE(784, smvi.ModelConfig(z_dim=2, encoder_hidden=(8,), decoder_hidden=(8,)))
    with pytest.raises(error) as err:
        objective(model, make_x())
    assert expected in str(err.value)


@pytest.mark.parametrize("objective", list(OBJECTIVES.values()), ids=list(OBJECTIVES))
def test_objectives_accept_a_good_batch(objective):
    """The validation's other side: a [N, 784] float32 batch (gray levels or binary) passes."""
    model = smvi.VAE(784, smvi.ModelConfig(z_dim=2, encoder_hidden=(8,), decoder_hidden=(8,)))
    for x in (gray(), torch.bernoulli(gray())):
        out = objective(model, x)
        assert (out.loss if hasattr(out, "loss") else out).shape == (8,)
