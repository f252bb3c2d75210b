"""How the report writes knob values and names runs (smvi.report.naming): distinct λ never print alike -- in the tables,
the figures' ticks and the flags -- a lone 0.1 still prints as 0.1, and a run is named by its method and knob (a β-VAE
run is never "λ = 0")."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from smvi.report.aggregate import Run
from smvi.report.figures import lam_axis
from smvi.report.naming import MIN_DIGITS, NumberFormat, RunNames
from smvi.report.page import make_report
from test_report import markdown_table, write_run


@pytest.mark.parametrize(
    ("values", "texts"),
    [
        ((0.1,), ("0.1",)),
        ((0.0, 0.001, 0.003, 0.01, 1.0), ("0", "0.001", "0.003", "0.01", "1")),
        ((0.1, 0.1000001), ("0.1", "0.1000001")),
        ((1e-5, 1.00000001e-5), ("1e-05", "1.00000001e-05")),
        ((2.0, 50.0, 0.5), ("2", "50", "0.5")),
        ((1 / 3,), ("0.333333",)),
        ((0.3, 0.1 + 0.2), ("0.3", "0.30000000000000004")),
    ],
)
def test_each_value_gets_the_fewest_digits_that_keep_the_values_apart(values, texts):
    fmt = NumberFormat.separating(values)
    assert tuple(fmt(v) for v in values) == texts
    if fmt.digits > MIN_DIGITS:  # one digit fewer would merge two of them
        fewer = NumberFormat(fmt.digits - 1)
        assert len({fewer(v) for v in values}) < len(set(values))


def test_the_lambda_axis_ticks_keep_close_values_apart():
    ax = Figure().subplots()
    lam_axis(ax, [0.0, 0.1, 0.1000001])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.1", "0.1000001"]


def test_a_report_with_close_lambdas_labels_each_apart(tmp_path):
    """0.1 and 0.1000001 are two λ of the sweep: every table row, run and flag says which (they printed alike)."""
    root = tmp_path / "sweep"
    for lam in (0.0, 0.1, 0.1000001):
        write_run(root / f"lam{lam!r}", lam, 0)
    write_run(root / "short", 0.1000001, 1, epochs=2)  # unfinished: flagged
    md = (make_report(root, tmp_path / "out").parent / "results.md").read_text()
    for title in ("Figure 1", "Figure 2"):
        rows = markdown_table(md, title)[:3]
        assert [(r["λ"], r["runs"]) for r in rows] == [("0", "1"), ("0.1", "1"), ("0.1000001", "2 ⚠U")]
    runs = {r["run"]: r["method and knob"] for r in markdown_table(md, "Runs")}
    assert runs == {"lam0.0": "λ = 0", "lam0.1": "λ = 0.1", "lam0.1000001": "λ = 0.1000001", "short": "λ = 0.1000001"}
    assert "short (λ = 0.1000001): unfinished, 2 of 3 epochs" in md
    assert "| λ | 0, 0.1, 0.1000001 |" in md  # the settings' grid


def run(name: str, config: dict, lam: float = 0.0) -> Run:
    return Run(name, lam, 0, 3, 3, {"train.lam": lam, **config}, None, None)


def test_runs_are_named_by_method_and_knob():
    smvi, beta = run("a", {}, 0.1), run("b", {"train.objective": "beta", "train.beta": 2.0})
    flow = run("c", {"model.posterior": "flow"}, 0.01)
    iwae = run("d", {"train.objective": "iwae", "train.iwae_k": 50})
    learned = run("e", {"train.constraint.target": 300.0})
    names = RunNames.of([smvi, beta, flow, iwae, learned])
    assert [names.of_run(r) for r in (smvi, beta, flow, iwae, learned)] == [
        "SMVI, λ = 0.1",
        "β-VAE, β = 2",
        "SMVI, flow q, λ = 0.01",
        "IWAE, k = 50",
        "learned λ, D_SM ≤ 300",
    ]
    alone = RunNames.of([smvi, run("f", {}, 0.0), learned])  # one method: the knob says enough
    assert [alone.of_run(r) for r in (smvi, learned)] == ["λ = 0.1", "learned λ, D_SM ≤ 300"]
    assert RunNames.of([run("g", {}, 0.1), run("h", {}, 0.1000001)]).of_run(run("g", {}, 0.1)) == "λ = 0.1"
