"""smvi ssl-refined: the refined means reach the closed-form posterior mean, the stage scores the encoder means the ssl
stage saves beside the refined ones on the same images and subsets, both files rescore to the record's tables, and the
command line reports and refuses as the other stages do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smvi.core.families import location
from smvi.settings.run import ConfigError, build_config
from smvi.settings.stages import RefinedSSLConfig
from smvi.stages.gaps import fit_local
from smvi.stages.ssl import SSLConfig, ssl_run
from smvi.stages.ssl_refined import refine_means, ssl_refined_run
from smvi.stages.ssl_robust import SSLFeatures, rescore, sha256
from smvi.store.rundir import RunDir
from test_gaps import lg
from test_ssl import trained_for_ssl

SMALL = {"sizes": [20, 50], "seeds": [0, 1], "test_size": 100, "cv_folds": 2, "n_jobs": 1}


def test_refined_means_reach_the_posterior_mean_and_gain_elbo():
    """For a Gaussian posterior the diagonal family's best member has the posterior's mean (KL(q‖p) is minimized at
    the matching mean for any fixed diagonal covariance), so a long enough local fit moves the encoder's means onto
    it; in batches with their own seeds."""
    m, x = lg("diagonal")
    exact = m.posterior(x).mean
    start = (location(m.encode(x)) - exact).abs().max()
    r = refine_means(m, x, steps=3000, batch_size=7)  # 3 batches of 7, 7, 6 images
    assert r.means.shape == (20, 3) and r.gain.shape == (20,) and r.skipped == 0
    err = np.abs(r.means - exact.numpy()).max()
    assert start > 0.1 and err < 0.02 * float(start) + 1e-3, (float(start), err)
    assert (r.gain > 0).all()


def test_one_batch_is_the_local_fit_itself():
    m, x = lg("diagonal", seed=2)
    r = refine_means(m, x, steps=50, batch_size=len(x), seed=4)
    fit = fit_local(m, x, steps=50, window=50, seed=4)
    assert np.array_equal(r.means, location(fit.q).double().numpy())
    assert np.array_equal(r.gain, fit.last_gain.double().numpy())


# The toy's refined means (4-d, 20 labeled images) are linearly separable, so the largest-C logistic fits run to lbfgs's
# iteration cap; the study's 50-d features on 600+ images do not (its SSL logs have no such warning).
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_stage_scores_the_ssl_stages_encoder_means_beside_the_refined_ones(idx_dir, tmp_path):
    run = tmp_path / "run"
    _, data = trained_for_ssl(idx_dir, run)
    cfg = build_config(RefinedSSLConfig, {**SMALL, "steps": 30, "n_samples": 4, "batch_size": 64})
    out = ssl_refined_run(run, cfg, data=data, progress=False)
    rd = RunDir(run)
    assert rd.read_record("ssl_refined") == out and out.run == {"lam": 0.1, "seed": 3}
    # the ssl stage's robust features of the same images: the encoder file holds exactly them
    ssl_run(run, build_config(SSLConfig, {**SMALL, "protocol": "robust"}), data=data, progress=False)
    ssl = SSLFeatures.from_bytes(rd.array_path("ssl_features").read_bytes())
    files = {}
    for which, block in (("encoder", out.encoder), ("refined", out.refined)):
        path = rd.array_path(f"ssl_refined_{which}")
        assert block.features_file.file == path.name and block.features_file.sha256 == sha256(path.read_bytes())
        files[which] = SSLFeatures.from_bytes(path.read_bytes())
        again = rescore(path, cfg.protocol(), sha256_hex=block.features_file.sha256)
        assert again.table() == [r.model_dump() for r in block.table]
    enc, ref = files["encoder"], files["refined"]
    for key in ("train_index", "train_x", "test_index", "test_x", "test_y", "unlabeled_mean", "unlabeled_var"):
        assert np.array_equal(getattr(enc, key), getattr(ssl, key)), key
        if key not in ("train_x", "test_x"):
            assert np.array_equal(getattr(ref, key), getattr(enc, key)), key  # same images, labels and scaling
    assert not np.array_equal(ref.train_x, enc.train_x) and not np.array_equal(ref.test_x, enc.test_x)
    assert out.fit.images == len(enc.train_index) + 100 and out.fit.gain.mean > 0 and out.fit.skipped == 0
    assert len(out.encoder.table) == len(out.refined.table) == 3 * 2 * 2


def test_settings_reject_unknown_keys_and_give_the_robust_protocol():
    with pytest.raises(ConfigError, match="nope"):
        build_config(RefinedSSLConfig, sets=("nope=1",))
    p = RefinedSSLConfig().protocol()
    assert p.protocol == "robust" and p.seeds == (0, 1, 2, 3, 4) and p.test_size == 2000 and p.inputs == "binarized"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # as above
def test_smvi_ssl_refined_from_the_cli_and_its_refusals(trained, tmp_path):
    from conftest import invoke

    args = ("--no-progress", "--test-size", 64, "--steps", 5, "--set", "sizes=[20]", "--set", "seeds=[0,1]")
    r = invoke("ssl-refined", trained, *args, "--set", "cv_folds=2", "--set", "n_samples=2")
    assert r.exit_code == 0, r.output
    assert "refined − encoder" in r.output and "rbf_svm" in r.output and "ELBO gain" in r.output
    path = RunDir(trained).record_path("ssl_refined")
    before = path.read_bytes()
    again = invoke("ssl-refined", trained, *args)
    assert again.exit_code == 1 and again.output.startswith("error: ") and "--overwrite" in again.output
    bad = invoke("ssl-refined", trained, "--no-progress", "--overwrite", "--steps", 0)
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1 and "steps" in bad.output
    assert path.read_bytes() == before  # refusals leave the record as it was
    torch.manual_seed(0)
