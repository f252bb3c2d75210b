"""The report's flags, provenance, training curves, axes and settings on a sweep with a collapsed run, an unfinished
run, an AIS acceptance far from its target and an unconverged BDMC check: each flag is listed and marked in the cell
of its number; collapsed λ do not set the figures' y-range; settings are a collapsible table."""

from __future__ import annotations

import json

import pytest
from matplotlib.figure import Figure

import smvi.report.figures as F
from smvi.report.aggregate import Row
from smvi.report.page import make_report
from smvi.settings.stages import EvalConfig
from smvi.store.records import make_header
from smvi.store.rundir import RunDir
from test_report import convergence_json, markdown_table, write_run

LAMS = (0.0, 0.1, 1.0)


def metrics(d, kl: float, units: int | None, epochs: int = 3) -> None:
    lines = [
        {
            "epoch": e,
            "seconds": 10.0 * e,
            "device": "cpu",
            "threads": 2,
            "elbo": -150.0 + 10 * e,
            "test_elbo": -145.0 + 10 * e,
            "d_sm": 50.0 / e,
            "test_d_sm": 60.0 / e,
            "kl": kl * e / epochs,
            **({} if units is None else {"test_kl": kl * e / epochs, "test_active_units": units}),
        }
        for e in range(1, epochs + 1)
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


@pytest.fixture
def sweep(tmp_path):
    """λ = 0, 0.1 healthy (0.1 with AIS acceptance 0.93 on test), λ = 1 collapsed (KL 0.001, 0 active units) with
    an unconverged BDMC check; one more λ = 0.1 run unfinished (2 of 3 epochs)."""
    root = tmp_path / "sweep"
    for lam in LAMS:
        d = root / f"lam{lam:g}_seed0"
        write_run(d, lam, 0)
        metrics(d, 0.001 if lam == 1 else 20.0, 0 if lam == 1 else 12)
    write_run(root / "lam0.1_seed1", 0.1, 1, epochs=2)
    metrics(root / "lam0.1_seed1", 18.0, None, epochs=2)  # old-style metrics: the training KL only
    path = root / "lam0.1_seed0" / "eval.json"
    ev = json.loads(path.read_text())
    ev["splits"]["test"]["ais_acceptance"] = 0.93
    path.write_text(json.dumps(ev))
    (root / "lam1_seed0" / "convergence.json").write_text(
        json.dumps(
            convergence_json(
                "lam1_seed0", [(100, 0.9, 0.1), (300, 0.6, 0.1)], [(100, -90.0, 0.3), (300, -89.0, 0.3)], False
            )
        )
    )
    return root


def test_every_flag_is_listed_and_marked_where_its_number_is(sweep):
    page = make_report(sweep)
    md, html = (page.parent / "results.md").read_text(), page.read_text()
    flags = md.split("## Flags", 1)[1].split("![", 1)[0]
    for text in (
        "lam1_seed0 (λ = 1): posterior collapse at epoch 3: 0 active units and KL 0.001 nats (monitor set)",
        "lam0.1_seed1 (λ = 0.1): unfinished, 2 of 3 epochs",
        "lam0.1_seed0 (λ = 0.1): AIS acceptance 0.93 (eval test), target 0.65",
        "lam1_seed0 (λ = 1): BDMC gap 0.60 nats at 300 AIS steps, above the tolerance 0.1",
        "lam1_seed0 (λ = 1): the AIS ladder on test data did not converge",
        "⚠C posterior collapse",
        "⚠U unfinished",
        "⚠A AIS acceptance outside 0.65 ± 0.15",
        "⚠B BDMC",
        "⚠L",
    ):
        assert text in flags, text
    runs = {r["run"]: r for r in markdown_table(md, "Runs")}
    assert (runs["lam1_seed0"]["KL, last epoch (nats)"], runs["lam1_seed0"]["active units"]) == ("0.001 ⚠C", "0 ⚠C")
    assert runs["lam0.1_seed1"]["epochs"] == "2/3 ⚠U" and runs["lam0.1_seed1"]["KL, last epoch (nats)"] == "18"
    assert runs["lam0.1_seed0"]["AIS acceptance, test / train"].endswith(" ⚠A")
    assert runs["lam0_seed0"]["epochs"] == "3/3" and runs["lam0_seed0"]["KL, last epoch (nats)"] == "20"
    fig1 = {r["λ"]: r for r in markdown_table(md, "Figure 1")}
    assert set(fig1) == {"0", "0.1", "1 ⚠C"} and fig1["0.1"]["runs"] == "2 ⚠U"
    assert fig1["0.1"]["log p(x) (AIS), test"].endswith("⚠A")
    assert not fig1["0.1"]["log p(x) (AIS), train"].endswith("⚠A")
    assert fig1["1 ⚠C"]["KL(q ‖ p(z)), monitor set, last epoch"] == "0.001 ⚠C"
    assert fig1["1 ⚠C"]["active units, last epoch"] == "0 ⚠C" and fig1["0"]["active units, last epoch"] == "12"
    # one run logged the monitor-set KL, the other (old metrics) only the training mean: each cell says how many
    assert fig1["0.1"]["KL(q ‖ p(z)), training mean, last epoch"] == "18 (1 of 2 runs)"
    assert fig1["0.1"]["KL(q ‖ p(z)), monitor set, last epoch"] == "20 (1 of 2 runs)"
    assert fig1["0.1"]["active units, last epoch"] == "12 (1 of 2 runs)"
    assert "of" not in fig1["0.1"]["ELBO gap, test"]  # both runs evaluated
    conv = markdown_table(md, "AIS convergence")[0]
    assert conv["BDMC gap, 300 steps"] == "0.60 ± 0.10 ⚠B" and conv["BDMC gap, 100 steps"] == "0.90 ± 0.10"
    assert conv["ladder converged"] == "no ⚠L"
    assert "<span class='flag'>⚠C</span>" in html and "<ul class='flags'>" in html
    assert "## Notes\n\nnone" in md  # flags are not file problems


def test_no_flag_says_none(tmp_path):
    root = tmp_path / "sweep"
    for lam in (0.0, 0.1):
        write_run(root / f"lam{lam:g}_seed0", lam, 0)
        metrics(root / f"lam{lam:g}_seed0", 20.0, 12)
    md = (make_report(root).parent / "results.md").read_text()
    assert "## Flags\n\nnone\n" in md and "⚠" not in md.split("## Flags", 1)[1].split("![", 1)[0]
    assert "⚠" not in "".join(md.split("## Figure 1", 1)[1].split("## Reference")[0])  # no cell is marked


def test_provenance_wall_times_versions_and_machine(sweep):
    rd = RunDir(sweep / "lam0_seed0")  # one record as the stages write them now: versions and machine in its header
    rec = rd.read_record("eval")
    rd.write_record(
        "eval",
        rec.model_copy(
            update={"header": make_header("eval", rd.fingerprint(), 3, EvalConfig(), device="cpu"), "seconds": 754.0}
        ),
    )
    md = (make_report(sweep).parent / "results.md").read_text()
    prov = {r["run"]: r for r in markdown_table(md, "Provenance")}
    row = prov["lam0_seed0"]
    assert row["train"] == "60 s" and row["device, threads (train)"] == "cpu, 2"  # 10 + 20 + 30 s
    assert row["evaluate"] == "12.6 min" and row["ssl"] == "2 s" and row["convergence"] == "—"
    assert row["torch"] not in ("unknown", "—") and row["smvi"] != "legacy" and ", cpu" in row["machine (records)"]
    legacy = prov["lam1_seed0"]
    assert (legacy["smvi"], legacy["torch"], legacy["machine (records)"]) == ("legacy", "unknown", "unknown")
    assert legacy["convergence"] == "9 s"
    head = md.split("## Claims", 1)[0]
    assert "report written" in head and f"torch {row['torch']}" in head
    assert (
        "wall time summed over runs: train 3.5 min (4 runs), eval 12.6 min (the 1 of 4 runs that recorded it)" in head
    )


def test_old_headers_still_parse_and_new_fields_are_optional(sweep):
    rd = RunDir(sweep / "lam0_seed0")
    h = make_header("eval", rd.fingerprint(), 3, EvalConfig(), device="cpu").model_dump(by_alias=True)
    assert h["torch_version"] and h["python_version"] and h["host"]["cpus"] >= 1 and h["host"]["device"] == "cpu"
    from smvi.store.records import Header

    old = {k: v for k, v in h.items() if k not in ("torch_version", "python_version", "host")}
    assert Header.model_validate(old).host is None  # written by an older smvi
    with pytest.raises(ValueError):
        Header.model_validate({**h, "gpu": "x"})  # still no unknown keys


def test_settings_are_a_collapsible_table_not_a_json_dump(sweep):
    page = make_report(sweep)
    html = page.read_text()
    details = html.split("<details>", 1)[1]
    assert details.startswith("<summary>Settings</summary>") and "<td>train.lr</td><td>0.001</td>" in details
    assert "<pre>" not in html and '"common config"' not in html
    md = (page.parent / "results.md").read_text()
    assert "| model.z_dim | 50 |" in md and "| λ | 0, 0.1, 1 |" in md


def test_training_curves_are_drawn_from_the_metrics(sweep):
    from smvi.report.aggregate import collect_runs
    from smvi.report.curves import curve

    out = make_report(sweep).parent
    assert (out / "fig_training.png").read_bytes()[:4] == b"\x89PNG"
    runs = {r.name: r for r in collect_runs(sweep)[0]}
    assert curve(runs["lam0.1_seed1"], "kl") == ([1, 2], [9.0, 18.0])  # training mean where no monitor KL
    assert curve(runs["lam1_seed0"], "kl")[1][-1] == 0.001
    assert curve(runs["lam0_seed0"], "d_sm")[1] == [60.0, 30.0, 20.0]  # the monitor set's, not the training mean


def rows_ssl(means: dict[float, float]) -> list[Row]:
    return [Row("ssl_accuracy", "test", 600, lam, m, 0.2, 1, "label subsets", "percent") for lam, m in means.items()]


def drawn(monkeypatch) -> list[Figure]:
    got: list[Figure] = []
    monkeypatch.setattr(F, "png", lambda fig: got.append(fig) or b"")
    return got


def test_a_collapsed_lambda_does_not_stretch_figure_2(monkeypatch):
    got = drawn(monkeypatch)
    rows = rows_ssl({0.0: 93.4, 0.01: 93.0, 0.1: 92.2, 1.0: 21.2})
    gains = [Row("ssl_gain", "test", 600, lam, g, 0.1, 1, "x", "points") for lam, g in ((0.01, -0.4), (1.0, -72.3))]
    F.figure_ssl(rows + gains, [0.0, 0.01, 0.1, 1.0], frozenset({1.0}))
    a, b = got[0].axes
    assert 90 < a.get_ylim()[0] < 92 and 93.6 < a.get_ylim()[1] < 95  # 92–94 % fills the panel
    assert [t.get_text() for t in a.texts if "off scale" in t.get_text()] == ["λ=1 off scale: 21.2 %"]
    assert b.get_yscale() == "linear" and b.get_ylim()[0] > -2  # the −72-point gain is off scale, not the scale
    F.figure_ssl(rows, [0.0, 0.01, 0.1, 1.0])  # without the flag the collapse sets the range
    assert got[1].axes[0].get_ylim()[0] < 22


def test_focus_widens_for_a_near_point_and_marks_a_far_one():
    ax = Figure().subplots()
    F.focus(ax, [2.0, 5.0], [(1.0, 0.5, "λ=1")])  # within half the range: shown, the scale widened
    assert ax.get_ylim()[0] < 0.5 and not ax.texts
    ax = Figure().subplots()
    F.focus(ax, [2.0, 5.0], [(1.0, -40.0, "λ=1"), (1.0, -40.04, "λ=1"), (3.0, 90.0, "λ=3")], unit=" nats")
    assert 1.5 < ax.get_ylim()[0] < 2.0 and 5.0 < ax.get_ylim()[1] < 5.5
    assert sorted(t.get_text() for t in ax.texts) == ["λ=1 off scale: -40.0 nats", "λ=3 off scale: 90.0 nats"]


def test_when_every_lambda_collapsed_the_series_is_drawn_and_scaled_as_usual(monkeypatch):
    got = drawn(monkeypatch)
    F.figure_ssl(rows_ssl({0.0: 30.0, 1.0: 21.2}), [0.0, 1.0], frozenset({0.0, 1.0}))
    ax = got[0].axes[0]
    assert ax.get_ylim()[0] < 21.2 and ax.get_ylim()[1] > 30.0
    assert not [t for t in ax.texts if "off scale" in t.get_text()]
    assert ax.get_legend_handles_labels()[1][0] == "s = 600: encoder μ"  # the line is drawn, not only × marks
