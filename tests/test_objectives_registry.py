"""The objective registry's contract, checked the same way for every registered training objective: the torch-free
specs and the core functions agree, the config takes each objective with its knob and refuses its settings for
another, and every objective returns named, finite per-example terms through which gradients reach the encoder and
the decoder. SMVI at λ = 0 is the ELBO exactly. A new objective gets all of this by registering
(smvi.core.objectives.register_objective)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import smvi
from smvi.core.models import LinearGaussian
from smvi.core.objectives import OBJECTIVES, register_objective, training_objective
from smvi.report.aggregate import method_of
from smvi.settings.objectives import DEFAULT_OBJECTIVE, knob_of, objective_arguments
from smvi.settings.objectives import OBJECTIVES as SPECS
from smvi.settings.run import ConfigError, TrainConfig, load_config

NAMES = list(SPECS)


def knob_sets(name: str) -> list[str]:
    spec = SPECS[name]
    return [f"train.objective='{name}'", f"train.{spec.knob}={spec.example}"]


def test_settings_and_core_register_the_same_objectives():
    assert set(OBJECTIVES) == set(NAMES) and TrainConfig().objective == DEFAULT_OBJECTIVE == NAMES[0]
    for name, spec in SPECS.items():
        assert spec.knob in spec.settings and set(spec.arguments) <= set(spec.settings)
        for key, unused in spec.settings.items():  # a run of another objective keeps the key at its default
            assert TrainConfig.model_fields[key].default == unused, key
        params = inspect.signature(OBJECTIVES[name]).parameters
        assert set(spec.arguments) <= set(params) and ("n_samples" in params) == spec.n_samples, name
    with pytest.raises(ValueError, match="no entry in smvi.settings.objectives.OBJECTIVES"):
        register_objective("gan")


@pytest.mark.parametrize("name", NAMES)
def test_each_objective_is_configured_by_its_knob_and_refuses_the_others(name):
    spec = SPECS[name]
    cfg = load_config(sets=knob_sets(name))
    assert knob_of(cfg.train) == {spec.knob: spec.example}
    assert objective_arguments(cfg.train) == {k: getattr(cfg.train, k) for k in spec.arguments}
    flat = {"train.objective": name, f"train.{spec.knob}": spec.example}
    assert method_of(flat) == (spec.display, spec.knob_label, spec.example)
    assert method_of({**flat, "model.posterior": "full"})[0] == f"{spec.display}, full q"
    for other in SPECS.values():
        if other.name != name:
            with pytest.raises(ConfigError, match=f"train.{other.knob}.* only used by objective='{other.name}'"):
                load_config(sets=[*knob_sets(name), f"train.{other.knob}={other.example}"])
    if spec.settings[spec.knob] is None:
        with pytest.raises(ConfigError, match=f"objective='{name}' needs train.{spec.knob}"):
            load_config(sets=[f"train.objective='{name}'"])


@pytest.fixture
def model_and_batch():
    m = LinearGaussian.random(5, 3, seed=4)
    x = m.decode(torch.randn(7, 3, dtype=torch.float64)).sample().detach()
    return m, x


@pytest.mark.parametrize("name", NAMES)
def test_each_objective_gives_named_finite_per_example_terms_and_gradients(name, model_and_batch):
    m, x = model_and_batch
    spec = SPECS[name]
    torch.manual_seed(0)
    terms = training_objective(m, x, objective=name, **{spec.knob: spec.example})
    fields = {f.name: getattr(terms, f.name) for f in dataclasses.fields(terms)}
    assert {"loss", "elbo", "log_likelihood", "kl"} <= set(fields)
    for key, value in fields.items():
        assert value is None or (value.shape == (7,) and bool(torch.isfinite(value).all())), key
    means = terms.means()
    assert set(means) <= set(fields) and all(isinstance(v, float) for v in means.values())
    terms.loss.mean().backward()
    assert m.A.grad.abs().sum() > 0 and m.W.grad.abs().sum() > 0  # encoder and decoder
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in m.parameters())
    for other in SPECS.values():  # another objective's knob is refused in the call as in the config
        if other.name != name:
            with pytest.raises(ValueError, match="only used by"):
                training_objective(m, x, objective=name, **{spec.knob: spec.example, other.knob: other.example})


def test_smvi_at_lambda_0_is_the_elbo(model_and_batch):
    m, x = model_and_batch
    torch.manual_seed(3)
    terms = training_objective(m, x, objective="smvi", lam=0.0, n_samples=4)
    torch.manual_seed(3)
    assert torch.equal(terms.elbo, smvi.elbo(m, x, n_samples=4)) and torch.equal(terms.loss, -terms.elbo)
    assert terms.d_sm is None
