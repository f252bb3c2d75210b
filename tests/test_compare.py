"""`smvi compare A B`: A − B paired item by item on what both runs scored, with the t interval over those items, and
one-line errors for what cannot be compared."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from scipy import stats

from smvi.cli import main
from smvi.report.aggregate import ReportError
from smvi.report.compare import compare_runs, load_run
from smvi.store.rundir import RunDir
from test_frontier_report import write_gaps, write_run, write_ssl


def compare(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


@pytest.fixture
def pair(tmp_path):
    """Two runs (flow and diagonal q, λ = 0) of four shared test images (A's AIS minus B's: 1, 2, 0, 3; gaps: 0.5
    smaller on each image), both with a gap split (A's approximation gap 0.5 larger, amortization 1 smaller) and an
    SSL record (A: +0.4, +0.5, +0.6 points on the same three label subsets)."""
    a = write_run(
        tmp_path / "a",
        {"lam": 0.0},
        {"posterior": "flow"},
        per_image=([-80.0, -81.0, -82.0, -83.0], [2.0, 2.5, 3.0, 3.5]),
    )
    b = write_run(tmp_path / "b", {"lam": 0.0}, per_image=([-81.0, -83.0, -82.0, -86.0], [2.5, 3.0, 3.5, 4.0]))
    write_gaps(a, 3, -80.0, 1.5, 2.0)
    write_gaps(b, 3, -81.0, 1.0, 3.0)
    write_ssl(a, (0.004, 0.005, 0.006))
    write_ssl(b)
    return a.path, b.path


def test_each_quantity_is_paired_over_the_shared_items(pair):
    a, b = (load_run(p)[0] for p in pair)
    got = {(c.quantity, c.split): c.diff for c in compare_runs(a, b)}
    assert set(got) == {
        ("log p(x), AIS", "test"),
        ("ELBO gap", "test"),
        ("ELBO", "test"),
        ("approximation gap", "gap split"),
        ("amortization gap", "gap split"),
        ("SSL accuracy, s = 600", "label subsets"),
    }
    ais = got["log p(x), AIS", "test"]
    sd = (sum((d - 1.5) ** 2 for d in (1, 2, 0, 3)) / 3) ** 0.5
    assert ais.n == 4 and ais.mean == pytest.approx(1.5) and ais.se == pytest.approx(sd / 2)
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert (ais.low, ais.high) == pytest.approx((1.5 - half, 1.5 + half))
    assert ais.p == pytest.approx(2 * stats.t.sf(1.5 / (sd / 2), 3))
    assert got["ELBO gap", "test"].mean == pytest.approx(-0.5) and got["ELBO gap", "test"].se == pytest.approx(0.0)
    assert got["ELBO", "test"].mean == pytest.approx(2.0)  # ELBO = AIS − gap
    assert got["approximation gap", "gap split"].mean == pytest.approx(0.5)
    assert (
        got["amortization gap", "gap split"].mean == pytest.approx(-1.0) and got["amortization gap", "gap split"].n == 2
    )
    ssl = got["SSL accuracy, s = 600", "label subsets"]
    assert ssl.n == 3 and ssl.mean == pytest.approx(0.5) and ssl.se == pytest.approx(0.1 / 3**0.5)


def test_the_command_prints_both_runs_and_a_row_per_quantity(pair):
    r = compare(*pair)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"A: {pair[0]} (SMVI, flow q, λ = 0; seed 0; 3 epochs)"
    assert lines[1] == f"B: {pair[1]} (SMVI, λ = 0; seed 0; 3 epochs)"
    assert "One trained model each" in lines[2] and lines[3].split()[:2] == ["quantity", "scored"]
    rows = {re.split(r"\s{2,}", line)[0]: line for line in lines[4:]}
    assert rows["log p(x), AIS"].split()[3:7] == ["test", "4", "+1.50", "±"]
    assert "-0.50 ± 0.00 nats  [-0.50, -0.50]" in rows["ELBO gap"]
    assert "+0.50 ± 0.06 pp" in rows["SSL accuracy, s = 600"]
    assert r.stderr == ""


def test_a_stale_record_is_left_out_with_a_note(pair):
    write_gaps(RunDir(pair[1]), 1, -81.0, 1.0, 3.0)  # computed at epoch 1 of 3
    r = compare(*pair)
    assert r.exit_code == 0, r.output
    assert "gap split" not in r.stdout and "log p(x), AIS" in r.stdout
    assert "note: " in r.stderr and "stale gaps.json" in r.stderr


def test_what_cannot_be_compared_is_one_line(tmp_path, pair):
    write_run(tmp_path / "sweep" / "runs" / "lam0_seed0", {"lam": 0.0}, ais=-85.0, gap=5.0)
    write_run(tmp_path / "sweep" / "runs" / "lam0.1_seed0", {"lam": 0.1}, ais=-95.0, gap=2.0)
    r = compare(tmp_path / "sweep", pair[1])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "holds 2 runs, not one: name a run directory" in r.stderr
    with pytest.raises(ReportError, match="holds 2 runs"):
        load_run(tmp_path / "sweep")
    (tmp_path / "sweep" / "runs" / "lam0.1_seed0" / "config.toml").unlink()  # a sweep of one run is not a run
    r = compare(tmp_path / "sweep", pair[1])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"is not a run directory: name the run in it, {tmp_path / 'sweep' / 'runs' / 'lam0_seed0'}" in r.stderr
    write_run(tmp_path / "other", {"lam": 0.1}, ais=-95.0, gap=2.0)
    # records without per-image values (written before eval.json kept them): nothing to pair
    r = compare(tmp_path / "sweep" / "runs" / "lam0_seed0", tmp_path / "other")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "share no scored images or label subsets" in r.stderr
    r = compare(tmp_path / "nowhere", pair[1])
    assert r.exit_code == 1 and r.stderr == f"error: run directory {tmp_path / 'nowhere'} does not exist\n"
