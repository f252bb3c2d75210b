"""ais.precision = "auto": bf16 where the hardware has bf16 units, else fp32, resolved where the estimators run;
the eval record says which precision ran, and records that predate the setting read as what their settings say
(fp32 when absent). "auto" is the default (issue 26: BDMC gaps and paired estimates unchanged on the paper model),
so a record made before the change, whose settings lack the key, reads as fp32 and is not relabelled."""

from __future__ import annotations

import json

import torch

from conftest import TINY_EVALUATE, invoke
from smvi.core.estimators import ais, iwae_bound, native_bf16, simulate
from smvi.core.estimators import precision as precision_mod
from smvi.core.estimators.precision import resolve_precision
from smvi.core.models import LinearGaussian
from smvi.settings.stages import AISConfig, EvalConfig
from smvi.store.rundir import RunDir


def test_auto_resolves_per_hardware(monkeypatch):
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    lg = LinearGaussian.random(x_dim=4, z_dim=2, seed=0).float().requires_grad_(False)
    x, _ = simulate(lg, 3, seed=0)
    r = ais(lg, x, steps=3, chains=2, precision="auto")
    assert r.settings["precision"] == "fp32"
    assert torch.equal(iwae_bound(lg, x, k=8, seed=0, precision="auto"), iwae_bound(lg, x, k=8, seed=0))
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device: True)
    assert ais(lg, x, steps=3, chains=2, precision="auto").settings["precision"] == "bf16"


def test_auto_is_the_default():
    assert AISConfig().precision == "auto" and EvalConfig().ais.precision == "auto"


def test_the_eval_record_says_which_precision_ran(trained):
    r = invoke("evaluate", trained, "--ais-precision", "auto", *TINY_EVALUATE)
    assert r.exit_code == 0, r.output
    rd = RunDir(trained)
    e = rd.read_record("eval")
    ran = resolve_precision("auto", "cpu")
    assert e.header.settings["ais"]["precision"] == "auto" and e.precision == e.computed_precision == ran
    assert e.full_test.precision == ran
    r = invoke("evaluate", trained, "--ais-precision", "bf16", "--overwrite", *TINY_EVALUATE)
    e = rd.read_record("eval")
    assert e.precision is None and e.computed_precision == "bf16"
    tree = json.loads(rd.record_path("eval").read_text())  # a record from before the setting: fp32
    del tree["header"]["settings"]["ais"]["precision"], tree["precision"]
    rd.record_path("eval").write_text(json.dumps(tree))
    assert rd.read_record("eval").computed_precision == "fp32"
