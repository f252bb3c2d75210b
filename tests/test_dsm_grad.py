"""train.dsm_grad: the D_SM penalty's gradient steered to the encoder or the decoder alone.

On the linear-Gaussian model (float64, the same draws for every objective: one seed before each forward pass),
"encoder" gives the decoder exactly the plain VAE's gradient (λ = 0) and the encoder exactly the full SMVI gradient's
encoder part; "decoder" the mirror; "both" is ``loss.mean().backward()`` bit for bit. The setting is refused where
there is no penalty to steer, keeps the fingerprint of runs that do not set it, and trains through the CLI.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
import torch

import smvi
from conftest import invoke, tiny_train_args
from smvi.core.models import VAE, LinearGaussian
from smvi.core.objectives import backward, smvi_objective
from smvi.settings.run import ConfigError, build_config, load_config
from smvi.store.rundir import fingerprint

LAM = 0.3
RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(params=["diagonal", "full"])
def model(request):
    return LinearGaussian.random(x_dim=6, z_dim=3, seed=1, posterior=request.param)


@pytest.fixture
def x(model):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    return (model.decode(z).mean + 0.7 * torch.randn(5, 6, generator=g, dtype=torch.float64)).detach()


def grads(model, x, lam, dsm_grad="both", n_samples=4) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(decoder's, encoder's) gradients by name after one backward pass at seed 11's draws."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    terms = smvi_objective(model, x, lam=lam, n_samples=n_samples)
    backward(model, terms, lam=lam, dsm_grad=dsm_grad)
    theta = {id(p) for p in model.decoder_parameters()}
    dec, enc = {}, {}
    for name, p in model.named_parameters():
        g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        (dec if id(p) in theta else enc)[name] = g
    return dec, enc


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-10, atol=1e-12) for k in a)


def test_encoder_only_leaves_the_decoder_the_vaes_gradient(model, x):
    vae_dec, vae_enc = grads(model, x, 0.0)
    smvi_dec, smvi_enc = grads(model, x, LAM)
    dec, enc = grads(model, x, LAM, "encoder")
    assert same(dec, vae_dec) and same(enc, smvi_enc)
    assert not same(dec, smvi_dec) and not same(enc, vae_enc)  # the penalty moves both sides: the checks can fail


def test_decoder_only_leaves_the_encoder_the_vaes_gradient(model, x):
    vae_dec, vae_enc = grads(model, x, 0.0)
    smvi_dec, smvi_enc = grads(model, x, LAM)
    dec, enc = grads(model, x, LAM, "decoder")
    assert same(enc, vae_enc) and same(dec, smvi_dec)
    assert not same(enc, smvi_enc) and not same(dec, vae_dec)


def test_both_is_the_losss_backward_bit_for_bit(model, x):
    dec, enc = grads(model, x, LAM, "both")
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    smvi_objective(model, x, lam=LAM, n_samples=4).loss.mean().backward()
    ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.equal((dec | enc)[n], g) for n, g in ref.items())


def test_without_a_penalty_dsm_grad_changes_nothing(model, x):
    assert same(grads(model, x, 0.0, "encoder")[0], grads(model, x, 0.0)[0])
    with pytest.raises(ValueError, match="unknown dsm_grad"):
        grads(model, x, LAM, "theta")


@pytest.mark.parametrize("posterior", ["diagonal", "flow"])
def test_the_vaes_decoder_parameters_are_its_decoder_and_nothing_else(posterior):
    extra = dict(flow_layers=2, flow_hidden=(8,), flow_context=2) if posterior == "flow" else {}
    vae = VAE(20, smvi.ModelConfig(z_dim=3, encoder_hidden=(8,), decoder_hidden=(8,), posterior=posterior, **extra))
    theta = {id(p) for p in vae.decoder_parameters()}
    assert theta == {id(p) for p in vae.decoder.parameters()}
    assert not theta & {id(p) for p in [*vae.encoder.parameters(), *vae.family.parameters()]}


@pytest.mark.parametrize(
    "sets",
    [
        ["train.dsm_grad='encoder'"],
        ["train.objective='iwae'", "train.iwae_k=5", "train.dsm_grad='decoder'"],
        ["train.objective='beta'", "train.beta=0.5", "train.dsm_grad='encoder'"],
    ],
)
def test_dsm_grad_without_a_penalty_is_a_one_line_error(sets):
    with pytest.raises(ConfigError) as err:
        load_config(sets=sets)
    assert "train.dsm_grad" in str(err.value) and "\n" not in str(err.value)


def test_dsm_grad_is_accepted_with_a_learned_lambda():
    cfg = load_config(sets=["train.constraint.target=5.0", "train.dsm_grad='encoder'"])
    assert cfg.train.dsm_grad == "encoder"


def sweep_config(*sets: str):
    from smvi.studies.presets import preset_base
    from smvi.studies.sweep import SweepConfig

    return build_config(SweepConfig, preset_base("quick"), sets=sets)


@pytest.mark.parametrize(
    "grid", [["lams=[0.01, 0.1]"], ["lams=[]", "dsm_targets=[30.0]"], ["lams=[0.01]", "gap_targets=[1.0]"]]
)
def test_a_sweep_checks_dsm_grad_with_its_runs_lambda_not_the_bases(grid):
    """The base run's λ (0) is no run's: every planned run has λ > 0 or a target, so the sweep is accepted, its
    runs steered, and the saved settings keep the base's λ."""
    from smvi.studies.sweep import plan

    sweep = sweep_config(*grid, "run.train.dsm_grad='encoder'")
    assert sweep.run.train.lam == 0 and sweep.run.train.dsm_grad == "encoder"
    runs = plan(sweep)
    assert runs and all(r.config.train.dsm_grad == "encoder" for r in runs)
    assert all(r.config.train.lam > 0 or r.config.train.constraint.target is not None for r in runs)


