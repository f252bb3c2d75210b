"""The flag rules (smvi.report.flags) on hand-made runs: each rule fires on the side of its documented threshold it
should, carries its run and λ, and its constants agree with the code they describe."""

from __future__ import annotations

import inspect

import pytest

from smvi.report.aggregate import Run
from smvi.report.flags import (
    ACCEPT_TARGET,
    ACCEPT_TOL,
    BDMC_TOL,
    COLLAPSE_KL,
    COLLAPSE_UNITS,
    RECOVERED_FRACTION,
    RULES,
    excluded_lams,
    is_collapsed,
    legend,
    mark,
    run_flags,
    sweep_flags,
)


def run(
    name="r",
    lam=0.1,
    *,
    last=None,
    epochs=30,
    planned=30,
    eval_acc=None,
    gaps_acc=None,
    convergence=None,
    learned=False,
    config=None,
) -> Run:
    config = {"train.lam": lam, **({"train.constraint.target": 10.0} if learned else {}), **(config or {})}
    ev = None if eval_acc is None else {"splits": {sp: {"ais_acceptance": a} for sp, a in eval_acc.items()}}
    metrics = () if last is None else ({"epoch": 1}, {"epoch": epochs, **last})
    return Run(
        name,
        lam,
        0,
        epochs,
        planned,
        config,
        ev,
        None,
        convergence,
        gaps=None if gaps_acc is None else {"ais_acceptance": gaps_acc},
        metrics=metrics,
    )


def kinds(r: Run) -> list[str]:
    return [f.kind for f in run_flags(r)]


def test_the_thresholds_agree_with_the_code_they_describe():
    from smvi.core.estimators import ais
    from smvi.settings.stages import ConvergenceConfig

    assert inspect.signature(ais).parameters["target_accept"].default == ACCEPT_TARGET
    assert ConvergenceConfig().tol == BDMC_TOL


@pytest.mark.parametrize(
    "last, collapsed",
    [
        ({"test_kl": 0.05, "test_active_units": 20}, True),  # little KL on the monitor set
        ({"test_kl": 15.0, "test_active_units": COLLAPSE_UNITS}, True),  # few active units
        ({"test_kl": COLLAPSE_KL, "test_active_units": COLLAPSE_UNITS + 1}, False),  # both at the edge: not collapsed
        ({"kl": 0.0008}, True),  # metrics from before the monitor logged KL: the training mean decides
        ({"kl": 0.0008, "test_kl": 5.0}, False),  # the monitor set's KL wins over the training mean
        ({"kl": 22.5}, False),
        ({}, False),  # nothing known: no flag
    ],
)
def test_collapse_is_few_active_units_or_little_kl_at_the_last_epoch(last, collapsed):
    assert ("collapse" in kinds(run(last=last))) is collapsed


def test_a_collapse_flag_names_its_numbers_and_the_cells_it_marks():
    (f,) = run_flags(run("lam1_seed0", 1.0, last={"test_kl": 0.0008, "test_active_units": 0}))
    assert (f.kind, f.run, f.lam, f.fields) == ("collapse", "lam1_seed0", 1.0, ("kl", "active_units"))
    assert "0 active units" in f.message and "KL 0.0008 nats (monitor set)" in f.message and "epoch 30" in f.message
    assert is_collapsed(None, None) is None and is_collapsed(3, None) is False


def test_a_long_collapse_that_ended_before_the_last_epoch_is_flagged_recovered_and_blocks_no_claim():
    def trained(collapsed_epochs, epochs=20):
        lines = [
            {"epoch": e, "test_kl": 0.0 if e in collapsed_epochs else 20.0, "test_active_units": 10}
            for e in range(1, epochs + 1)
        ]
        return Run("lam1_seed0", 1.0, 0, epochs, epochs, {"train.lam": 1.0}, None, None, None, metrics=tuple(lines))

    long = range(1, 2 + int(RECOVERED_FRACTION * 20))  # 3 of 20 epochs: more than the fraction
    (f,) = run_flags(trained(long))
    assert (f.kind, f.lam, f.fields) == ("recovered", 1.0, ("kl",))
    assert "for 3 of its 20 epochs (1 to 3), not at the last" in f.message
    assert excluded_lams([f]) == {} and mark([f], lam=1.0, kinds=["collapse"]) == ""
    assert run_flags(trained(range(1, 1 + int(RECOVERED_FRACTION * 20)))) == []  # 2 of 20: the first epochs, common
    assert [g.kind for g in run_flags(trained(range(15, 21)))] == ["collapse"]  # still at the last epoch: ⚠C only


