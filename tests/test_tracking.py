"""TensorBoard logging (train.tensorboard): what it writes, that it changes nothing in the run, and a one-line error
without the package."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_train_args
from smvi.cli import main
from smvi.stages.pictures import image_grid
from smvi.stages.train import load_run

STEP_TAGS = {
    "step/loss",
    "step/elbo",
    "step/log_likelihood",
    "step/kl",
    "step/d_sm",
    "step/lam",
    "step/grad_norm",
    "step/lr",
}


def train(run, idx_dir, *extra):
    r = CliRunner().invoke(
        main, ["train", "--out", str(run), "--epochs", "2", "--lam", "0.01", *tiny_train_args(idx_dir), *extra]
    )
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_event_files_hold_steps_epochs_and_images_and_the_run_is_unchanged(idx_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = train(tmp_path / "with", idx_dir, "--tensorboard", str(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb" / "with"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    steps_per_epoch = -(-256 // 64)  # the fixture's 256 training images, batch 64
    assert STEP_TAGS <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("step/loss")] == list(range(1, 2 * steps_per_epoch + 1))
    assert all(e.value == pytest.approx(0.01) for e in events.Scalars("step/lam"))  # stored as float32
    assert all(e.value > 0 for e in events.Scalars("step/grad_norm"))
    for key in ("test_elbo", "test_d_sm", "elbo", "kl", "d_sm", "seconds"):  # the same numbers as metrics.jsonl
        logged = [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")]
        assert logged == [(m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in metrics]
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert [e.step for e in events.Images("samples")] == [1, 2]
    first = events.Images("reconstructions")[0]
    assert (first.width, first.height) == (8 * 28, 8 * 28)  # 32 test images and their reconstructions, 8 a row

    train(tmp_path / "without", idx_dir)  # logging touches neither the RNG nor the model: the same run
    a, b = load_run(tmp_path / "with").model.state_dict(), load_run(tmp_path / "without").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_may_add_tensorboard(idx_dir, tmp_path):
    pytest.importorskip("tensorboard")
    train(tmp_path / "run", idx_dir)
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--out",
            str(tmp_path / "run"),
            "--resume",
            "--epochs",
            "3",
            "--no-progress",
            "--tensorboard",
            str(tmp_path / "tb"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "tb" / "run").glob("events.out.tfevents.*"))


def test_without_the_package_it_is_a_one_line_error_naming_the_install(idx_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    run = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["train", "--out", str(run), "--epochs", "1", "--tensorboard", str(tmp_path / "tb"), *tiny_train_args(idx_dir)],
    )
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "pip install -e '.[tensorboard]'" in r.output
    assert not run.exists() and not (tmp_path / "tb").exists()


def test_image_grid_lays_images_out_row_major():
    images = torch.arange(10, dtype=torch.float32).repeat_interleave(4).view(10, 4) / 10  # image i is all i/10
    grid = image_grid(images, columns=4, side=2)
    assert grid.shape == (1, 3 * 2, 4 * 2)
    assert grid[0, 0, 2] == pytest.approx(0.1) and grid[0, 2, 0] == pytest.approx(0.4)
    assert grid[0, 5, 7] == 0  # the padding after the last image is blank
