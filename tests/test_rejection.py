"""The rejection-sampling posterior q_T ∝ q·σ(log p(x, z) − log q + T) (smvi.core.rejection) on the linear-Gaussian
model: its score against autograd, its exact draws against numerical integration (1-d, tolerances from the standard
error at a false-alarm rate of about 10⁻⁵ per check), D_SM(q_T, p) and ELBO(q_T) against quadrature and at both
limits of T, the D_SM estimator's gradient against finite differences, the proposal cap reported, the settings, and
training, evaluation and the gap split through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import invoke, run_benchmark, tiny_train_args
from smvi.core.estimators import ais
from smvi.core.models import LinearGaussian
from smvi.core.objectives import log_lik_and_score_gap, smvi_objective, training_objective
from smvi.core.posteriors import make_family
from smvi.core.rejection import RejectionPosterior, implicit_threshold, reweighted_terms, threshold_for_acceptance
from smvi.settings.run import ConfigError, RunConfig, load_config
from smvi.store.rundir import RunDir, fingerprint

Z_TOL = 4.5  # standard errors: two-sided false-alarm probability 7·10⁻⁶ per check


def lg(z_dim: int = 1, x_dim: int = 2, n: int = 3, seed: int = 1, **rejection):
    """A float64 linear-Gaussian model with a rejection family over the diagonal one, and n data points from it."""
    m = LinearGaussian.random(x_dim, z_dim, seed=seed)
    rejection = rejection if {"threshold", "acceptance"} & set(rejection) else {**rejection, "threshold": 0.0}
    m.family = make_family("rejection", z_dim, **{f"rejection_{k}": v for k, v in rejection.items()}).double()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        z = torch.randn(n, z_dim, generator=g, dtype=torch.float64)
        x = m.decode(z).mean + m.log_s.exp() * torch.randn(n, x_dim, generator=g, dtype=torch.float64)
    return m, x


GRID = torch.linspace(-15, 15, 30001, dtype=torch.float64)


def quadrature(m, x, T: float, grid=GRID):
    """∫ over a 1-d grid: Z_T, q_T's mean, variance and 4th central moment, D_SM(q_T, p), ELBO(q_T), Var_q(a)."""
    z = grid.view(-1, 1, 1).expand(-1, x.shape[0], 1)
    q = m.encode(x)
    with torch.enable_grad():
        zz = z.clone().requires_grad_(True)
        ell = q.log_ratio(zz)
        g = torch.autograd.grad(ell.sum(), zz)[0].squeeze(-1)
    ell = ell.detach()
    log_q = q.base.log_prob(z).detach()
    a = torch.sigmoid(ell + T)
    qa = log_q.exp() * a
    integ = lambda f: torch.trapezoid(f, grid, dim=0)  # noqa: E731
    Z = integ(qa)
    dens = qa / Z
    zs = grid.view(-1, 1)
    mean = integ(dens * zs)
    var = integ(dens * (zs - mean) ** 2)
    m4 = integ(dens * (zs - mean) ** 4)
    d_sm = integ(dens * a**2 * g**2)
    log_qT = log_q + torch.log(a) - Z.log()
    elbo = integ(dens * (ell + log_q - log_qT))
    var_a = integ(log_q.exp() * a**2) - Z**2
    return dict(Z=Z, mean=mean, var=var, m4=m4, d_sm=d_sm, elbo=elbo, var_a=var_a)


