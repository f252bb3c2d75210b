"""precision="bf16" in the estimators: AIS with a bf16 leapfrog force stays exact (the same calibrated tolerance as
fp32 against the closed form), HMC with a reduced-precision or even deliberately wrong deterministic force keeps its
target invariant, bf16 IWAE stays within its accuracy bound, and unsupported set-ups are refused in one line.

Tolerances follow tests/test_estimators.py (Student-t critical values, Bonferroni, ALPHA = 1e-4 per test).
"""

from __future__ import annotations

import pytest
import torch

import smvi
from smvi.core.estimators import ais, ais_ladder, bdmc, check_precision, iwae_bound, native_bf16, simulate
from smvi.core.estimators import precision as precision_mod
from smvi.core.models import LinearGaussian
from test_estimators import crit, grouped_log_mean, mean_se, near_posterior_encoder

AIS = dict(chains=16, leapfrog_steps=5)


@pytest.fixture(scope="module")
def lg64() -> LinearGaussian:
    return LinearGaussian.random(x_dim=6, z_dim=3, seed=1).requires_grad_(False)


@pytest.fixture(scope="module")
def lg32(lg64) -> LinearGaussian:
    """The same model in float32: autocast only touches float32 products."""
    return LinearGaussian.random(x_dim=6, z_dim=3, seed=1).float().requires_grad_(False)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    cfg = smvi.ModelConfig(encoder_hidden=(32,), decoder_hidden=(32,), z_dim=4, decoder_last_scale=1.0)
    return smvi.VAE(x_dim=20, config=cfg).requires_grad_(False)


# ---- AIS / BDMC ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_ais_matches_exact_log_marginal_in_both_precisions(lg64, lg32, precision):
    x, _ = simulate(lg64, 6, seed=4)
    res = ais(lg32, x.float(), steps=200, chains=128, leapfrog_steps=5, seed=1, precision=precision)
    est, se = grouped_log_mean(res.log_weights)
    exact = lg64.log_marginal(x)  # in float64, from the float64 twin
    assert ((est - exact).abs() <= crit(6, 127) * se + se**2).all(), (est - exact, se)
    assert res.log_px.dtype == torch.float64 and res.settings["precision"] == precision
    assert 0.3 < res.acceptance < 0.95


def test_bf16_ais_really_uses_bf16_and_is_reproducible(lg64, lg32):
    x, _ = simulate(lg64, 4, seed=5)
    kw = dict(steps=30, seed=3, **AIS)
    a, b = ais(lg32, x.float(), precision="bf16", **kw), ais(lg32, x.float(), precision="bf16", **kw)
    assert torch.equal(a.log_weights, b.log_weights)
    assert not torch.equal(a.log_weights, ais(lg32, x.float(), **kw).log_weights)  # the force did change


