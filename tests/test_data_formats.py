"""IDX data as it is distributed: gzipped files (Fashion-MNIST, KMNIST), Debian's Fashion-MNIST package, and data
errors that leave nothing behind."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_train_args
from smvi.cli import main
from smvi.data import loading as D
from smvi.settings.run import load_config

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


def gzip_dir(plain: Path, out: Path) -> Path:
    out.mkdir()
    for name in D.MNIST_FILES:
        (out / f"{name}.gz").write_bytes(gzip.compress((plain / name).read_bytes()))
    return out


def test_gzipped_files_load_like_the_plain_ones(idx_dir, tmp_path):
    plain = D.load_idx_dir(idx_dir)
    gz = D.load_idx_dir(gzip_dir(idx_dir, tmp_path / "gz"))
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(plain, field), getattr(gz, field))


def test_gzip_is_recognized_by_its_magic_bytes_not_its_name(idx_dir):
    name = "t10k-labels-idx1-ubyte"
    expected = D.read_idx(idx_dir / name).copy()
    (idx_dir / name).write_bytes(gzip.compress((idx_dir / name).read_bytes()))  # gzipped, under the plain name
    assert (D.read_idx(idx_dir / name) == expected).all()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: gzip.compress(raw[:-100]), "truncated"),  # header and size checks apply after decompression
        (lambda raw: gzip.compress(raw)[:-30], "damaged gzip file"),  # a cut-off download
        (lambda raw: gzip.compress(b"\x00\x00\x08\x07" + raw[4:]), "wrong IDX magic number"),
    ],
)
def test_damaged_gzipped_files_are_one_line_errors(idx_dir, tmp_path, damage, message):
    gz = gzip_dir(idx_dir, tmp_path / "gz")
    path = gz / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage((idx_dir / "train-images-idx3-ubyte").read_bytes()))
    with pytest.raises(D.DataError) as err:
        D.load_data("idx", gz)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    assert "smvi data fetch" not in text and "--data-dir" in text  # the MNIST-only fetch is no fix for an idx dir


def test_a_missing_idx_file_names_the_plain_and_gzipped_names(idx_dir):
    (idx_dir / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(D.DataError, match=r"t10k-images-idx3-ubyte: file is missing; .*\.gz"):
        D.load_data("idx", idx_dir)


@pytest.mark.parametrize("breakage", ["missing dir", "missing file", "damaged gzip"])
def test_data_errors_leave_no_run_directory_behind(idx_dir, tmp_path, breakage):
    data_dir = idx_dir
    if breakage == "missing dir":
        data_dir = tmp_path / "nowhere"
    elif breakage == "missing file":
        (idx_dir / "train-labels-idx1-ubyte").unlink()
    else:
        (idx_dir / "train-images-idx3-ubyte").write_bytes(gzip.compress(b"IDX")[:-4])
    run = tmp_path / "runs" / "r"
    r = CliRunner().invoke(main, ["train", "--out", str(run), "--epochs", "1", *tiny_train_args(data_dir)])
    assert r.exit_code == 1 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert not run.exists() and not run.parent.exists()


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist package")
def test_debian_fashion_mnist_trains_from_the_documented_config(tmp_path):
    """examples/fashion-mnist.toml (the README's data.data_dir example) trains one short epoch on the packaged files."""
    cfg = load_config(ROOT / "examples" / "fashion-mnist.toml")
    assert (cfg.data.dataset, cfg.data.data_dir) == ("idx", str(DEBIAN_FASHION))
    d = D.load_data(cfg.data.dataset, cfg.data.data_dir)
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert sorted(d.train_y.unique().tolist()) == list(range(10))
    run = tmp_path / "fashion"
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--out",
            str(run),
            "--config",
            str(ROOT / "examples" / "fashion-mnist.toml"),
            "--no-progress",
            "--set",
            "train.epochs=1",
            "--set",
            "data.monitor_size=200",
            "--set",
            "model.encoder_hidden=[64]",
            "--set",
            "model.decoder_hidden=[64]",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (run / "checkpoint.safetensors").is_file() and "epoch 1:" in r.output
