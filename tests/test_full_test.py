"""The whole-test-set IWAE of `smvi evaluate` (eval.iwae_full_test_k) and the AIS precision setting: batch
independence, agreement with the subset's IWAE on shared images, ELBO ≤ IWAE_k, and old records staying current."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_AIS, TINY_EVALUATE, invoke
from smvi.data.loading import binarize_fixed, load_data
from smvi.settings.stages import AISConfig, ConvergenceConfig, EvalConfig
from smvi.stages.evaluate import evaluate_run, evaluation_indices, full_test_set
from smvi.store.records import staleness
from smvi.store.rundir import RunDir

AIS = AISConfig(steps=3, chains=2, leapfrog_steps=2)
CFG = EvalConfig(
    n_test=24, n_train=0, elbo_samples=50, dsm_samples=2, iwae_k=40, iwae_full_test_k=40, ais=AIS, batch_size=16
)


def test_full_test_set_holds_every_image_once_and_the_subset_binarized_as_the_subset():
    images = torch.rand(50, 6)
    idx, x = full_test_set(images, 10, 3, 7)
    assert sorted(idx.tolist()) == list(range(50)) and len(x) == 50
    sub = evaluation_indices(50, 10, 3)
    assert idx[:10].tolist() == sub.tolist() and torch.equal(x[:10], binarize_fixed(images[sub], 7))
    again = full_test_set(images, 10, 3, 7)[1]
    assert torch.equal(x, again) and not torch.equal(x, full_test_set(images, 10, 3, 8)[1])


def test_full_test_iwae_is_the_subsets_iwae_on_shared_images_and_above_the_elbo(trained, idx_dir):
    data = load_data("idx", idx_dir)
    e = evaluate_run(trained, CFG, data=data, progress=False)
    f, split = e.full_test, e.splits["test"]
    assert f.k == 40 and f.n == len(data.test_x) == len(f.per_image) and sorted(f.indices) == list(range(f.n))
    full = dict(zip(f.indices, f.per_image, strict=True))
    # same binary images, same seed, same k: the same per-image values (up to float32 rounding in batched products)
    assert [full[i] for i in split.indices] == pytest.approx(split.per_image.iwae, rel=1e-6)
    # ELBO ≤ IWAE_k per image in expectation; the 50-sample ELBO mean sits below the 40-sample IWAE mean by far more
    # than their noise (a single image may cross, the mean over 24 may not)
    elbo = sum(split.per_image.elbo) / split.n
    assert elbo < sum(full[i] for i in split.indices) / split.n
    assert f.iwae.mean == pytest.approx(sum(f.per_image) / f.n) and f.iwae.se > 0
    back = RunDir(trained).read_record("eval")
    assert back.full_test == f


def test_full_test_iwae_does_not_depend_on_the_batch(trained, idx_dir):
    data = load_data("idx", idx_dir)
    a = evaluate_run(trained, CFG, data=data, progress=False).full_test
    b = evaluate_run(
        trained, CFG.model_copy(update={"batch_size": 7}), data=data, overwrite=True, progress=False
    ).full_test
    assert a.indices == b.indices and a.per_image == pytest.approx(b.per_image, rel=1e-6)
    c = evaluate_run(trained, CFG.model_copy(update={"seed": 1}), data=data, overwrite=True, progress=False).full_test
    assert c.per_image != pytest.approx(a.per_image, rel=1e-4)  # the seed does reach it


def test_records_without_the_new_settings_stay_current(trained, idx_dir):
    """A record written before iwae_full_test_k and ais.precision existed (its settings lack both, no full_test)
    validates to what it ran with: no full-test IWAE (the key's default) and fp32 (not today's default, "auto"), so
    it is current for those settings -- and stale for a request of full-test IWAE, bf16 or auto."""
    data = load_data("idx", idx_dir)
    fp32 = AIS.model_copy(update={"precision": "fp32"})
    cfg = CFG.model_copy(update={"iwae_full_test_k": 0, "ais": fp32})
    evaluate_run(trained, cfg, data=data, progress=False)
    rd = RunDir(trained)
    tree = json.loads(rd.record_path("eval").read_text())
    del tree["header"]["settings"]["iwae_full_test_k"], tree["header"]["settings"]["ais"]["precision"]
    del tree["full_test"]
    rd.record_path("eval").write_text(json.dumps(tree))
    rec = rd.read_record("eval")
    assert rec.full_test is None
    assert staleness(rec, rd.fingerprint(), 3, cfg) is None
    assert staleness(rec, rd.fingerprint(), 3, cfg.model_copy(update={"iwae_full_test_k": 10})) is not None
    for precision in ("bf16", "auto"):
        other = cfg.model_copy(update={"ais": AIS.model_copy(update={"precision": precision})})
        assert staleness(rec, rd.fingerprint(), 3, other) == "computed with other settings", precision
    assert rec.computed_precision == "fp32"


def test_ais_precision_reaches_the_records_from_the_cli(trained):
    r = invoke("evaluate", trained, "--ais-precision", "bf16", *TINY_EVALUATE)
    assert r.exit_code == 0, r.output
    e = RunDir(trained).read_record("eval")
    assert e.header.settings["ais"]["precision"] == "bf16" and e.full_test.precision == "bf16"
    assert "whole test set" in r.output
    ladder = ("--steps", "2,3", "--n-points", 4, "--ais-precision", "bf16", "--no-progress")
    r = invoke("convergence", trained, *ladder, *TINY_AIS)
    assert r.exit_code == 0, r.output
    assert RunDir(trained).read_record("convergence").header.settings["ais"]["precision"] == "bf16"
    assert ConvergenceConfig().ais.kwargs()["precision"] == "auto"  # reaches ais/bdmc/ais_ladder by name
    r = invoke("evaluate", trained, "--ais-precision", "fp16")
    assert r.exit_code == 2 and "fp16" in r.output


def test_the_paper_preset_asks_for_the_whole_test_set_and_a_sweep_can_set_the_precision():
    from smvi.settings.run import build_config
    from smvi.studies.presets import PRESETS
    from smvi.studies.sweep import SweepConfig

    assert PRESETS["paper"].eval.iwae_full_test_k == 1000 and PRESETS["cpu"].eval.iwae_full_test_k == 0
    cfg = build_config(SweepConfig, PRESETS["paper"].model_dump(), sets=["eval.ais.precision=bf16"])
    assert cfg.eval.ais.precision == "bf16" and cfg.eval.ais.kwargs()["precision"] == "bf16"
    with pytest.raises(Exception, match="precision"):
        build_config(SweepConfig, PRESETS["paper"].model_dump(), sets=["eval.ais.precision=fp16"])
