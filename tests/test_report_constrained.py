"""The report's constrained section: runs with a learned λ are recognised from their config (not their name), kept
out of the λ = 0 aggregates, and reported per target with the numbers of their records and metrics; the collapse
flag follows its thresholds."""

from __future__ import annotations

import csv
import json

import pytest

from smvi.report.aggregate import Run, aggregate, collect_runs
from smvi.report.constrained import ConstrainedRun, constrained_runs, is_constrained
from smvi.report.page import make_report
from smvi.settings.run import RunConfig
from smvi.store.rundir import RunDir
from test_report import eval_numbers, read_csv, ssl_json, write_run

# name, measure, target, λ per epoch, training measure per epoch, active units, KL, test D_SM, test gap
CONSTRAINED = (
    ("dsm300_seed0", "dsm", 300.0, (1e-3, 4e-3, 9e-3), (420.0, 330.0, 296.5), 24, 31.0, 280.0, 2.5),
    ("gap1_seed0", "gap", 1.0, (1e-3, 0.2, 3.1), (5.0, 2.0, 1.2), 1, 0.04, 3.0, 0.3),
    ("lam0_seed9", "dsm", 30.0, (1e-3, 0.02, 0.05), (100.0, 50.0, 31.0), 3, 0.2, 35.0, 1.1),
)


def write_constrained(d, measure, target, lams, avgs, units, kl, d_sm, gap):
    d.mkdir(parents=True)
    cfg = RunConfig.model_validate(
        {"train": {"epochs": 3, "seed": 0, "constraint": {"target": target, "measure": measure}}}
    )
    RunDir(d).write_config(cfg)
    lines = [
        {
            "epoch": e + 1,
            "lam": lam,
            "constraint_avg": avg,
            "constraint_measure": measure,
            "constraint_target": target,
            "constraint_status": "active",
            "test_active_units": units,
            "test_kl": kl + (3 - e),
        }
        for e, (lam, avg) in enumerate(zip(lams, avgs, strict=True))
    ]
    lines[-1]["test_kl"] = kl
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    ev = eval_numbers(0.0, 0)
    for split in ("test", "train"):
        ev["splits"][split]["d_sm"]["mean"] = d_sm
        ev["splits"][split]["gap"]["mean"] = gap + (0.5 if split == "train" else 0)
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "ssl.json").write_text(json.dumps(ssl_json(0.0, 0)))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for lam in (0.0, 0.1):
        write_run(root / "runs" / f"lam{lam:g}_seed0", lam, 0)
    for name, *rest in CONSTRAINED:
        write_constrained(root / "runs" / name, *rest)
    return root


def test_constrained_runs_are_recognised_by_config_and_kept_out_of_lambda_zero(sweep):
    runs, notes = collect_runs(sweep)
    assert {r.name.split("/")[-1] for r in runs if is_constrained(r)} == {"dsm300_seed0", "gap1_seed0", "lam0_seed9"}
    rows, _ = aggregate(runs)
    zero = [r for r in rows if r.lam == 0.0 and r.quantity == "gap" and r.split == "test"]
    assert len(zero) == 1 and zero[0].n_runs == 1  # the fixed λ = 0 run alone
    assert zero[0].mean == pytest.approx(eval_numbers(0.0, 0)["splits"]["test"]["gap"]["mean"])
    assert not any("train.constraint" in n for n in notes)  # not "aggregates mix them": they are not mixed


def test_the_report_gives_each_target_its_records_and_last_epoch(sweep):
    out = make_report(sweep).parent
    assert {"figc1_targets.png", "figc2_lambda.png", "figc3_plane.png", "constrained.csv", "fig1_gap.png"} <= {
        p.name for p in out.iterdir()
    }
    with (out / "constrained.csv").open(newline="") as f:
        got = {r["run"].split("/")[-1]: r for r in csv.DictReader(f)}
    for name, measure, target, lams, avgs, units, kl, d_sm, gap in CONSTRAINED:
        r = got[name]
        assert (r["measure"], float(r["target"]), int(r["epochs"])) == (measure, target, 3)
        assert (float(r["achieved"]), float(r["lam_end"])) == (avgs[-1], lams[-1])
        assert (float(r["test_d_sm"]), float(r["test_gap"]), float(r["train_gap"])) == (d_sm, gap, gap + 0.5)
        assert (float(r["active_units"]), float(r["kl"])) == (units, kl)
    assert [got[n]["collapsed"] for n in ("dsm300_seed0", "gap1_seed0", "lam0_seed9")] == ["False", "True", "False"]
    md = (out / "results.md").read_text()
    assert "Constrained runs" in md and "| learned λ, D_SM ≤ 300 |" in md and "| learned λ, gap ≤ 1 |" in md
    assert read_csv(out / "results.csv")[("gap", "test", "", "0.0")]["n_runs"] == "1"


def test_a_sweep_of_targets_alone_is_reported(tmp_path):
    root = tmp_path / "sw"
    write_constrained(
        root / "runs" / "dsm10_seed0", "dsm", 10.0, (1e-3, 1e-2, 0.1), (40.0, 20.0, 10.5), 12, 9.0, 11.0, 0.8
    )
    out = make_report(root).parent
    names = {p.name for p in out.iterdir()}
    assert {"figc1_targets.png", "figc2_lambda.png", "figc3_plane.png"} <= names and "fig1_gap.png" not in names
    settings = (out / "results.md").read_text().split("## Settings", 1)[1]
    assert "| learned-λ runs | 1 |" in settings and "| train.constraint.target | 10 |" in settings
    assert "| λ |" not in settings and "train.lam " not in settings  # no fixed λ, and λ = 0 is not its setting


def test_a_torn_metrics_line_and_epochs_past_the_checkpoint_are_not_read(sweep):
    path = sweep / "runs" / "dsm300_seed0" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"epoch": 4, "lam"')
    runs, _ = collect_runs(sweep)
    notes: list[str] = []
    c = next(c for c in constrained_runs(runs, notes) if c.run.name.endswith("dsm300_seed0"))
    assert c.lam_end == 9e-3 and [e for e, _ in c.trajectory] == [1, 2, 3]


@pytest.mark.parametrize(
    "units, kl, collapsed", [(2, 5.0, True), (3, 0.09, True), (3, 0.1, False), (None, None, None), (None, 0.5, False)]
)
def test_collapse_is_few_active_units_or_little_kl(units, kl, collapsed):
    run = Run("r", 0.0, 0, 3, 3, {"train.constraint.target": 1.0}, None, None)
    assert ConstrainedRun(run, "dsm", 1.0, None, None, None, (), units, kl).collapsed is collapsed
