"""`smvi evaluate` and `smvi convergence` on a tiny trained run: the records they write and how they refuse."""

from __future__ import annotations

import math

import pytest

from conftest import TINY_AIS, invoke
from smvi.data.loading import fixed_subset, load_data
from smvi.settings.stages import AISConfig, EvalConfig
from smvi.stages.evaluate import evaluate_run
from smvi.store.rundir import RunDir

TINY = [
    "--set",
    "elbo_samples=20",
    "--set",
    "dsm_samples=4",
    "--set",
    "iwae_k=20",
    "--set",
    "ais.chains=2",
    "--set",
    "ais.leapfrog_steps=2",
    "--set",
    "batch_size=16",
]


def test_evaluate_writes_every_estimate_per_image_with_standard_errors(trained, idx_dir):
    r = invoke("evaluate", trained, "--n-test", 24, "--n-train", 16, "--ais-steps", 20, "--no-progress", *TINY)
    assert r.exit_code == 0, r.output
    rd = RunDir(trained)
    e = rd.read_record("eval")
    assert e.header.epoch == 3 and e.header.fingerprint == rd.fingerprint() and e.header.schema_ == "smvi-eval-2"
    assert e.header.settings["ais"]["steps"] == 20 and e.header.settings["n_test"] == 24
    # acceptance beside the estimate; off target (this tiny model wants a far larger step than 0.05 ×1.02^19): why
    off = [f"{n} split: AIS acceptance {e.splits[n].ais_acceptance:.2f} is above" for n in ("test", "train")]
    assert [n[: len(o)] for n, o in zip(e.notes, off, strict=False)] == off
    assert all("ais.adapt=dual_averaging" in n for n in e.notes)
    assert f"(acceptance {e.splits['test'].ais_acceptance:.2f})" in r.output and f"note: {e.notes[0]}" in r.output
    data = load_data("idx", idx_dir)
    for name, split in e.splits.items():
        images = data.test_x if name == "test" else data.train_x
        assert split.indices == fixed_subset(len(images), split.n, 0).tolist()
        p = split.per_image
        for key in ("elbo", "d_sm", "iwae", "ais", "gap"):
            values = getattr(p, key)
            assert len(values) == split.n and getattr(split, key).mean == pytest.approx(sum(values) / split.n)
            assert getattr(split, key).se > 0
        assert p.gap == pytest.approx([a - b for a, b in zip(p.ais, p.elbo, strict=True)])
        assert 0 < split.ais_acceptance <= 1
    assert e.work["gradient_evaluations"] == 40 * 2 * 20 * 2


def test_a_points_estimates_do_not_depend_on_its_batch_mates(trained, idx_dir):
    """Counter-based noise per point for every estimator: batches of 16 and of 5 give the same per-image values, up to
    float32 rounding in the batched matrix products (relative 1e-6; another seed moves them by far more)."""
    data = load_data("idx", idx_dir)
    ais = AISConfig(steps=5, chains=2, leapfrog_steps=2)
    cfg = EvalConfig(n_test=16, n_train=0, elbo_samples=30, dsm_samples=6, iwae_k=10, ais=ais, batch_size=16)
    a = evaluate_run(trained, cfg, data=data, progress=False).splits["test"].per_image
    b = (
        evaluate_run(trained, cfg.model_copy(update={"batch_size": 5}), data=data, overwrite=True, progress=False)
        .splits["test"]
        .per_image
    )
    for key in ("elbo", "d_sm", "iwae", "ais"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-6), key
    c = (
        evaluate_run(trained, cfg.model_copy(update={"seed": 1}), data=data, overwrite=True, progress=False)
        .splits["test"]
        .per_image
    )
    for key in ("elbo", "d_sm"):  # the seed does reach them
        assert getattr(c, key) != pytest.approx(getattr(a, key), rel=1e-4), key


def test_evaluate_refuses_to_overwrite_and_bad_run_dirs(trained, tmp_path):
    args = ("--n-test", 8, "--n-train", 0, "--ais-steps", 5, "--no-progress", *TINY)
    assert invoke("evaluate", trained, *args).exit_code == 0
    before = (trained / "eval.json").read_bytes()
    r = invoke("evaluate", trained, *args)
    assert r.exit_code == 1 and "--overwrite" in r.output and (trained / "eval.json").read_bytes() == before
    assert invoke("evaluate", trained, *args, "--overwrite").exit_code == 0
    r = invoke("evaluate", tmp_path / "nothing", *args)
    assert r.exit_code == 1 and "does not exist" in r.output
    r = invoke("evaluate", trained, "--set", "ais_step=5")
    assert r.exit_code == 1 and "unknown key" in r.output
    r = invoke("evaluate", trained, "--n-test", 100000, "--no-progress", "--overwrite")
    assert r.exit_code == 1 and "lower it" in r.output  # not silently fewer points


def test_convergence_brackets_simulated_data(trained):
    """BDMC: E[upper] ≥ log p(x) ≥ E[lower], so the mean gap over 40 points is ≥ 0 up to noise; 4 SE is a
    one-sided false-alarm rate of 3e-5 per check for a normal mean. More steps must not widen it beyond the same
    budget."""
    r = invoke("convergence", trained, "--steps", "5,20", "--n-points", 40, "--no-progress", *TINY_AIS)
    assert r.exit_code == 0, r.output
    c = RunDir(trained).read_record("convergence")
    assert [b.steps for b in c.bdmc] == [5, 20] and len(c.ladder.means) == 2 and c.header.settings["n_points"] == 40
    assert all(b.gap > -4 * b.gap_se for b in c.bdmc)
    b5, b20 = c.bdmc
    assert b20.gap < b5.gap + 4 * math.hypot(b5.gap_se, b20.gap_se)
    r = invoke("convergence", trained, "--steps", "5,x")
    assert r.exit_code == 2 and "comma-separated" in r.output
    r = invoke("convergence", trained, "--set", "ais_chains=2")
    assert r.exit_code == 1 and "unknown key" in r.output  # its own config: no silently ignored eval keys