# ---- the density ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", [dict(threshold=4.0), dict(acceptance=0.3)])
def test_score_is_the_z_gradient_of_the_unnormalized_log_density(rule):
    m, x = lg(z_dim=3, x_dim=5, n=4, **rule)
    q = m.encode(x)
    z = torch.randn(7, 4, 3, dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    auto = torch.autograd.grad(q.unnormalized_log_prob(zz).sum(), zz)[0]
    closed = q.score(z)
    assert torch.allclose(closed, auto, atol=1e-12, rtol=1e-10)
    zz = z.clone().requires_grad_(True)  # log_prob's estimated normalizer does not depend on z
    assert torch.allclose(torch.autograd.grad(q.log_prob(zz).sum(), zz)[0], auto, atol=1e-12)
    base = torch.autograd.grad(q.base.log_prob(zz).sum(), zz)[0]
    assert (closed - base).abs().max() > 0.1  # the acceptance term matters here


def test_threshold_for_acceptance_hits_the_target_on_its_draws():
    ell = torch.randn(50, 6, dtype=torch.float64) * 3 - torch.arange(6) * 10
    for target in (0.5, 0.2, 0.05):
        t = threshold_for_acceptance(ell, target)
        assert torch.allclose(torch.sigmoid(ell + t).mean(0), torch.full((6,), target, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("T", [2.0, 4.0])
def test_exact_draws_have_the_moments_of_numerical_integration(T):
    m, x = lg(threshold=T)
    torch.manual_seed(0)
    q = m.encode(x)
    assert isinstance(q, RejectionPosterior)
    ref = quadrature(m, x, T)
    n = 40_000
    z = q.sample((n,)).squeeze(-1)  # [n, N]
    assert q.last_sampling.n_capped == 0
    se_mean = (ref["var"] / n).sqrt()
    assert ((z.mean(0) - ref["mean"]).abs() < Z_TOL * se_mean).all(), (z.mean(0), ref["mean"])
    se_var = ((ref["m4"] - ref["var"] ** 2) / n).sqrt()
    assert ((z.var(0) - ref["var"]).abs() < Z_TOL * se_var).all(), (z.var(0), ref["var"])
    far = ((q.base.mean.squeeze(-1) - ref["mean"]).abs() > 10 * se_mean) | (
        (q.base.variance.squeeze(-1) - ref["var"]).abs() > 10 * se_var
    )
    assert far.sum() >= 2  # q_T is not q: the check has power
    # proposals per draw are geometric with success probability Z_T
    per = q.last_sampling.proposals.double()
    se_per = ((1 - ref["Z"]) / ref["Z"] ** 2 / n).sqrt()
    assert ((per.mean(0) - 1 / ref["Z"]).abs() < Z_TOL * se_per).all()
    # the estimated normalizer (1024 keyed proposals) against the integral
    Z_hat = q.log_normalizer.exp()
    assert ((Z_hat - ref["Z"]).abs() < Z_TOL * (ref["var_a"] / 1024).sqrt()).all(), (Z_hat, ref["Z"])


def test_keyed_draws_are_exact_too_and_do_not_depend_on_the_batch():
    from smvi.core.estimators.hmc import point_ids, stream_key

    m, x = lg(threshold=4.0)
    q = m.encode(x)
    ref = quadrature(m, x, 4.0)
    n = 40_000
    z = q.sample_keyed(stream_key(3, point_ids(x), torch.arange(n))).squeeze(-1)
    assert ((z.mean(0) - ref["mean"]).abs() < Z_TOL * (ref["var"] / n).sqrt()).all()
    alone = m.encode(x[1:2]).sample_keyed(stream_key(3, point_ids(x[1:2]), torch.arange(100)))
    assert torch.equal(alone[:, 0], z[:100, 1:2])


# ---- D_SM(q_T, p) and ELBO(q_T) -------------------------------------------------------------------------------------
def test_dsm_and_elbo_of_q_T_reach_both_limits_of_T():
    m, x = lg()
    family, m.family = m.family, m.family.base  # the closed forms of the base q
    with torch.no_grad():
        dsm_q = m.exact_score_matching(x)
        elbo_q = m.log_marginal(x) - m.exact_kl(x)
        log_px = m.log_marginal(x)
    m.family = family
    high, low = quadrature(m, x, 40.0), quadrature(m, x, -40.0)
    assert torch.allclose(high["d_sm"], dsm_q, rtol=1e-6)  # T → +∞: q_T = q
    assert torch.allclose(high["elbo"], elbo_q, atol=1e-6)
    assert (low["d_sm"] < 1e-12 * dsm_q).all()  # T → −∞: q_T → p(z|x)
    assert torch.allclose(low["elbo"], log_px, atol=1e-6)
    mid = quadrature(m, x, 3.0)  # in between, strictly
    assert ((mid["d_sm"] < dsm_q) & (mid["d_sm"] > 1e-3 * dsm_q)).all()
    assert ((mid["elbo"] > elbo_q) & (mid["elbo"] < log_px)).all()


def test_reweighted_estimators_at_the_limits_are_the_known_estimators_on_the_same_draws():
    m, x = lg(z_dim=2, x_dim=4, threshold=200.0)
    q = m.encode(x)
    z = q.base.sample((50,))
    t = reweighted_terms(m, q, x, z, d_sm=True)
    _, sq = log_lik_and_score_gap(m, q.base, x, z)
    assert torch.allclose(t["d_sm"], sq.mean(0), rtol=1e-12)  # T → +∞: the diagonal estimator
    log_w = m.log_prior(z) + m.log_likelihood(x, z) - q.base.log_prob(z)
    assert torch.allclose(t["elbo"], log_w.mean(0), atol=1e-12)
    q.fixed_threshold = -200.0
    t = reweighted_terms(m, q, x, z, d_sm=True)
    assert (t["d_sm"] < 1e-30).all()  # T → −∞: D̂ → 0 and ÊLBO → IWAE's L_M
    assert torch.allclose(t["elbo"], torch.logsumexp(log_w, 0) - math.log(50), atol=1e-9)


def test_reweighted_estimators_agree_with_quadrature():
    """Many proposals: the O(1/M) bias is far below the noise, which is the delta method's SE of the ratio."""
    m, x = lg(threshold=3.0)
    ref = quadrature(m, x, 3.0)
    torch.manual_seed(1)
    q = m.encode(x)
    M = 200_000
    z = q.base.sample((M,))
    t = reweighted_terms(m, q, x, z, d_sm=True)
    with torch.enable_grad():
        zz = z.clone().requires_grad_(True)
        ell = q.log_ratio(zz)
        g2 = torch.autograd.grad(ell.sum(), zz)[0].pow(2).sum(-1)
    a = torch.sigmoid(ell.detach() + 3.0)
    se = (a * (a**2 * g2 - t["d_sm"])).std(0) / (a.mean(0) * math.sqrt(M))
    assert ((t["d_sm"] - ref["d_sm"]).abs() < Z_TOL * se).all(), (t["d_sm"], ref["d_sm"], se)
    assert torch.allclose(t["acceptance"], ref["Z"], rtol=0.02)
    assert torch.allclose(t["elbo"], ref["elbo"], atol=0.01)


def assert_gradient_matches_finite_differences(fn, params: list[torch.Tensor], h: float = 1e-6) -> tuple:
    """Autograd's gradient of the scalar ``fn()`` in every parameter against central differences (float64), and
    the gradients (None for a parameter ``fn`` does not use)."""
    grads = torch.autograd.grad(fn(), params, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        g = torch.zeros_like(p) if g is None else g
        fd = torch.zeros_like(p)
        with torch.no_grad():
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + h
                up = fn()
                p.view(-1)[i] = old - h
                down = fn()
                p.view(-1)[i] = old
                fd.view(-1)[i] = (up - down) / (2 * h)
        assert torch.allclose(g, fd, rtol=1e-5, atol=1e-6), (p.shape, g, fd)
    return grads


def test_dsm_estimator_gradient_matches_finite_differences():
    """With the proposals' noise ε fixed, D̂_SM(q_T, p) is a smooth function of θ and φ: autograd (second order,
    through z = μ + σε, a_T and g) against central differences, for every parameter."""
    m, x = lg(z_dim=2, x_dim=3, threshold=3.0)
    eps = torch.randn(64, x.shape[0], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def d_hat():
        q = m.encode(x)
        z = q.base.mean + q.base.stddev * eps
        return reweighted_terms(m, q, x, z, d_sm=True)["d_sm"].sum()

    grads = assert_gradient_matches_finite_differences(d_hat, list(m.parameters()))
    assert max(float(g.abs().max()) for g in grads if g is not None and g.numel()) > 1e-2


def test_implicit_threshold_has_the_value_and_the_gradient_of_the_solved_T():
    """T(ℓ) solving mean σ(ℓ_m + T) = γ: implicit_threshold keeps bisection's value and its autograd Jacobian equals
    central differences of the bisection itself."""
    ell = torch.randn(7, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4
    t = threshold_for_acceptance(ell, 0.3)
    ell_ = ell.clone().requires_grad_(True)
    t_imp = implicit_threshold(ell_, t)
    assert torch.equal(t_imp.detach(), t)
    jac = torch.stack([torch.autograd.grad(t_imp[n], ell_, retain_graph=True)[0] for n in range(3)])  # [N, M, N]
    h = 1e-6
    for m_ in range(7):
        for n in range(3):
            up, down = ell.clone(), ell.clone()
            up[m_, n] += h
            down[m_, n] -= h
            fd = (threshold_for_acceptance(up, 0.3) - threshold_for_acceptance(down, 0.3)) / (2 * h)
            assert torch.allclose(jac[:, m_, n], fd, atol=1e-7), (m_, n, jac[:, m_, n], fd)


def test_training_gradient_with_a_target_acceptance_is_that_of_the_re_solved_objective():
    """With T chosen per x for a target acceptance, training ascends one function of the parameters: the estimated
    ELBO and D_SM of q_{T(θ, φ)}, T re-solved wherever the parameters are. Autograd against central differences that
    re-solve T (with the proposals' noise fixed). Holding T constant in the gradient (the first version) failed this
    and diverged on MNIST (log p(x|z) from −206 to −3800 nats in 60 steps at γ = 0.5)."""
    m, x = lg(z_dim=2, x_dim=3, acceptance=0.3)
    eps = torch.randn(32, x.shape[0], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def objective():
        q = m.encode(x)
        t = reweighted_terms(m, q, x, q.base.mean + q.base.stddev * eps, d_sm=True)
        return (t["elbo"] - 0.1 * t["d_sm"]).sum()

    assert_gradient_matches_finite_differences(objective, list(m.parameters()))


def test_dsm_gradient_estimates_the_gradient_of_the_true_dsm():
    """d/dc D_SM(q_T, p) (c the encoder's bias) by finite differences of the quadrature, against the mean of the
    estimator's autograd gradient over independent batches of proposals (tolerance: their SE)."""
    m, x = lg(threshold=3.0)
    h = 1e-4
    with torch.no_grad():
        m.c += h
        up = quadrature(m, x, 3.0)["d_sm"].sum()
        m.c -= 2 * h
        down = quadrature(m, x, 3.0)["d_sm"].sum()
        m.c += h
    fd = float((up - down) / (2 * h))
    torch.manual_seed(2)
    grads = []
    for _ in range(16):
        q = m.encode(x)
        d = reweighted_terms(m, q, x, q.base.rsample((20_000,)), d_sm=True)["d_sm"].sum()
        grads.append(float(torch.autograd.grad(d, m.c)[0]))
    mean, se = sum(grads) / 16, torch.tensor(grads).std().item() / 4
    assert abs(mean - fd) < Z_TOL * se + 1e-3 * abs(fd), (mean, fd, se)
    assert abs(fd) > 10 * se  # a gradient the check can see


def test_ais_from_q_T_estimates_log_px():
    m, x = lg(z_dim=2, x_dim=4, n=4, acceptance=0.2)
    r = ais(m, x, steps=500, chains=64, start="encoder", seed=0)
    log_px = m.log_marginal(x).detach()
    assert (r.log_px - log_px).abs().max() < 0.1 and abs(float((r.log_px - log_px).mean())) < 0.05, (r.log_px, log_px)


# ---- the cap --------------------------------------------------------------------------------------------------------
def test_the_proposal_cap_is_reported_never_silent():
    m, x = lg(threshold=-30.0, cap=5)
    q = m.encode(x)
    with pytest.warns(RuntimeWarning, match=r"hit the cap of 5 proposals"):
        z = q.sample((200,))
    s = q.last_sampling
    assert z.shape == (200, 3, 1) and s.n_capped > 150 and s.cap == 5
    assert (s.proposals[s.capped] == 5).all() and s.proposals.max() == 5
    m, x = lg(threshold=40.0, cap=5)
    q = m.encode(x)
    q.sample((200,))
    assert q.last_sampling.n_capped == 0 and q.last_sampling.proposals_per_sample == 1.0


# ---- objectives and settings ----------------------------------------------------------------------------------------
def test_objectives_on_q_T():
    m, x = lg(z_dim=2, x_dim=4, acceptance=0.5, proposals=32)
    t = smvi_objective(m, x, lam=0.01)
    assert t.d_sm is not None and torch.allclose(t.loss, -(t.elbo - 0.01 * t.d_sm))
    assert torch.allclose(t.acceptance, torch.full_like(t.acceptance, 0.5), atol=1e-9)  # T from these proposals
    grads = torch.autograd.grad(t.loss.mean(), [m.W, m.A])
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    assert set(t.means()) >= {"elbo", "d_sm", "acceptance", "threshold", "proposals_per_sample"}
    b = training_objective(m, x, objective="beta", beta=2.0)
    assert torch.allclose(b.loss, -(b.log_likelihood - 2.0 * b.kl))
    with pytest.raises(ValueError, match="cannot train posterior='rejection'"):
        training_objective(m, x, objective="iwae", iwae_k=5)
    t2 = smvi_objective(m, x, lam=0.0, n_samples=2)  # n_samples × proposals proposals
    assert torch.allclose(t2.acceptance, torch.full_like(t2.acceptance, 0.5), atol=1e-9) and t2.d_sm is None


@pytest.mark.parametrize(
    "sets, match",
    [
        (
            ["model.posterior='rejection'", "model.rejection_threshold=1", "model.rejection_acceptance=0.5"],
            "are both set: keep one",
        ),
        (["model.rejection_threshold=1"], "only used by posterior='rejection'"),
        (["model.posterior='rejection'", "model.rejection_acceptance=1.5"], "rejection_acceptance"),
        (
            [
                "model.posterior='rejection'",
                "model.rejection_acceptance=0.5",
                "train.objective='iwae'",
                "train.iwae_k=5",
            ],
            "cannot train model.posterior='rejection'",
        ),
        (
            ["model.posterior='rejection'", "train.constraint.target=1", "train.constraint.measure='gap'"],
            "does not measure model.posterior='rejection'",
        ),
        (
            ["model.posterior='rejection'", "model.rejection_acceptance=0.5", "model.rejection_base='flow'"],
            "rejection_base",
        ),
    ],
)
def test_bad_rejection_settings_are_one_line_errors(sets, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(sets=sets)
    assert "\n" not in str(e.value)


def test_defaults_and_other_families_keep_their_config_and_fingerprint():
    cfg = RunConfig()
    assert not any(k.startswith("rejection") for k in cfg.model.model_dump(exclude_none=True))
    assert fingerprint(cfg) == fingerprint(load_config(sets=["model.posterior='diagonal'"]))
    r = load_config(sets=["model.posterior='rejection'", "model.rejection_acceptance=0.2"])
    assert (r.model.rejection_base, r.model.rejection_proposals, r.model.rejection_cap) == ("diagonal", 16, 1000)
    from smvi.core.models import VAE

    assert VAE(784, load_config(sets=["model.posterior='rejection'"]).model).family.acceptance == 0.5  # the default


# ---- through the CLI ------------------------------------------------------------------------------------------------
def test_train_evaluate_gaps_and_pictures_of_a_rejection_run(idx_dir, tmp_path):
    out = tmp_path / "run"
    r = invoke(
        "train",
        "--out",
        out,
        "--epochs",
        2,
        *tiny_train_args(idx_dir),
        "--lam",
        0.01,
        "--set",
        "model.posterior='rejection'",
        "--set",
        "model.rejection_acceptance=0.5",
        "--set",
        "model.rejection_proposals=8",
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(math.isfinite(m["d_sm"]) and math.isfinite(m["elbo"]) for m in lines)
    assert all(abs(m["acceptance"] - 0.5) < 1e-3 and m["proposals_per_sample"] > 1 for m in lines)
    r = invoke(
        "evaluate",
        out,
        "--n-test",
        8,
        "--n-train",
        8,
        "--ais-steps",
        10,
        "--no-progress",
        "--set",
        "elbo_samples=10",
        "--set",
        "dsm_samples=4",
        "--set",
        "iwae_k=10",
        "--set",
        "ais.chains=2",
        "--set",
        "ais.start='encoder'",
    )
    assert r.exit_code == 0, r.output
    ev, _ = RunDir(out).current_record("eval")
    test = ev.splits["test"]
    assert all(math.isfinite(v.mean) for v in (test.elbo, test.d_sm, test.iwae, test.ais))
    assert test.elbo.mean <= test.ais.mean + 1.0  # a lower bound, up to tiny-run AIS noise
    r = invoke(
        "gaps",
        out,
        "--n-points",
        6,
        "--ais-steps",
        10,
        "--no-progress",
        "--set",
        "steps=20",
        "--set",
        "eval_samples=20",
        "--set",
        "ais.chains=2",
    )
    assert r.exit_code == 0, r.output
    g, _ = RunDir(out).current_record("gaps")
    assert g.posterior == "rejection" and g.n == 6 and math.isfinite(g.approximation.mean)
    r = invoke("pictures", out, "--no-progress")
    assert r.exit_code == 0, r.output


def test_report_labels_a_rejection_run_with_its_rule_for_T():
    from smvi.report.aggregate import METHOD_KEYS, method_of

    base = {"train.objective": "smvi", "train.lam": 0.01, "model.posterior": "rejection"}
    assert method_of({**base, "model.rejection_acceptance": 0.2}) == ("SMVI, rejection q (acceptance 0.2)", "λ", 0.01)
    assert method_of({**base, "model.rejection_threshold": 3.0})[0] == "SMVI, rejection q (T = 3)"
    assert {"model.rejection_acceptance", "model.rejection_threshold"} <= METHOD_KEYS


def test_cost_benchmark_quick_run_writes_its_ratios(tmp_path):
    """benchmarks/rejection.py (cost per training step against the diagonal one) runs end to end."""
    _, res = run_benchmark(tmp_path, "rejection.py", "--only", "accept0.2_smvi")
    assert set(res["ratios_to_diagonal"]["cpu"]) == {"diagonal", "diagonal_smvi", "accept0.2_smvi"}
    assert res["ratios_to_diagonal"]["cpu"]["diagonal"] == 1.0 and res["times"]["accept0.2_smvi"]["cpu_ms"] > 0