def test_fp32_stays_fp32_inside_a_callers_autocast_or_matmul_setting():
    torch.manual_seed(0)
    cfg = smvi.ModelConfig(encoder_hidden=(64,), decoder_hidden=(64, 64), z_dim=4, decoder_last_scale=1.0)
    model = smvi.VAE(x_dim=20, config=cfg).requires_grad_(False)
    x, _ = simulate(model, 8, seed=1)
    kw = dict(steps=10, seed=0, **AIS)
    plain, plain_iw = ais(model, x, **kw), iwae_bound(model, x, k=32, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, inside_iw = ais(model, x, **kw), iwae_bound(model, x, k=32, seed=0)
    assert torch.equal(inside.log_weights, plain.log_weights) and torch.equal(inside_iw, plain_iw)
    z = torch.randn(8 * 18, 4)
    exact_logits = model.decoder(z)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        if torch.equal(model.decoder(z), exact_logits):
            pytest.skip("this CPU's fp32 products ignore set_float32_matmul_precision('medium')")
        medium, medium_iw = ais(model, x, **kw), iwae_bound(model, x, k=32, seed=0)
        assert torch.get_float32_matmul_precision() == "medium"  # the caller's setting is restored
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(medium.log_weights, plain.log_weights) and torch.equal(medium_iw, plain_iw)


def test_bf16_bdmc_sandwiches_exact_log_px_and_ladder_passes_precision(lg64, lg32):
    x, z = simulate(lg64, 64, seed=6)
    exact = lg64.log_marginal(x)
    res = bdmc(lg32, x.float(), z.float(), steps=30, precision="bf16", **AIS)
    z1 = crit(2, 63, one_sided=True)
    m, se = mean_se(res.lower - exact)
    assert m <= z1 * se, ("lower bound above log p(x)", m, se)
    m, se = mean_se(res.upper - exact)
    assert m >= -z1 * se, ("upper bound below log p(x)", m, se)
    assert res.forward.settings["precision"] == res.reverse.settings["precision"] == "bf16"
    lad = ais_ladder(lg32, x[:4].float(), steps=(2, 5), precision="bf16", **AIS)
    assert all(r.settings["precision"] == "bf16" for r in lad.results)


# ---- IWAE ---------------------------------------------------------------------------------------------------------
def test_bf16_iwae_matches_exact_log_marginal(lg64):
    model = near_posterior_encoder(lg64)
    m32 = model.float()
    x, _ = simulate(model, 8, seed=0)
    groups = torch.stack([iwae_bound(m32, x.float(), k=64, seed=s, precision="bf16") for s in range(64)])
    est, se = grouped_log_mean(groups)
    exact = model.log_marginal(x)
    assert ((est - exact).abs() <= crit(8, 63) * se + se**2).all(), (est - exact, se)


def test_bf16_iwae_is_within_rounding_of_fp32_on_the_same_samples(vae):
    """Paired, same samples: each log p(x|z) changes by the bf16 network's rounding only. The bound allows every
    one of the 20 pixels' log-likelihood terms a relative error of 2⁻⁷ (two bf16 roundings) of the total."""
    x, _ = simulate(vae, 24, seed=0)
    a = iwae_bound(vae, x, k=100, seed=0)
    b = iwae_bound(vae, x, k=100, seed=0, precision="bf16")
    assert b.dtype == torch.float64 and not torch.equal(a, b)
    assert ((b - a).abs() <= 2.0**-7 * a.abs()).all(), (b - a).abs().max()


# ---- refusals -------------------------------------------------------------------------------------------------------
def test_bad_or_unsupported_precision_is_refused_in_one_line(lg64, lg32, monkeypatch):
    x, z = simulate(lg64, 3, seed=8)
    with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'bf16'\], got 'fp16'"):
        ais(lg32, x.float(), steps=5, precision="fp16")
    for call in (
        lambda: ais(lg64, x, steps=5, precision="bf16"),
        lambda: bdmc(lg64, x, z, steps=5, precision="bf16"),
        lambda: iwae_bound(lg64, x, k=5, precision="bf16"),
    ):
        with pytest.raises(ValueError, match="needs a float32 model") as err:
            call()
        assert "\n" not in str(err.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(ValueError, match=r"cannot run on cuda: Tesla V100 has no bf16 support.*use precision='fp32'"):
        check_precision("bf16", torch.device("cuda"), torch.float32)
    check_precision("fp32", torch.device("cuda"), torch.float32)  # fp32 needs nothing


def test_cuda_without_cuda_is_refused_and_cpu_always_runs():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_precision("bf16", torch.device("cuda"), torch.float32)
    check_precision("bf16", torch.device("cpu"), torch.float32)  # CPU autocast always supports bf16
    assert precision_mod._bf16_unsupported(torch.device("cpu")) is None
    assert isinstance(native_bf16("cpu"), bool)


def test_cpu_without_bf16_units_runs_and_warns(lg64, lg32, monkeypatch):
    x, _ = simulate(lg64, 2, seed=9)
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning, match="without bf16 units.*emulated"):
        res = ais(lg32, x.float(), steps=5, precision="bf16", **AIS)
    assert torch.isfinite(res.log_px).all() and res.settings["precision"] == "bf16"
