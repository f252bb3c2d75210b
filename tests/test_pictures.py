"""``smvi pictures``: three decodable PNGs of the promised sizes whose pixels are the model's decoder means at the
seeded draws and images; a record current only for its run and epoch; the stage's refusals; the sweep stage; and the
report's section, which shows current pictures only."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import shutil

import numpy as np
import pytest
import torch
from matplotlib.image import imread

import smvi.stages.pictures as P
import smvi.studies.sweep as S
from conftest import invoke, tiny_config
from smvi.data.loading import fixed_inputs
from smvi.report.page import make_report
from smvi.report.pictures import pictures_section
from smvi.settings.run import RunConfig
from smvi.settings.stages import PicturesConfig
from smvi.stages.train import train
from smvi.stages.trained import load_run
from smvi.store.records import PicturesRecord
from smvi.store.rundir import RunDir, RunError
from test_rundir import made, one_error_line, run  # noqa: F401  (fixtures)
from test_sweep import TINY_EVAL, tiny_sweep

SMALL = PicturesConfig(n_samples=16, n_reconstructions=12, n_latent=100, columns=4)
CELL = 28 + P.PAD  # a grid's pixels per image, frame included


def decode(png: bytes) -> np.ndarray:
    """A gray PNG as an [H, W] array in [0, 1]."""
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.ndim == 2, "a grid is an 8-bit gray PNG"
    return pixels


def cell(grid: np.ndarray, row: int, col: int, top: int = 0) -> np.ndarray:
    """The 28x28 image at (row, col) of a framed grid whose first row starts ``top`` pixels down."""
    y, x = top + P.PAD + row * CELL, P.PAD + col * CELL
    return grid[y : y + 28, x : x + 28].reshape(-1)


def pictures(run_dir) -> dict[str, bytes]:
    rd = RunDir(run_dir)
    return {k: rd.read_picture(k) for k in rd.picture_kinds()}


def never(*a, **k):
    raise AssertionError("pictures were drawn before the inputs were checked")


# ---- the stage ------------------------------------------------------------------------------------------------------
def test_three_pngs_of_the_promised_sizes_and_a_current_record(made, run):
    _, _, data = made
    rec = P.pictures_run(run, SMALL, data=data, progress=False)
    rd = RunDir(run)
    assert isinstance(rec, PicturesRecord) and rd.read_record("pictures") == rec
    assert rd.current_record("pictures", SMALL) == (rec, None)
    assert rec.header.fingerprint == rd.fingerprint() and rec.header.epoch == 1
    png = pictures(run)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in png.items()} == rec.sha256
    side = 4 * CELL + P.PAD  # four images a row, framed
    assert decode(png["samples"]).shape == (side, side)  # 16 samples: 4 rows
    pair = 2 * CELL + P.PAD  # 12 test images: 3 pairs of (images, reconstructions) rows, GAP apart
    assert decode(png["reconstructions"]).shape == (3 * pair + 2 * P.GAP, side)
    (w, h), dpi = P.LATENT_SIZE
    assert imread(io.BytesIO(png["latents"])).shape[:2] == (round(h * dpi), round(w * dpi))
    assert rec.n_latent == 100 and len(rec.reconstruction_indices) == 12
    assert rec.explained[0] >= rec.explained[1] > 0 and sum(rec.explained) <= 1 + 1e-9


def test_the_pixels_are_the_decoder_means_at_the_seeded_draws_and_images(made, run):
    _, _, data = made
    rec = P.pictures_run(run, SMALL, data=data, progress=False)
    loaded = load_run(run)
    png = pictures(run)
    samples = decode(png["samples"])
    expected = P.sample_means(loaded.model, 16, SMALL.seed).numpy()
    for i in range(16):
        assert np.abs(cell(samples, i // 4, i % 4) - expected[i]).max() <= 0.5 / 255 + 1e-6
    x = fixed_inputs(data.test_x[rec.reconstruction_indices], "binarize", loaded.config.data.eval_seed)
    recon = P.reconstructions(loaded.model, x).numpy()
    grid = decode(png["reconstructions"])
    for i in range(12):
        pair, col = divmod(i, 4)
        top = pair * (2 * CELL + P.PAD + P.GAP)
        assert np.array_equal(cell(grid, 0, col, top), x[i].numpy())  # the model's binary input, exactly
        assert np.abs(cell(grid, 1, col, top) - recon[i]).max() <= 0.5 / 255 + 1e-6
    assert set(np.unique(grid[P.PAD : P.PAD + 28, P.PAD : P.PAD + 28])) <= {0.0, 1.0}


def test_the_same_run_and_settings_give_the_same_bytes_and_another_seed_others(made, run):
    _, _, data = made
    first = P.pictures_run(run, SMALL, data=data, progress=False)
    again = P.pictures_run(run, SMALL, data=data, overwrite=True, progress=False)
    assert again.sha256 == first.sha256 and again.reconstruction_indices == first.reconstruction_indices
    other = P.pictures_run(run, SMALL.model_copy(update={"seed": 1}), data=data, overwrite=True, progress=False)
    assert all(other.sha256[k] != first.sha256[k] for k in first.sha256)
    assert RunDir(run).current_record("pictures", SMALL)[1] == "computed with other settings"


def test_a_gaussian_decoder_shows_dequantized_inputs_and_gray_means(made, tmp_path):
    _, data_dir, data = made
    out = tmp_path / "gauss"
    train(load_config_gaussian(data_dir), out, progress=False, data=data)
    rec = P.pictures_run(out, SMALL, data=data, progress=False)
    top = cell(decode(pictures(out)["reconstructions"]), 0, 0)
    x = fixed_inputs(data.test_x[rec.reconstruction_indices[:1]], "dequantize", load_run(out).config.data.eval_seed)
    assert np.abs(top - x[0].numpy()).max() <= 0.5 / 255 + 1e-6 and len(np.unique(top)) > 2  # gray, not binary


def load_config_gaussian(data_dir) -> RunConfig:
    tree = tiny_config(data_dir).model_dump()
    tree["model"]["likelihood"], tree["data"]["transform"] = "gaussian", "dequantize"
    return RunConfig.model_validate(tree)


def test_tsne_puts_the_latents_in_2d_without_variance_fractions(made, run):
    _, _, data = made
    rec = P.pictures_run(run, SMALL.model_copy(update={"projection": "tsne"}), data=data, progress=False)
    assert rec.explained == [None, None] and rec.n_latent == 100


# ---- freshness and refusals -----------------------------------------------------------------------------------------
def test_pictures_are_stale_after_more_training_and_gone_after_overwrite(made, run):
    _, data_dir, data = made
    rd = RunDir(run)
    P.pictures_run(run, SMALL, data=data, progress=False)
    train(tiny_config(data_dir, epochs=2), run, resume=True, progress=False, data=data)
    assert rd.current_record("pictures", SMALL)[1] == "computed at epoch 1, the run is at epoch 2"
    train(tiny_config(data_dir, lam=0.25), run, overwrite=True, progress=False, data=data)
    assert rd.read_record("pictures") is None  # train --overwrite removes the record and its PNGs
    assert all(not rd.picture_path(k).exists() for k in rd.picture_kinds())


def test_an_existing_record_or_an_unwritable_run_is_refused_before_any_drawing(made, run, monkeypatch):
    _, _, data = made
    P.pictures_run(run, SMALL, data=data, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    monkeypatch.setattr(P, "sample_means", never)
    with pytest.raises(RunError, match="pictures.json exists: pass --overwrite"):
        P.pictures_run(run, SMALL, data=data, progress=False)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", no_space)
    with pytest.raises(RunError, match="cannot write in .*No space left") as err:
        P.pictures_run(run, SMALL, data=data, overwrite=True, progress=False)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda run, root: shutil.rmtree(run), "does not exist"),
        (
            lambda run, root: shutil.copy(root / "b" / "checkpoint.safetensors", run / "checkpoint.safetensors"),
            "belongs to another run (train.lam is 0.5 in the checkpoint, 0.0 in config.toml)",
        ),
        (
            lambda run, root: (run / "checkpoint.safetensors").write_bytes(b"\x80\x04junk"),
            "not a readable safetensors checkpoint",
        ),
    ],
    ids=["missing run", "foreign checkpoint", "damaged checkpoint"],
)
def test_bad_runs_are_one_error_line_from_the_cli(made, run, damage, expected):
    root, _, _ = made
    damage(run, root)
    line = one_error_line(invoke("pictures", run, "--no-progress"))
    assert expected in line, line
    assert not RunDir(run).record_path("pictures").exists()


def test_the_cli_draws_and_names_its_files(made, run):
    r = invoke("pictures", run, "--no-progress", "--set", "n_latent=50", "--set", "n_samples=8")
    assert r.exit_code == 0, r.output
    assert "samples.png, reconstructions.png, latents.png and pictures.json" in r.output
    rec = RunDir(run).read_record("pictures")
    assert rec.n_latent == 50 and PicturesConfig.model_validate(rec.header.settings).n_samples == 8
    r = invoke("pictures", run, "--set", "n_latnt=5")
    assert r.exit_code == 1 and "unknown key" in r.output and "n_latnt" in r.output


# ---- building blocks ------------------------------------------------------------------------------------------------
def test_pca_agrees_with_scikit_learn_and_fixes_the_signs():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    scaled = torch.randn(300, 5, generator=g, dtype=torch.float64) * torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1])
    points = scaled @ torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0]  # rotated
    coords, explained = P.pca_2d(points)
    ref = PCA(2).fit(points.numpy())
    assert np.allclose(explained, ref.explained_variance_ratio_)
    assert np.allclose(np.abs(coords.numpy()), np.abs(ref.transform(points.numpy())))  # the same up to each sign
    perm = torch.randperm(300, generator=g)  # the axes (signs included) are the data's, not the SVD's choice:
    assert torch.allclose(P.pca_2d(points[perm])[0], coords[perm]) and torch.allclose(P.pca_2d(-points)[0], -coords)
    line = torch.stack([torch.arange(5.0), torch.zeros(5)], 1)
    assert P.pca_2d(line)[1] == pytest.approx([1.0, 0.0]) and P.pca_2d(torch.ones(4, 3))[1] == [None, None]
    one_d, explained = P.pca_2d(torch.arange(4.0).view(4, 1))
    assert explained == [1.0, 0.0] and torch.equal(one_d[:, 1], torch.zeros(4))


def test_pairs_grid_puts_each_row_above_its_partner_and_pads_a_short_row():
    top, bottom = torch.full((5, 4), 0.2), torch.full((5, 4), 0.8)
    grid = P.pairs_grid(top, bottom, columns=3, side=2, pad=1, gap=2)[0]
    assert grid.shape == (2 * (2 * 3 + 1) + 2, 3 * 3 + 1)
    assert grid[1, 1] == pytest.approx(0.2) and grid[4, 1] == pytest.approx(0.8)  # pair 1: top row, then bottom
    assert grid[7, 0] == pytest.approx(P.FRAME) and grid[8, 5] == pytest.approx(P.FRAME)  # the gap, then the frame
    assert grid[10, 7] == 0 and grid[13, 7] == 0  # the sixth place of pair 2 is blank in both rows


# ---- the sweep and the report ---------------------------------------------------------------------------------------
def sweep_with_pictures(idx_dir, **pictures):
    return tiny_sweep(
        idx_dir,
        stages=["train", "evaluate", "pictures"],
        eval={**TINY_EVAL, "n_train": 0},
        pictures={**SMALL.model_dump(), **pictures},
    )


def test_the_sweep_draws_each_runs_pictures_once_and_redraws_stale_ones(idx_dir, tmp_path):
    cfg = sweep_with_pictures(idx_dir)
    results = S.run_sweep(cfg, tmp_path / "sw", progress=False)
    assert all(r["status"] == "ok" and r["done"] == ["train", "evaluate", "pictures"] for r in results), results
    assert all(r["done"] == [] for r in S.run_sweep(cfg, tmp_path / "sw", progress=False))
    other = sweep_with_pictures(idx_dir, seed=3)
    assert all(r["done"] == ["pictures"] for r in S.run_sweep(other, tmp_path / "sw", overwrite=True, progress=False))


def test_the_report_shows_current_pictures_only(idx_dir, tmp_path):
    sw = tmp_path / "sw"
    S.run_sweep(sweep_with_pictures(idx_dir), sw, progress=False)
    runs = sorted((sw / "runs").iterdir())
    page = make_report(sw).read_text()
    assert "Samples, reconstructions and latent space" in page
    for run_dir in runs:  # every picture of every run, inlined
        for png in pictures(run_dir).values():
            assert f"base64,{base64.b64encode(png).decode()}" in page
    first, second = runs
    RunDir(first).picture_path("samples").write_bytes(pictures(second)["samples"])  # not the one its record names
    page = make_report(sw).read_text()
    assert "samples.png is not the picture pictures.json describes" in page
    assert base64.b64encode(pictures(second)["latents"]).decode() in page
    cfg = load_run(second).config
    train(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})}),
        second,
        resume=True,
        progress=False,
    )  # one more epoch: its pictures are stale
    page = make_report(sw).read_text()
    assert base64.b64encode(pictures(second)["latents"]).decode() not in page
    assert "stale pictures.json (computed at epoch 2, the run is at epoch 3)" in page
    RunDir(first).record_path("pictures").unlink()
    page = make_report(sw).read_text()
    assert "Samples, reconstructions" not in page and "base64,iVBOR" in page  # the section is gone, the figures stay
    assert pictures_section(sw, []) == ""


def test_the_stage_tells_its_progress_in_plain_lines_off_a_terminal(made, run, capsys, monkeypatch):
    monkeypatch.delenv("SMVI_PROGRESS", raising=False)
    _, _, data = made
    P.pictures_run(run, SMALL, data=data, progress=True)
    err = capsys.readouterr().err
    assert f"pictures {run.name}" in err and "done" in err, err
    assert "\r" not in err and "%|" not in err, "a bar was written where no terminal reads it"