def test_an_unfinished_run_is_flagged_with_its_epochs():
    (f,) = run_flags(run(epochs=3, planned=30))
    assert f.kind == "unfinished" and "3 of 30 epochs" in f.message and f.fields == ("epochs",)
    assert kinds(run(epochs=None, planned=30)) == ["unfinished"]  # never trained
    assert kinds(run(epochs=30, planned=30)) == []


@pytest.mark.parametrize(
    "acc, flagged",
    [
        (ACCEPT_TARGET, False),
        (0.72, False),
        (ACCEPT_TARGET + ACCEPT_TOL - 1e-9, False),
        (0.86, True),
        (0.98, True),
        (0.3, True),
    ],
)
def test_ais_acceptance_far_from_its_target_is_flagged_per_split(acc, flagged):
    flags = run_flags(run(eval_acc={"test": acc, "train": 0.66}))
    assert [f.fields for f in flags] == ([("ais_acceptance.test",)] if flagged else [])
    if flagged:
        assert f"AIS acceptance {acc:.2f} (eval test), target {ACCEPT_TARGET}" in flags[0].message


def test_the_gaps_records_acceptance_is_checked_too():
    assert [f.fields for f in run_flags(run(gaps_acc=0.95))] == [("gaps.ais_acceptance",)]


def bdmc(*gaps, tol=0.1, converged=True) -> dict:
    return {
        "tol": tol,
        "bdmc": [{"steps": 100 * 2**i, "gap": g} for i, g in enumerate(gaps)],
        "ladder": {"converged": converged},
    }


def test_bdmc_is_judged_at_the_largest_number_of_steps_against_the_records_tolerance():
    assert kinds(run(convergence=bdmc(1.5, 0.3, 0.05))) == []  # converged by the last length
    (f,) = run_flags(run(convergence=bdmc(0.05, 0.3)))
    assert f.kind == "bdmc" and "BDMC gap 0.30 nats at 200 AIS steps, above the tolerance 0.1" in f.message
    assert kinds(run(convergence=bdmc(0.05, 0.3, tol=0.5))) == []  # the record's own tolerance
    assert kinds(run(convergence={"bdmc": [{"steps": 100, "gap": 0.2}]})) == ["bdmc"]  # none recorded: BDMC_TOL
    assert kinds(run(convergence={"bdmc": [{"steps": 100, "gap": None}], "ladder": None})) == []  # damaged: no flag
    assert kinds(run(convergence=bdmc(0.01, converged=False))) == ["ladder"]


def test_learned_runs_carry_no_lambda_and_do_not_exclude_lambda_zero():
    collapsed = {"test_kl": 0.01}
    runs = [
        run("fixed", 0.0, last={"test_kl": 20.0}),
        run("target", 0.0, last=collapsed, learned=True),
        run("big", 1.0, last=collapsed),
        run("short", 0.1, epochs=2),
        run("odd", 0.01, eval_acc={"test": 0.9}),
    ]
    flags = sweep_flags(runs)
    assert [(f.run, f.lam, f.kind) for f in flags] == [
        ("target", None, "collapse"),
        ("big", 1.0, "collapse"),
        ("short", 0.1, "unfinished"),
        ("odd", 0.01, "acceptance"),
    ]
    assert excluded_lams(flags) == {0.1: "unfinished", 1.0: "collapsed"}  # acceptance does not exclude a λ
    assert mark(flags, lam=1.0) == " ⚠C" and mark(flags, run="odd") == " ⚠A" and mark(flags, lam=0.0) == ""
    assert mark(flags, run="big", fields=["epochs"]) == "" and mark(flags, run="big", fields=["kl"]) == " ⚠C"
    assert legend(flags) == "; ".join(
        f"{m} {t}" for k, (m, t) in RULES.items() if k in ("collapse", "unfinished", "acceptance")
    )
    assert legend([]) == ""


def test_runs_of_other_methods_carry_no_lambda_and_say_their_method():
    collapsed = {"test_kl": 0.01}
    runs = [
        run("vae", 0.0, last={"test_kl": 20.0}),
        run("smvi", 0.1, last={"test_kl": 18.0}),
        run("beta4", 0.0, last=collapsed, config={"train.objective": "beta", "train.beta": 4.0}),
        run("flow", 0.0, epochs=2, config={"model.posterior": "flow"}),
    ]
    flags = sweep_flags(runs)
    assert [(f.run, f.lam, f.kind) for f in flags] == [("beta4", None, "collapse"), ("flow", None, "unfinished")]
    assert "(β-VAE, β = 4)" in flags[0].message and "(SMVI, flow q, λ = 0)" in flags[1].message
    assert excluded_lams(flags) == {} and mark(flags, lam=0.0) == ""  # a collapsed β-VAE is not a collapsed λ = 0
