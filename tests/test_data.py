"""Data: verification errors are one clear line naming the file; binarization is dynamic, seeded and reproducible."""

from __future__ import annotations

import hashlib

import pytest
import torch
from click.testing import CliRunner

from smvi.cli import main
from smvi.data import loading as D


@pytest.fixture
def small_mnist_spec(idx_dir, monkeypatch):
    """Treat the synthetic fixture as 'the original files' (its own MD5s and counts) to test verification."""
    spec = {
        name: D._Spec(
            hashlib.md5((idx_dir / name).read_bytes()).hexdigest(),
            2051 if "images" in name else 2049,
            256 if name.startswith("train") else 128,
        )
        for name in D.MNIST_FILES
    }
    monkeypatch.setattr(D, "MNIST_FILES", spec)
    return idx_dir


def test_verified_fixture_loads(small_mnist_spec):
    d = D.load_mnist(small_mnist_spec)
    assert d.train_x.shape == (256, 784) and d.test_x.shape == (128, 784)
    assert d.train_x.dtype == torch.float32 and 0 <= d.train_x.min() and d.train_x.max() <= 1
    assert set(d.train_y.tolist()) == set(range(10))


def corrupt_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def wrong_magic(path):
    raw = bytearray(path.read_bytes())
    raw[3] = 0x07  # neither 2049 (labels) nor 2051 (images)
    path.write_bytes(bytes(raw))


def remove(path):
    path.unlink()


def header_only(path):
    path.write_bytes(path.read_bytes()[:3])


@pytest.mark.parametrize(
    "damage, message",
    [
        (corrupt_byte, "MD5 checksum mismatch"),
        (truncate, "truncated"),
        (wrong_magic, "wrong IDX magic number"),
        (remove, "file is missing"),
        (header_only, "truncated"),
    ],
)
@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_damaged_file_gives_one_clear_line(small_mnist_spec, damage, message, name):
    damage(small_mnist_spec / name)
    with pytest.raises(D.DataError) as err:
        D.load_mnist(small_mnist_spec)
    text = str(err.value)
    assert message in text and name in text and "\n" not in text
    result = CliRunner().invoke(main, ["data", "verify", "--data-dir", str(small_mnist_spec)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_wrong_count_and_shape_are_named(idx_dir):
    import numpy as np

    from conftest import write_idx

    write_idx(idx_dir / "t10k-images-idx3-ubyte", np.zeros((128, 14, 14)))
    with pytest.raises(D.DataError, match="expected 28x28"):
        D.load_idx_dir(idx_dir)
    write_idx(idx_dir / "t10k-images-idx3-ubyte", np.zeros((128, 28, 28)))
    write_idx(idx_dir / "t10k-labels-idx1-ubyte", np.zeros(100))
    with pytest.raises(D.DataError, match="header says 100 items, expected 128"):
        D.load_idx_dir(idx_dir)


def test_a_runs_data_identity_names_each_files_digest(idx_dir):
    """data.json's file digests: the verified MNIST's known MD5s, or each IDX file's SHA-256 of its bytes."""
    from smvi.data.identity import file_digests

    assert file_digests("mnist", None) == {name: f"md5:{spec.md5}" for name, spec in D.MNIST_FILES.items()}
    digests = file_digests("idx", idx_dir)
    assert digests and set(digests) == set(D.MNIST_FILES)
    for name, digest in digests.items():
        assert digest == "sha256:" + hashlib.sha256((idx_dir / name).read_bytes()).hexdigest()
    assert D.file_hexdigest(idx_dir / name, "md5") == hashlib.md5((idx_dir / name).read_bytes()).hexdigest()


def test_missing_data_dir_and_no_download(tmp_path):
    with pytest.raises(D.DataError, match="does not exist"):
        D.locate_mnist(tmp_path / "nope")
    with pytest.raises(D.DataError, match="not in the cache"):
        D.locate_mnist(download=False)
    with pytest.raises(D.DataError, match="needs a directory"):
        D.load_data("idx", None)


def test_dynamic_binarization_changes_between_epochs_and_is_seeded():
    gray = torch.full((40, 784), 0.5)
    a = D.DynamicBinarizer(gray, batch_size=16, seed=7)
    e1, e2 = torch.cat(list(a.epoch())), torch.cat(list(a.epoch()))
    assert e1.shape == (40, 784) and set(e1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(e1, e2)  # re-sampled every time an image is used
    b = D.DynamicBinarizer(gray, batch_size=16, seed=7)
    assert torch.equal(torch.cat(list(b.epoch())), e1) and torch.equal(torch.cat(list(b.epoch())), e2)
    assert len(a) == 3 and len(D.DynamicBinarizer(gray, 16, 0, drop_last=True)) == 2


def test_binarization_follows_the_gray_level():
    gray = torch.linspace(0, 1, 784).repeat(2000, 1)
    x = torch.cat(list(D.DynamicBinarizer(gray, 500, seed=0).epoch()))
    # per-pixel frequency over 2000 draws: standard error ≤ 0.5/√2000 ≈ 0.011; 6 SE keeps false alarms negligible
    assert (x.mean(0) - gray[0]).abs().max() < 6 * 0.5 / 2000**0.5


def test_resume_state_reproduces_the_stream():
    gray = torch.rand(50, 784)
    a = D.DynamicBinarizer(gray, 10, seed=3)
    list(a.epoch())
    state = a.state().clone()
    expected = torch.cat(list(a.epoch()))
    b = D.DynamicBinarizer(gray, 10, seed=99)
    b.set_state(state)
    assert torch.equal(torch.cat(list(b.epoch())), expected)


def test_evaluation_binarization_is_fixed():
    gray = torch.rand(30, 784)
    assert torch.equal(D.binarize_fixed(gray, 5), D.binarize_fixed(gray, 5))
    assert not torch.equal(D.binarize_fixed(gray, 5), D.binarize_fixed(gray, 6))
    assert torch.equal(D.fixed_subset(100, 10, 1), D.fixed_subset(100, 10, 1))
