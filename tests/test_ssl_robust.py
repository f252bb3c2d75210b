"""The robust SSL protocol: the growing grid lands inside (or says it could not), each classifier separates separable
clusters, the labeled sets do not depend on the run, the features file round-trips and is what the record names,
rescoring it alone reproduces the record's table, and the paper protocol's records and settings are as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smvi.settings.run import ConfigError, build_config
from smvi.stages.ssl import SSLConfig, balanced_subset, ssl_run
from smvi.stages.ssl_classifiers import CLASSIFIERS, KNN_K, SVM_C, SVM_GAMMA, Axis, grid_search
from smvi.stages.ssl_robust import FeaturesError, SSLFeatures, protocol_images, rescore, sha256
from smvi.store.records import dump_record, parse_record
from smvi.store.rundir import RunDir
from test_ssl import trained_for_ssl

RESULTS = Path(__file__).resolve().parents[1] / "results"
LINE = Axis("a", tuple(float(v) for v in range(10)), (3, 5))
PLANE = (LINE, Axis("b", tuple(float(v) for v in range(8)), (2, 4)))


def clusters(n_per_class: int, seed: int, k: int = 10, d: int = 6, spread: float = 0.6):
    centres = np.random.default_rng(99).normal(0, 2.0, (k, d))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    return centres[y] + spread * rng.standard_normal((len(y), d)), y


# ---- the growing grid -----------------------------------------------------------------------------------------------
def test_the_grid_grows_to_an_interior_optimum_outside_the_start_window():
    calls = []

    def score(a, b):
        calls.append((a, b))
        return -((a - 8) ** 2) - (b - 0) ** 2 * 0.5

    best, value, window = grid_search(score, PLANE)
    assert best == (8, 0) and value == 0.0
    assert window[0] == [3, 9] and window[1] == [0, 4]  # grew right to 9 (past the optimum) and left to the end
    assert len(calls) == len(set(calls))  # every point scored once


def test_an_optimum_past_the_grids_end_is_on_the_edge_and_ties_go_to_the_smaller_value():
    best, _, window = grid_search(lambda a: a, (LINE,))
    assert best == (9,) and window == [[3, 9]]
    best, _, _ = grid_search(lambda a: 1.0, (LINE,))  # flat: the smallest value of the start window, then growth
    assert best == (0,)
    best, _, _ = grid_search(lambda a: float(a >= 4), (LINE,))  # a plateau: its smallest value, interior
    assert best == (4,)


# ---- the classifiers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_each_classifier_separates_separable_clusters_with_an_interior_choice(name):
    x, y = clusters(20, seed=1)
    tx, ty = clusters(30, seed=2)
    fit = CLASSIFIERS[name](x, y, tx, ty, folds=3, seed=0)
    assert fit.accuracy > 0.95 and 0.9 < fit.cv_accuracy <= 1.0
    assert set(fit.params) == set(fit.on_edge) == set(fit.searched)
    for k, v in fit.params.items():
        lo, hi = fit.searched[k]
        assert lo <= v <= hi
    again = CLASSIFIERS[name](x, y, tx, ty, folds=3, seed=0)
    assert again == fit  # deterministic


def test_knn_and_svm_grids_are_the_documented_ones():
    assert SVM_C.values[0] == 0.01 and SVM_C.values[-1] == 1e6 and SVM_GAMMA.values[0] == 1e-4
    assert KNN_K.floor and KNN_K.values[0] == 1


def test_the_knn_vote_is_the_textbook_one():
    from smvi.stages.ssl_classifiers import _knn_predictions

    train_x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    train_y = np.array([0, 0, 1, 1, 1])
    pred = _knn_predictions(train_x, train_y, np.array([[0.4], [10.4]]), (1, 3, 5))
    assert pred[1].tolist() == [0, 1] and pred[3].tolist() == [0, 1] and pred[5].tolist() == [1, 1]


# ---- the labeled sets and the features file -------------------------------------------------------------------------
def test_the_labeled_sets_depend_on_the_labels_and_subset_only():
    y = np.random.default_rng(0).integers(0, 10, 3000)
    keep = protocol_images(y, (60, 100), range(4))
    for i in range(4):
        assert np.isin(balanced_subset(y, 100, i), keep).all()
        assert np.isin(balanced_subset(y, 60, i), balanced_subset(y, 100, i)).all()
    assert np.array_equal(keep, protocol_images(y.copy(), (60, 100), range(4)))


def features(seed: int = 0) -> SSLFeatures:
    x, y = clusters(30, seed=1)
    tx, ty = clusters(20, seed=2)
    keep = protocol_images(y, (20, 50), (0, 1))
    return SSLFeatures(
        train_labels=y,
        train_index=keep,
        train_x=x[keep].astype(np.float32),
        test_index=np.arange(len(tx)),
        test_x=tx.astype(np.float32),
        test_y=ty,
        unlabeled_mean=x.mean(0),
        unlabeled_var=x.var(0),
        inputs="binarized",
    )


def test_the_features_file_round_trips_and_refuses_damage(tmp_path):
    f = features()
    data = f.to_bytes()
    back = SSLFeatures.from_bytes(data)
    for k in ("train_labels", "train_index", "train_x", "test_x", "unlabeled_var"):
        assert np.array_equal(getattr(back, k), getattr(f, k))
    assert back.inputs == "binarized" and back.train_x.dtype == np.float32
    with pytest.raises(FeaturesError, match="not an smvi features file"):
        SSLFeatures.from_bytes(data[: len(data) // 2])
    path = tmp_path / "f.npz"
    path.write_bytes(data)
    cfg = SSLConfig(protocol="robust", sizes=(20, 50), seeds=(0, 1), cv_folds=2)
    with pytest.raises(FeaturesError, match="SHA-256 differs"):
        rescore(path, cfg, sha256_hex="0" * 64)
    with pytest.raises(FeaturesError, match="lacks images"):
        rescore(path, cfg.model_copy(update={"seeds": (0, 1, 7)}))
    with pytest.raises(FeaturesError, match="gray"):
        rescore(path, SSLConfig(protocol="robust", sizes=(20,), seeds=(0,), cv_folds=2, inputs="gray"))


# ---- settings -------------------------------------------------------------------------------------------------------
def test_robust_settings_have_their_own_defaults_and_refuse_paper_only_keys():
    cfg = build_config(SSLConfig, {"protocol": "robust"})
    assert cfg.seeds == tuple(range(20)) and cfg.raw_pixels is False
    assert build_config(SSLConfig, {}) == SSLConfig() and SSLConfig().protocol == "paper"
    for bad, key in ([{"raw_pixels": True}, "ssl.raw_pixels"], [{"C_grid": [1.0, 3.0]}, "ssl.C_grid"]):
        with pytest.raises(ConfigError) as err:
            build_config(SSLConfig, {"protocol": "robust", **bad})
        assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("run", ["lam0_seed0", "lam0.01_seed2"])
def test_a_committed_paper_record_parses_and_is_written_back_unchanged(run):
    path = RESULTS / "paper" / "runs" / run / "ssl.json"
    record = parse_record("ssl", path.read_bytes(), str(path), lambda: "0" * 64)
    assert record.table is None and record.features_file is None
    text, _ = dump_record(record)
    written, committed = json.loads(text), json.loads(path.read_text())
    assert written.keys() == committed.keys()  # no null robust fields in a paper record
    assert {k: v for k, v in written.items() if k != "header"} == {k: v for k, v in committed.items() if k != "header"}
    still = SSLConfig(raw_pixels=record.header.settings["raw_pixels"])  # the sweep's first run alone has the baseline
    assert SSLConfig.model_validate(record.header.settings) == still  # current for the settings it was made with


# ---- the stage, end to end ------------------------------------------------------------------------------------------
def test_the_robust_stage_writes_features_that_rescore_to_its_table(idx_dir, tmp_path):
    _, data = trained_for_ssl(idx_dir, tmp_path / "run")
    settings = build_config(
        SSLConfig,
        {"protocol": "robust", "sizes": [20, 50], "seeds": [0, 1, 2], "cv_folds": 2, "test_size": 100, "n_jobs": 2},
    )
    out = ssl_run(tmp_path / "run", settings, data=data, progress=False)
    rd = RunDir(tmp_path / "run")
    assert rd.read_record("ssl") == out and out.raw_pixels is None
    ff = out.features_file
    path = rd.array_path("ssl_features")
    assert ff.file == path.name and ff.sha256 == sha256(path.read_bytes()) and ff.n_test == 100
    assert len(out.table) == len(CLASSIFIERS) * 2 * 3
    assert {(r.classifier, r.size, r.subset) for r in out.table} == {
        (c, s, i) for c in CLASSIFIERS for s in (20, 50) for i in (0, 1, 2)
    }
    again = rescore(path, settings, sha256_hex=ff.sha256)
    assert [row for row in again.table()] == [r.model_dump() for r in out.table]
    svm = [r for r in out.table if r.classifier == "rbf_svm" and r.size == 50]
    assert out.features.sizes["50"].accuracy == [r.accuracy for r in svm] and out.features.seeds == [0, 1, 2]
    stored = SSLFeatures.from_bytes(path.read_bytes())
    assert np.array_equal(stored.train_index, protocol_images(data.train_y.numpy(), (20, 50), (0, 1, 2)))
    assert stored.train_x.dtype == np.float32 and stored.train_x.shape[1] == 4


def test_smvi_ssl_runs_the_robust_protocol_from_the_cli(trained, tmp_path):
    from conftest import invoke

    r = invoke(
        "ssl",
        trained,
        "--no-progress",
        "--test-size",
        64,
        "--set",
        "protocol='robust'",
        "--set",
        "sizes=[20]",
        "--set",
        "seeds=[0,1]",
        "--set",
        "cv_folds=2",
    )
    assert r.exit_code == 0, r.output
    assert "rbf_svm on μ(x)" in r.output and "knn on μ(x)" in r.output and "grid's edge" in r.output
    assert RunDir(trained).array_path("ssl_features").exists()
    bad = invoke(
        "ssl", trained, "--no-progress", "--overwrite", "--set", "protocol='robust'", "--set", "raw_pixels=true"
    )
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "ssl.raw_pixels" in bad.output