@pytest.mark.parametrize("base_lam", [[], ["run.train.lam=0.01"]])
def test_a_sweep_with_a_lambda_0_run_refuses_dsm_grad_in_one_line(base_lam):
    with pytest.raises(ConfigError) as err:
        sweep_config("lams=[0, 0.01]", "run.train.dsm_grad='decoder'", *base_lam)
    assert "lam0_seed0" in str(err.value) and "train.dsm_grad" in str(err.value) and "\n" not in str(err.value)


def test_a_sweep_still_refuses_dsm_grad_without_smvi():
    with pytest.raises(ConfigError, match="train.dsm_grad"):
        sweep_config("lams=[0.01]", "run.train.objective='iwae'", "run.train.iwae_k=5", "run.train.dsm_grad='encoder'")


def test_runs_that_do_not_set_it_keep_their_fingerprint():
    path = RESULTS / "paper" / "runs" / "lam0.01_seed0"
    cfg = load_config(path / "config.toml")
    recorded = json.loads((path / "eval.json").read_text())["header"]["fingerprint"]
    assert fingerprint(cfg) == recorded
    assert fingerprint(load_config(sets=["train.lam=0.01", "train.dsm_grad='both'"])) == fingerprint(
        load_config(sets=["train.lam=0.01"])
    )
    assert fingerprint(load_config(sets=["train.lam=0.01", "train.dsm_grad='encoder'"])) != fingerprint(
        load_config(sets=["train.lam=0.01"])
    )


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_each_side_trains_from_the_cli(idx_dir, tmp_path, side):
    out = tmp_path / side
    steered = ("--set", "train.lam=0.1", "--set", f"train.dsm_grad={side}")
    r = invoke("train", "--out", out, "--epochs", 2, *tiny_train_args(idx_dir), *steered)
    assert r.exit_code == 0, r.output
    m = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in m] == [1, 2] and all(math.isfinite(e["loss"]) and "d_sm" in e for e in m)
    assert tomllib.loads((out / "config.toml").read_text())["train"]["dsm_grad"] == side
