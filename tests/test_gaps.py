"""The gap split against the linear-Gaussian model's closed form, its sign, and `smvi gaps` on a tiny trained run.

Closed form (posterior N(m(x), Σ), P = Σ⁻¹): the best diagonal Gaussian is N(m, diag 1/Pᵢᵢ), so the diagonal
family's approximation gap is ½(Σᵢ log Pᵢᵢ − log det P) for every x; the full-covariance family contains the
posterior, so its approximation gap is 0. The amortization gap is then KL(q_φ ‖ p(z|x)) minus the approximation gap.
"""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from torch.distributions import MultivariateNormal, kl_divergence

from conftest import tiny_train_args
from smvi.cli import main
from smvi.core.models import LinearGaussian
from smvi.stages.gaps import fit_local, gap_split
from smvi.store.rundir import RunDir


def lg(posterior: str, seed: int = 1) -> tuple[LinearGaussian, torch.Tensor]:
    """A linear-Gaussian model whose encoder is the posterior-mean map plus noise (a few nats of amortization gap, as
    for a trained encoder), and 20 images drawn from it."""
    extra = dict(flow_layers=2, flow_hidden=(8,), flow_context=2) if posterior == "flow" else {}
    m = LinearGaussian.random(6, 3, seed=seed, posterior=posterior, **extra)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        s2 = torch.exp(2 * m.log_s)
        cov = torch.linalg.inv(torch.eye(3, dtype=torch.float64) + m.W.T @ m.W / s2)
        m.A.copy_(cov @ m.W.T / s2 + 0.1 * torch.randn(3, 6, generator=g, dtype=torch.float64))
        m.c.copy_(-(cov @ m.W.T / s2) @ m.b)
    x = m.decode(torch.randn(20, 3, dtype=torch.float64, generator=g)).sample()
    return m.requires_grad_(False), x.detach()


def kl_to_posterior(m: LinearGaussian, q, x) -> torch.Tensor:
    L = q.scale_tril if isinstance(q, MultivariateNormal) else torch.diag_embed(q.stddev)
    return kl_divergence(MultivariateNormal(q.mean, scale_tril=L), m.posterior(x))


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_the_local_fit_reaches_the_closed_form_optimum(posterior):
    m, x = lg(posterior)
    best = float(m.best_diagonal_gap()) if posterior == "diagonal" else 0.0
    assert best > 0.1 or posterior == "full"  # the posterior is correlated: the diagonal family cannot reach it
    amortized = kl_to_posterior(m, m.encode(x), x)
    fit = fit_local(m, x)
    local = kl_to_posterior(m, fit.q, x)
    assert fit.converged and (amortized > best + 0.2).all()
    assert (local - best).abs().max() < 0.01, (local - best).abs().max()


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_the_gap_split_matches_the_closed_form(posterior):
    m, x = lg(posterior)
    r = gap_split(m, x, m.log_marginal(x))
    best = float(m.best_diagonal_gap()) if posterior == "diagonal" else 0.0
    exact_kl = m.exact_kl(x)
    s = r.summary()
    # per image: the two gaps add up to the whole gap (log p(x) − ELBO of the encoder's q), exactly by construction
    assert torch.allclose(r.approximation + r.amortization, r.log_px - r.elbo_amortized)
    # Monte Carlo (1000 draws per ELBO) against the closed form, within 4 standard errors (+ 0.01 for the fit)
    assert abs(s["approximation"].mean - best) < 4 * s["approximation"].se + 0.01
    amort_exact = float((exact_kl - best).mean())
    assert abs(s["amortization"].mean - amort_exact) < 4 * s["amortization"].se + 0.01
    assert abs(s["gap"].mean - float(exact_kl.mean())) < 4 * s["gap"].se


def test_the_amortization_gap_is_nonnegative_up_to_noise_for_the_flow():
    m, x = lg("flow")
    r = gap_split(m, x, m.log_marginal(x), steps=600)
    s = r.summary()
    assert s["amortization"].mean > -3 * s["amortization"].se
    assert s["approximation"].mean > -3 * s["approximation"].se  # no q beats log p(x)
    assert s["amortization"].mean > 0.2  # the encoder is not each image's best flow


def test_gap_split_refuses_a_log_px_of_the_wrong_shape():
    m, x = lg("diagonal")
    with pytest.raises(ValueError, match=r"log_px must be \[N\] = \[20\]"):
        gap_split(m, x, m.log_marginal(x)[:5])


def test_smvi_gaps_on_a_tiny_run_writes_per_image_values(idx_dir, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["train", "--out", str(out), "--epochs", "2", *tiny_train_args(idx_dir), "--set", "model.posterior='full'"],
    )
    assert r.exit_code == 0, r.output
    args = [
        "gaps",
        str(out),
        "--n-points",
        "12",
        "--ais-steps",
        "20",
        "--no-progress",
        "--set",
        "steps=200",
        "--set",
        "eval_samples=100",
        "--set",
        "batch_size=8",
        "--set",
        "ais.chains=2",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rd = RunDir(out)
    g, stale = rd.current_record("gaps")
    assert stale is None and g.header.schema_ == "smvi-gaps-2" and g.header.epoch == 2
    assert g.posterior == "full" and g.objective == "smvi" and g.knob == {"lam": 0.0}
    assert g.header.settings["ais"]["steps"] == 20 and g.header.settings["ais"]["chains"] == 2
    assert g.n == 12 and len(g.indices) == 12 and all(len(v) == 12 for v in g.per_image.model_dump().values())
    per = g.per_image
    for i in range(12):
        assert math.isclose(
            per.approximation[i] + per.amortization[i], per.log_px[i] - per.elbo_amortized[i], abs_tol=1e-6
        )
    assert len(g.fit.steps) == 2 and g.gap.n == 12  # two batches of images
    assert str(rd.record_path("gaps")) in r.output
    before = rd.record_path("gaps").read_bytes()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "--overwrite" in r.output and rd.record_path("gaps").read_bytes() == before


@pytest.mark.parametrize(
    "args, text",
    [
        (["gaps", "{missing}"], "does not exist"),
        (["gaps", "{run}", "--set", "step=5"], "unknown key"),
        (["gaps", "{run}", "--n-points", "0"], "n_points"),
        (["gaps", "{run}", "--set", "ais_steps=5"], "ais_steps"),  # the old flat name: now ais.steps
    ],
)
def test_smvi_gaps_bad_input_is_one_line(tmp_path, args, text):
    run = tmp_path / "empty"
    run.mkdir()
    r = CliRunner().invoke(main, [a.format(missing=tmp_path / "nope", run=run) for a in args])
    assert r.exit_code == 1 and r.output.startswith("error: ") and text in r.output
    assert len(r.output.strip().splitlines()) == 1
