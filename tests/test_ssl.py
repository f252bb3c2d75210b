"""Semi-supervised evaluation: exact class balance, no test label in model selection, reproducibility, clear errors,
and an end-to-end run on a tiny trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import smvi.stages.ssl as ssl
from smvi.core.models import VAE
from smvi.data.loading import ImageData, load_data
from smvi.settings.run import ConfigError, RunConfig, build_config
from smvi.stages.ssl import SSLConfig, SSLError, balanced_subset, encoder_features, ssl_eval, ssl_run
from smvi.stages.train import train
from smvi.store.rundir import RunDir, fingerprint

FAST = dict(sizes=(20, 50), seeds=(0, 1, 2), C_grid=(1.0, 10.0), gamma_grid=(0.3, 1.0), folds=2)


def clusters(n_per_class: int, seed: int, k: int = 10, d: int = 6, spread: float = 0.6):
    """Gaussian clusters: class c has mean 2·e_c-ish (random, fixed) and unit noise scaled by ``spread``."""
    centres = np.random.default_rng(99).normal(0, 2.0, (k, d))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    return centres[y] + spread * rng.standard_normal((len(y), d)), y


@pytest.fixture(scope="module")
def data():
    xtr, ytr = clusters(40, seed=1)
    xte, yte = clusters(30, seed=2)
    return xtr, ytr, xte, yte


def test_labeled_sets_are_exactly_balanced_and_nested():
    y = np.random.default_rng(0).integers(0, 10, 2000)
    for seed in (0, 1):
        small, large = balanced_subset(y, 60, seed), balanced_subset(y, 300, seed)
        assert np.bincount(y[small], minlength=10).tolist() == [6] * 10
        assert np.bincount(y[large], minlength=10).tolist() == [30] * 10
        assert len(np.unique(large)) == 300 and set(small) <= set(large)
    assert not np.array_equal(balanced_subset(y, 60, 0), balanced_subset(y, 60, 1))


@pytest.mark.parametrize(
    "sizes, match",
    [
        ((25,), "not divisible by the 10 classes"),
        ((500,), "needs 50 examples per class but class"),
        ((10,), "fewer than 2 CV folds"),
    ],
)
def test_bad_sizes_raise_one_line_errors(data, sizes, match):
    with pytest.raises(SSLError, match=match) as e:
        ssl_eval(*data, **{**FAST, "sizes": sizes})
    assert "\n" not in str(e.value)


def test_separable_clusters_are_classified_and_results_serialize(data):
    r = ssl_eval(*data, **FAST)
    assert r.sizes == (20, 50) and r.n_train == 400 and r.n_test == 300 and r.n_features == 6
    for s in r.sizes:
        assert len(r.accuracy[s]) == 3 and r.mean[s] > 0.8
        assert r.std[s] == pytest.approx(np.std(r.accuracy[s], ddof=1))
        assert all(x.C in FAST["C_grid"] and np.isclose(x.gamma * 6, FAST["gamma_grid"]).any() for x in r.selection[s])
    j = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert j["sizes"]["50"]["accuracy"] == list(r.accuracy[50]) and j["seeds"] == [0, 1, 2]


def test_seeds_reproduce_and_threads_do_not_matter(data):
    a = ssl_eval(*data, **FAST, n_jobs=1)
    b = ssl_eval(*data, **FAST, n_jobs=2)
    assert a.accuracy == b.accuracy and a.selection == b.selection


def test_model_selection_sees_only_the_labeled_training_examples(data, monkeypatch):
    xtr, ytr, xte, yte = data
    calls = []
    real = ssl.select_hyperparameters

    def spy(x, y, **kw):
        calls.append((x.copy(), y.copy()))
        return real(x, y, **kw)

    monkeypatch.setattr(ssl, "select_hyperparameters", spy)
    clean = ssl_eval(xtr, ytr, xte, yte, **FAST)
    # rows as the scaled training set holds them: scaling uses training statistics only
    centre, scale = ssl.feature_scaler(xtr, "global")
    scaled_train, scaled_test = (xtr - centre) / scale, (xte - centre) / scale
    train_rows = {r.tobytes() for r in scaled_train}
    test_rows = {r.tobytes() for r in scaled_test}
    assert len(calls) == len(FAST["sizes"]) * len(FAST["seeds"])
    for x, y in calls:
        assert len(x) in FAST["sizes"] and np.bincount(y).min() == np.bincount(y).max()
        rows = {r.tobytes() for r in x}
        assert rows <= train_rows and not rows & test_rows

    # corrupting every test label changes the accuracies but not one chosen hyper-parameter
    bad = ssl_eval(xtr, ytr, xte, (yte + 1) % 10, **FAST)
    assert bad.selection == clean.selection
    assert all(bad.mean[s] < 0.2 < clean.mean[s] for s in FAST["sizes"])


def test_ssl_config_rejects_unknown_keys_and_bad_values():
    assert SSLConfig().sizes == (600, 1000, 3000) and SSLConfig().seeds == (0, 1, 2, 3, 4)
    with pytest.raises(ConfigError, match="sizez"):
        build_config(SSLConfig, sets=["sizez=[600]"])
    with pytest.raises(ConfigError, match="C_grid"):
        build_config(SSLConfig, sets=["C_grid=[0, 1]"])
    with pytest.raises(ConfigError, match="seeds"):
        build_config(SSLConfig, sets=["seeds=[1, 1]"])
    cfg = build_config(SSLConfig, sets=["cv_folds=5", "sizes=[100]"], overrides={"test_size": None})
    assert (cfg.cv_folds, cfg.sizes, cfg.test_size) == (5, (100,), None)


def test_encoder_features_are_the_encoder_means():
    model = VAE(784, RunConfig().model.model_copy(update={"z_dim": 3, "encoder_hidden": (8,), "decoder_hidden": (8,)}))
    images = torch.rand(50, 784)
    gray = encoder_features(model, images, mode="gray", batch_size=16)
    assert gray.shape == (50, 3) and gray.dtype == np.float64
    assert np.allclose(gray, model.encode(images).mean.detach().double().numpy(), atol=1e-6)
    b1 = encoder_features(model, images, mode="binarized", seed=3)
    assert np.array_equal(b1, encoder_features(model, images, mode="binarized", seed=3))
    assert not np.allclose(b1, encoder_features(model, images, mode="binarized", seed=4))


def trained_for_ssl(idx_dir, run_dir) -> tuple[RunConfig, ImageData]:
    """A one-epoch run (z_dim 4, λ = 0.1, seed 3) trained in ``run_dir`` on the synthetic IDX data: its config and the
    data."""
    cfg = RunConfig.model_validate(
        {
            "model": {"z_dim": 4, "encoder_hidden": [32], "decoder_hidden": [32]},
            "data": {"dataset": "idx", "data_dir": str(idx_dir), "monitor_size": 64},
            "train": {"epochs": 1, "batch_size": 64, "lam": 0.1, "seed": 3},
        }
    )
    data = load_data("idx", idx_dir)
    train(cfg, run_dir, progress=False, data=data)
    return cfg, data


def test_ssl_run_writes_ssl_json(idx_dir, tmp_path):
    cfg, data = trained_for_ssl(idx_dir, tmp_path / "run")
    settings = SSLConfig(
        sizes=(20, 50), seeds=(0, 1), C_grid=(1.0, 10.0), gamma_grid=(1.0,), cv_folds=2, test_size=100, n_jobs=1
    )
    out = ssl_run(tmp_path / "run", settings, data=data, progress=False)
    rd = RunDir(tmp_path / "run")
    assert rd.read_record("ssl") == out and out.header.fingerprint == fingerprint(cfg) and out.header.epoch == 1
    saved = json.loads(rd.record_path("ssl").read_text())
    assert saved["run"] == {"lam": 0.1, "seed": 3}
    assert saved["header"]["settings"]["sizes"] == [20, 50] and saved["header"]["settings"]["inputs"] == "binarized"
    for kind in ("features", "raw_pixels"):
        assert saved[kind]["n_test"] == 100 and len(saved[kind]["sizes"]["50"]["accuracy"]) == 2
    assert saved["features"]["n_features"] == 4 and saved["raw_pixels"]["n_features"] == 784
