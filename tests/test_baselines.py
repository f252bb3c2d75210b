"""The β-VAE and IWAE baselines: β = 1 and k = 1 are the VAE bit for bit, IWAE training computes iwae_bound's L_k,
settings that do not belong to the chosen objective are refused in one line, and every family × objective trains
through the CLI with the trainer's guarantees (exact resume, NaN guard)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

import smvi
import smvi.stages.train as T
from conftest import invoke, tiny_train_args
from smvi.cli import main
from smvi.core.models import VAE, LinearGaussian
from smvi.core.objectives import beta_vae_objective, iwae_objective, smvi_objective, training_objective
from smvi.settings.run import ConfigError, load_config
from smvi.stages.train import load_run
from test_posteriors import posterior_as_full_q


def tiny_vae(posterior: str = "diagonal") -> VAE:
    torch.manual_seed(0)
    extra = dict(flow_layers=2, flow_hidden=(8,), flow_context=2) if posterior == "flow" else {}
    return VAE(784, smvi.ModelConfig(z_dim=3, encoder_hidden=(16,), decoder_hidden=(16,), posterior=posterior, **extra))


def batch() -> torch.Tensor:
    return torch.bernoulli(torch.rand(8, 784, generator=torch.Generator().manual_seed(1)))


def loss_and_grads(model, fn):
    torch.manual_seed(7)
    model.zero_grad()
    terms = fn()
    terms.loss.mean().backward()
    return terms, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("posterior", ["diagonal", "full", "flow"])
@pytest.mark.parametrize("baseline", ["beta=1", "k=1"])
def test_beta_1_and_k_1_are_the_vae_bit_for_bit(posterior, baseline):
    model, x = tiny_vae(posterior), batch()
    vae, g_vae = loss_and_grads(model, lambda: smvi_objective(model, x, lam=0.0))
    other = (
        (lambda: beta_vae_objective(model, x, beta=1.0))
        if baseline == "beta=1"
        else (lambda: iwae_objective(model, x, k=1))
    )
    got, g_got = loss_and_grads(model, other)
    assert torch.equal(got.loss, vae.loss) and torch.equal(got.elbo, vae.elbo)
    assert all(torch.equal(a, b) for a, b in zip(g_got, g_vae, strict=True))


def test_beta_weights_exactly_the_kl():
    model, x = tiny_vae(), batch()
    torch.manual_seed(3)
    one = beta_vae_objective(model, x, beta=1.0)
    torch.manual_seed(3)
    four = beta_vae_objective(model, x, beta=4.0)
    assert torch.allclose(four.loss - one.loss, 3.0 * one.kl, atol=1e-4) and (one.kl > 0).all()
    assert torch.equal(four.elbo, one.elbo)


def test_iwae_objective_is_iwae_bound_exactly_at_the_posterior_and_on_average_elsewhere():
    m = LinearGaussian.random(5, 3, seed=2, posterior="full")
    x = m.decode(torch.randn(4, 3, dtype=torch.float64)).sample().detach()
    exact_q = posterior_as_full_q(m, x)
    exact = exact_q.log_marginal(x).detach()
    # q = p(z|x): every importance weight is p(x), so both compute log p(x) exactly, whatever the draws
    assert torch.allclose(iwae_objective(exact_q, x, k=5).iwae.detach(), exact, atol=1e-9)
    assert torch.allclose(smvi.iwae_bound(exact_q, x, k=5, seed=0), exact, atol=1e-9)
    # elsewhere both are unbiased estimates of the same E[L_k]: their means over 300 repeats agree within 4 SE
    torch.manual_seed(0)
    ours = torch.stack([iwae_objective(m, x, k=5).iwae.detach() for _ in range(300)])
    ref = torch.stack([smvi.iwae_bound(m, x, k=5, seed=s) for s in range(300)])
    se = (ours.var(0) / len(ours) + ref.var(0) / len(ref)).sqrt()
    assert ((ours.mean(0) - ref.mean(0)).abs() < 4 * se).all()
    one = torch.stack([iwae_objective(m, x, k=1).iwae.detach() for _ in range(300)])
    assert (one.mean(0) < ours.mean(0)).all() and (ours.mean(0) < m.log_marginal(x).detach() + 4 * se).all()


def test_training_objective_dispatches_and_refuses_foreign_settings():
    model, x = tiny_vae(), batch()
    assert isinstance(training_objective(model, x, objective="beta", beta=2.0), smvi.core.objectives.BetaTerms)
    assert isinstance(training_objective(model, x, objective="iwae", iwae_k=3), smvi.core.objectives.IWAETerms)
    for kwargs in [
        dict(objective="beta"),
        dict(objective="beta", beta=2.0, lam=0.1),
        dict(objective="smvi", iwae_k=3),
        dict(objective="iwae", iwae_k=3, n_samples=2),
        dict(objective="vae"),
    ]:
        with pytest.raises(ValueError):
            training_objective(model, x, **kwargs)


@pytest.mark.parametrize(
    "sets, text",
    [
        (["train.beta=2"], "train.beta is only used by objective='beta'"),
        (["train.objective='beta'"], "objective='beta' needs train.beta"),
        (["train.objective='iwae'"], "objective='iwae' needs train.iwae_k"),
        (["train.objective='iwae'", "train.iwae_k=5", "train.beta=2"], "train.beta is only used"),
        (["train.objective='beta'", "train.beta=2", "train.lam=0.1"], "train.lam and train.lam_warmup_epochs"),
        (["train.objective='iwae'", "train.iwae_k=5", "train.n_samples=4"], "train.n_samples is not used"),
        (["train.objective='beta'", "train.beta=0"], "train.beta"),
        (["train.objective='gan'"], "train.objective"),
    ],
)
def test_a_setting_for_another_objective_is_a_one_line_error(idx_dir, tmp_path, sets, text):
    with pytest.raises(ConfigError) as err:
        load_config(sets=sets)
    assert text in str(err.value) and "\n" not in str(err.value)
    out = tmp_path / "r"
    r = train_cli(out, idx_dir, 1, sets)
    assert r.exit_code == 1 and r.output.startswith("error: ") and text in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


# ---- training through the CLI ---------------------------------------------------------------------------------------
CASES = {  # name -> --set options
    "diagonal-smvi": ["train.lam=0.1"],
    "full-smvi": ["model.posterior='full'", "train.lam=0.1"],
    "flow-smvi": ["model.posterior='flow'", "model.flow_layers=2", "model.flow_hidden=[16]", "train.lam=0.1"],
    "diagonal-beta": ["train.objective='beta'", "train.beta=2.0"],
    "full-beta": ["model.posterior='full'", "train.objective='beta'", "train.beta=0.5"],
    "diagonal-iwae": ["train.objective='iwae'", "train.iwae_k=5"],
    "flow-iwae": [
        "model.posterior='flow'",
        "model.flow_layers=2",
        "model.flow_hidden=[16]",
        "train.objective='iwae'",
        "train.iwae_k=3",
    ],
}


def train_cli(out, data, epochs, sets, *extra):
    """``smvi train`` of a tiny run in ``out`` with ``--set`` for each of ``sets``."""
    return invoke(
        "train",
        "--out",
        out,
        "--epochs",
        epochs,
        *tiny_train_args(data),
        *[a for s in sets for a in ("--set", s)],
        *extra,
    )


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(CASES))
def test_each_family_and_objective_trains_from_the_cli(idx_dir, tmp_path, name):
    out = tmp_path / name
    r = train_cli(out, idx_dir, 3, CASES[name])
    assert r.exit_code == 0, r.output
    m = metrics(out)
    assert [e["epoch"] for e in m] == [1, 2, 3] and m[-1]["loss"] < m[0]["loss"]
    assert all(math.isfinite(e["test_elbo"]) for e in m)
    if "iwae" in name:
        assert all(e["iwae"] >= e["elbo"] - 1.0 for e in m)
    run = load_run(out)
    posterior, objective = name.split("-")
    assert run.config.model.posterior == posterior and run.config.train.objective == objective


@pytest.mark.parametrize("name", ["full-beta", "flow-iwae", "flow-smvi"])
def test_resume_is_bit_identical_for_each_objective_and_family(idx_dir, tmp_path, name):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_cli(a, idx_dir, 2, CASES[name]).exit_code == 0
    assert train_cli(b, idx_dir, 1, CASES[name]).exit_code == 0
    r = CliRunner().invoke(main, ["train", "--out", str(b), "--epochs", "2", "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    wa, wb = load_run(a).model.state_dict(), load_run(b).model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [e["loss"] for e in metrics(a)] == [e["loss"] for e in metrics(b)]
    # and the objective's settings cannot change on resume
    knob = {"beta": "train.beta=3.0", "iwae": "train.iwae_k=7", "smvi": "train.lam=0.2"}[name.split("-")[1]]
    r = CliRunner().invoke(
        main, ["train", "--out", str(b), "--epochs", "3", "--resume", "--no-progress", "--set", knob]
    )
    assert r.exit_code == 1 and "only train.epochs, train.device and train.tensorboard may change on resume" in r.output


@pytest.mark.parametrize("name", ["diagonal-beta", "diagonal-iwae", "flow-smvi"])
def test_the_nan_guard_skips_bad_steps_for_each_objective(idx_dir, tmp_path, monkeypatch, name):
    """A NaN loss at training steps 1, 5 and 6 is skipped and counted, whatever the objective."""
    count, real = iter(range(10**9)), T.training_objective

    def objective(model, x, **kwargs):
        terms = real(model, x, **kwargs)
        return dataclasses.replace(terms, loss=terms.loss * math.nan) if next(count) in {1, 5, 6} else terms

    monkeypatch.setattr(T, "training_objective", objective)
    out = tmp_path / "r"
    r = train_cli(out, idx_dir, 2, CASES[name])
    assert r.exit_code == 0, r.output
    assert [e["skipped_steps"] for e in metrics(out)] == [1, 2]
    assert all(bool(torch.isfinite(p).all()) for p in load_run(out).model.parameters())


def test_a_config_built_without_validation_is_still_checked_before_training(idx_dir, tmp_path):
    """model_copy(update=...) (as a sweep grid does) skips pydantic's checks; train() re-checks and writes nothing."""
    cfg = load_config(
        sets=["train.objective='beta'", "train.beta=2", "data.dataset='idx'", f"data.data_dir='{idx_dir}'"]
    )
    bad = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lam": 0.1})})
    with pytest.raises(ConfigError, match="train.lam and train.lam_warmup_epochs are only used"):
        T.train(bad, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.toml").exists()


@pytest.mark.parametrize("posterior", ["full", "flow"])
def test_each_family_trains_under_bf16_autocast(posterior):
    """train.precision = "bf16" autocasts the objective; the full family's triangular solves run in fp32."""
    model, x = tiny_vae(posterior), batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = smvi_objective(model, x, lam=0.1)
    terms.loss.mean().backward()
    assert torch.isfinite(terms.loss).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
