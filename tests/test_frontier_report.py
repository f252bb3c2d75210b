"""The frontier figure and table of the report, on hand-written run directories: runs are grouped by method from their
config (objective, family, knob), constrained runs are left out, only current gaps records are drawn, and an
SMVI-only sweep's report does not change until a run has a gaps record, and then only by the new figure and table."""

from __future__ import annotations

import json

import pytest
import torch

from smvi.report.aggregate import aggregate, collect_runs, lam_series
from smvi.report.frontier import (
    DOMINANCE_Z,
    Estimate,
    FrontierPoint,
    dominated_by,
    frontier_points,
    gap_bars,
    method_colours,
    method_of,
)
from smvi.report.page import make_report
from smvi.settings.run import RunConfig
from smvi.settings.stages import EvalConfig, GapConfig
from smvi.store.records import EvalRecord, EvalSplit, GapsFit, GapsPerImage, GapsRecord, PerImage, make_header
from smvi.store.rundir import RunDir
from smvi.store.stats import MeanSE, mean_se

EPOCHS = 3


def ms(mean: float, se: float = 0.1, n: int = 100) -> MeanSE:
    return MeanSE(mean=mean, se=se, n=n)


def write_run(
    d,
    train: dict,
    model: dict | None = None,
    *,
    ais: float = 0.0,
    gap: float = 0.0,
    gaps: tuple | None = None,
    gaps_epoch: int = EPOCHS,
    per_image: tuple | None = None,
) -> RunDir:
    """A finished run with an eval record (test AIS and gap as given, or from ``per_image`` = (AIS values, gap
    values) of test images 0, 1, …) and, if ``gaps`` = (approximation, amortization), a gaps record at
    ``gaps_epoch``."""
    d.mkdir(parents=True)
    rd = RunDir(d)
    cfg = RunConfig.model_validate({"train": {"epochs": EPOCHS, **train}, "model": model or {}})
    rd.write_config(cfg)
    rd.metrics_path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, EPOCHS + 1)))
    if per_image is None:
        split = EvalSplit(n=100, elbo=ms(ais - gap), d_sm=ms(50.0), ais=ms(ais, 2.0), gap=ms(gap, 0.2))
    else:
        a, g = (torch.as_tensor(v, dtype=torch.float64) for v in per_image)
        values = {"ais": a.tolist(), "gap": g.tolist(), "elbo": (a - g).tolist(), "d_sm": [50.0] * len(a)}
        split = EvalSplit(
            n=len(a),
            indices=list(range(len(a))),
            per_image=PerImage(**values),
            **{k: mean_se(v) for k, v in values.items()},
        )
    rd.write_record(
        "eval",
        EvalRecord(
            header=make_header("eval", rd.fingerprint(), EPOCHS, EvalConfig()),
            run=d.name,
            lam=cfg.train.lam,
            splits={"test": split},
        ),
    )
    if gaps is not None:
        write_gaps(rd, gaps_epoch, ais, *gaps)
    return rd


def write_gaps(rd: RunDir, epoch: int, ais: float, a: float, b: float) -> None:
    """A gaps record of ``rd`` at ``epoch``: two images with log p(x) ``ais``, approximation gap ``a`` ± 0.1 and
    amortization gap ``b`` ± 0.2."""
    cfg = rd.read_config()
    per = GapsPerImage(
        log_px=[ais, ais],
        elbo_amortized=[ais - a - b] * 2,
        elbo_local=[ais - a] * 2,
        approximation=[a - 0.1, a + 0.1],
        amortization=[b - 0.2, b + 0.2],
    )
    knob = {"smvi": {"lam": cfg.train.lam}, "beta": {"beta": cfg.train.beta}, "iwae": {"iwae_k": cfg.train.iwae_k}}[
        cfg.train.objective
    ]
    rd.write_record(
        "gaps",
        GapsRecord(
            header=make_header("gaps", rd.fingerprint(), epoch, GapConfig()),
            run=rd.path.name,
            posterior=cfg.model.posterior,
            objective=cfg.train.objective,
            knob=knob,
            n=2,
            indices=[0, 1],
            **{k: mean_se(getattr(per, k)) for k in GapsPerImage.model_fields},
            gap=mean_se([a + b] * 2),
            fit=GapsFit(steps=[10], converged=True, skipped=0, last_gain_max=0.0, traces=[[1.0]]),
            per_image=per,
        ),
    )


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "study"
    for seed in (0, 1):
        write_run(
            root / "smvi" / f"lam0_seed{seed}",
            {"lam": 0.0, "seed": seed},
            ais=-86.0 - seed,
            gap=5.0 + seed,
            gaps=(1.0, 4.0) if seed == 0 else None,
        )
    write_run(root / "smvi" / "lam0.1_seed0", {"lam": 0.1}, ais=-97.0, gap=2.0, gaps=(0.5, 1.5), gaps_epoch=1)
    write_run(root / "beta2" / "lam0_seed0", {"objective": "beta", "beta": 2.0}, ais=-95.0, gap=3.0)
    write_run(root / "iwae5" / "lam0_seed0", {"objective": "iwae", "iwae_k": 5}, ais=-85.0, gap=6.0)
    write_run(root / "flow" / "lam0_seed0", {"lam": 0.0}, {"posterior": "flow"}, ais=-85.5, gap=3.5, gaps=(0.2, 3.3))
    write_run(root / "constrained" / "lam0_seed0", {"constraint": {"target": 5.0}}, ais=-90.0, gap=2.5)
    return root


def test_a_run_s_method_comes_from_its_config():
    flat = lambda tree: {f"{s}.{k}": v for s, sec in tree.items() for k, v in sec.items()}  # noqa: E731
    assert method_of(flat({"train": {"objective": "smvi", "lam": 0.01}, "model": {"posterior": "diagonal"}})) == (
        "SMVI",
        "λ",
        0.01,
    )
    assert method_of(flat({"train": {"objective": "beta", "beta": 4.0, "lam": 0.0}})) == ("β-VAE", "β", 4.0)
    assert method_of(flat({"train": {"objective": "iwae", "iwae_k": 50}, "model": {"posterior": "full"}})) == (
        "IWAE, full q",
        "k",
        50.0,
    )
    assert method_of({"train.objective": "smvi", "train.lam": 0.0, "train.constraint.target": 5.0}) is None


def test_runs_are_grouped_by_method_and_knob(study):
    runs, _ = collect_runs(study)
    points = {(p.method, p.label): p for p in frontier_points(runs)}
    assert set(points) == {
        ("SMVI", "λ=0"),
        ("SMVI", "λ=0.1"),
        ("β-VAE", "β=2"),
        ("IWAE", "k=5"),
        ("SMVI, flow q", "λ=0"),
    }
    assert not any("constrained" in r for p in points.values() for r in p.runs)  # not mistaken for SMVI at λ = 0
    two = points["SMVI", "λ=0"]  # two training seeds: mean over runs, SE over runs
    assert two.runs == ("smvi/lam0_seed0", "smvi/lam0_seed1") and two.log_px.mean == pytest.approx(-86.5)
    assert two.log_px.se == pytest.approx(0.5) and two.log_px.se_over == "training seeds"
    assert two.gap.mean == pytest.approx(5.5) and two.approximation.mean == pytest.approx(1.0)
    beta = points["β-VAE", "β=2"]  # one run: its own SE over test points
    assert beta.log_px.mean == -95.0 and beta.log_px.se == 2.0 and beta.log_px.se_over == "test points"
    assert beta.approximation is None and points["SMVI", "λ=0.1"].approximation is None  # stale gaps: left out


def test_only_current_gaps_records_make_bars(study):
    runs, notes = collect_runs(study)
    bars = gap_bars(runs)
    assert [b.run for b in bars] == ["smvi/lam0_seed0", "flow/lam0_seed0"]
    flow = bars[1]
    assert flow.approximation == pytest.approx((0.2, 0.1)) and flow.amortization == pytest.approx((3.3, 0.2))
    assert any("smvi/lam0.1_seed0: stale gaps.json (computed at epoch 1, the run is at epoch 3)" in n for n in notes)


def test_the_report_draws_the_frontier_and_tabulates_it(study, tmp_path):
    page = make_report(study, tmp_path / "out")
    png = (page.parent / "fig4_frontier.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (page.parent / "results.md").read_text()
    table = md.split("## Figure 4: the trade-off frontier")[1].split("\n## ")[0]
    assert "| SMVI | λ=0 | 2 | -86.50 ± 0.50 | 5.50 ± 0.50 | 1.00 ± 0.10 † | 4.00 ± 0.20 † | none |" in table
    assert "| β-VAE | β=2 | 1 | -95.00 ± 2.00 † | 3.00 ± 0.20 † | — | — | none |" in table  # within noise
    assert "| IWAE | k=5 |" in table and "| SMVI, flow q | λ=0 |" in table and "constrained" not in table
    assert "fig4_frontier.png" in md and "Figure 4" in page.read_text()


def test_an_smvi_sweep_s_report_is_as_before_until_a_run_has_a_gaps_record(tmp_path):
    root = tmp_path / "sweep"
    for lam in (0.0, 0.1):
        write_run(root / "runs" / f"lam{lam:g}_seed0", {"lam": lam}, ais=-86.0 - lam, gap=5.0 - 10 * lam)
    write_run(root / "runs" / "lam0.01_seed0", {"lam": 0.01}, ais=-87.0, gap=4.0)
    make_report(root, tmp_path / "plain")
    assert not (tmp_path / "plain" / "fig4_frontier.png").exists()  # one method, no gaps: nothing new
    assert "Figure 4" not in (tmp_path / "plain" / "results.md").read_text()
    (root / "runs" / "lam0.01_seed0").rename(tmp_path / "moved")  # the same run again, now with a gaps record
    write_run(root / "runs" / "lam0.01_seed0", {"lam": 0.01}, ais=-87.0, gap=4.0, gaps=(1.0, 3.0))
    gaps = tmp_path / "withgaps"
    make_report(root, gaps)
    assert (gaps / "fig4_frontier.png").exists()
    assert (gaps / "results.csv").read_text() == (tmp_path / "plain" / "results.csv").read_text()
    md = (gaps / "results.md").read_text()
    notes = lambda text: text.split("## Notes")[1].split("\n## ")[0]  # noqa: E731
    assert notes(md) == notes((tmp_path / "plain" / "results.md").read_text())
    assert "| SMVI | λ=0.01 | 1 | -87.00 ± 2.00 † | 4.00 ± 0.20 † | 1.00 ± 0.10 †" in md


def test_the_lambda_axis_is_smvi_alone_other_methods_are_not_lambda_zero(study, tmp_path):
    runs, _ = collect_runs(study)
    on, off = lam_series(runs)
    assert [r.name for r in on] == ["smvi/lam0_seed0", "smvi/lam0_seed1", "smvi/lam0.1_seed0"]
    assert {r.name for r in off} == {
        "beta2/lam0_seed0",
        "iwae5/lam0_seed0",
        "flow/lam0_seed0",
        "constrained/lam0_seed0",
    }
    rows, notes = aggregate(runs)
    (gap0,) = [r for r in rows if (r.quantity, r.split, r.lam) == ("gap", "test", 0.0)]
    assert gap0.n_runs == 2 and gap0.mean == pytest.approx(5.5)  # the β-VAE, IWAE and flow runs are not pooled in
    assert any("3 runs of other methods" in n and "beta2/lam0_seed0" in n for n in notes)
    page = make_report(study, tmp_path / "out")
    assert "3 runs of other methods" in page.read_text(encoding="utf-8")


def test_a_sweep_of_another_family_alone_keeps_its_lambda_axis(tmp_path):
    root = tmp_path / "flow"
    for lam in (0.0, 0.1):
        write_run(root / "runs" / f"lam{lam:g}_seed0", {"lam": lam}, {"posterior": "flow"}, ais=-86.0, gap=4.0)
    runs, _ = collect_runs(root)
    assert [r.name for r in lam_series(runs)[0]] == ["runs/lam0_seed0", "runs/lam0.1_seed0"]


def point(name: str, log_px: float, gap: float, se: float | None = 0.5) -> FrontierPoint:
    return FrontierPoint(
        name, "λ", 0.0, (name,), Estimate(log_px, se, 1, "test points"), Estimate(gap, se, 1, "test points")
    )


def test_methods_that_differ_in_a_setting_in_parentheses_share_a_colour_in_shades():
    from matplotlib.colors import to_rgb

    rejection = [f"SMVI, rejection q (acceptance {a})" for a in ("0.05", "0.2", "0.5")]
    methods = ["SMVI", "SMVI, flow q", *rejection, "IWAE"]
    got = method_colours(methods)
    assert list(got) == methods
    assert got["SMVI"] == to_rgb("C0") and got["SMVI, flow q"] == to_rgb("C1") and got["IWAE"] == to_rgb("C3")
    shades = [got[m] for m in rejection]
    hue = to_rgb("C2")
    assert shades[1] != hue and len(set(shades)) == 3  # three shades of the kin's one colour
    for shade in shades:  # each is the colour mixed with white or with black: its channels keep their order
        assert sorted(range(3), key=lambda c: shade[c]) == sorted(range(3), key=lambda c: hue[c])
    assert sum(shades[0]) > sum(hue) > sum(shades[2])  # lighter first, darker last


def test_a_point_is_dominated_only_when_beaten_on_both_axes_beyond_noise():
    margin = DOMINANCE_Z * 2**0.5 * 0.5  # two points with SE 0.5 each: the combined SE is 0.5·√2
    base = point("base", -90.0, 5.0)
    better = point("better", -90.0 + margin + 0.01, 5.0 - margin - 0.01)  # just beyond noise on both
    close = point("close", -90.0 + margin - 0.01, 5.0 - margin - 0.01)  # within noise on log p(x)
    one_axis = point("one axis", -80.0, 6.0)  # far better log p(x), worse gap
    empty = FrontierPoint("empty", "λ", 1.0, ("e",), None, None)  # no eval record: not a point of the plane
    got = dominated_by([base, better, close, one_axis, empty])
    assert got[base] == [better] and got[better] == [] and got[close] == [] and got[one_axis] == []
    assert empty not in got
    exact = point("exact", -90.0 + DOMINANCE_Z * 0.5 + 0.01, 5.0 - DOMINANCE_Z * 0.5 - 0.01, se=None)
    assert dominated_by([base, exact])[base] == [exact]  # a missing SE counts as 0: only base's own SE remains


def test_points_scored_on_the_same_images_are_compared_pair_by_pair(tmp_path):
    """log p(x) varies across images far more than between two models on the same image: paired over the images, a
    1-nat gain and a 0.5-nat smaller gap are far beyond noise, while the unpaired SEs (about 2 nats) hide them; runs
    of different training seeds are not paired."""
    g = torch.Generator().manual_seed(0)
    logpx, gap = -90 + 20 * torch.randn(100, generator=g), 5 + torch.rand(100, generator=g)
    noise = lambda: 0.1 * torch.randn(100, generator=g)  # noqa: E731
    write_run(tmp_path / "smvi" / "lam0_seed0", {"lam": 0.0}, per_image=(logpx, gap))
    write_run(
        tmp_path / "flow" / "lam0_seed0",
        {"lam": 0.0},
        {"posterior": "flow"},
        per_image=(logpx + 1 + noise(), gap - 0.5 + noise()),
    )
    write_run(
        tmp_path / "full" / "lam0_seed1",
        {"lam": 0.0, "seed": 1},
        {"posterior": "full"},
        per_image=(logpx + 1 + noise(), gap - 0.5 + noise()),
    )
    runs, _ = collect_runs(tmp_path)
    points = {p.method: p for p in frontier_points(runs)}
    base, flow = points["SMVI"], points["SMVI, flow q"]
    assert "SMVI, full q" in points
    assert base.log_px.se > 1.5  # the spread across images
    assert dominated_by(list(points.values()), runs)[base] == [flow]  # paired; full: another seed, unpaired
    assert dominated_by(list(points.values()))[base] == []  # without the runs: unpaired, within noise


def test_a_collapsed_point_is_marked_and_does_not_set_the_y_range(tmp_path):
    """The convention of the λ figures (smvi.report.figures): a point with a run flagged as a posterior collapse is
    marked ⚠C in the table and drawn as a red × that leaves the y-range to the other points (λ = 1 at −200 nats would
    otherwise squeeze them into a sliver)."""
    from matplotlib.figure import Figure

    from smvi.report.frontier import _plane, frontier_section

    for lam, ais, gap in ((0.0, -86.0, 5.0), (0.1, -98.0, 2.0), (1.0, -200.0, 0.01)):
        write_run(tmp_path / "smvi" / f"lam{lam:g}_seed0", {"lam": lam}, ais=ais, gap=gap)
    write_run(tmp_path / "iwae5" / "lam0_seed0", {"objective": "iwae", "iwae_k": 5}, ais=-85.0, gap=8.0)
    runs, _ = collect_runs(tmp_path)
    collapsed = frozenset({"smvi/lam1_seed0"})
    _, [(_, _, rows)] = frontier_section(runs, collapsed)
    assert [r[1] for r in rows] == ["λ=0", "λ=0.1", "λ=1 ⚠C", "k=5"]
    ax = Figure().subplots()
    _plane(ax, [p for p in frontier_points(runs) if p.log_px], collapsed)
    low, high = ax.get_ylim()
    assert -110 < low < -98 - 2 and -85 + 2 < high < -75  # the others, their SEs and a margin; not λ = 1
    _plane(ax := Figure().subplots(), [p for p in frontier_points(runs) if p.log_px], frozenset())
    assert ax.get_ylim()[0] < -200  # unflagged, it sets the range like any point


def test_methods_differ_by_design_but_a_difference_within_the_lambda_axis_is_noted(study, tmp_path):
    """The objective, knob and family tell a study's methods apart: not a "mix" to warn about. Any other setting that
    differs (here the SMVI runs' latent size) is, and so is a family setting that differs within the λ axis."""
    _, notes = collect_runs(study)
    assert not any("aggregates mix them" in n for n in notes), notes
    write_run(study / "smvi" / "lam0.01_seed0", {"lam": 0.01}, {"z_dim": 8}, ais=-88.0, gap=4.0)
    _, notes = collect_runs(study)
    assert [n for n in notes if "aggregates mix them" in n] == [
        "runs differ in model.z_dim (50, 8): aggregates mix them"
    ]
    root = tmp_path / "flows"
    for lam, layers in ((0.0, 2), (0.1, 4)):
        write_run(
            root / f"lam{lam:g}_seed0", {"lam": lam}, {"posterior": "flow", "flow_layers": layers}, ais=-86.0, gap=4.0
        )
    _, notes = collect_runs(root)
    assert any(n.startswith("runs differ in model.flow_layers (2, 4)") for n in notes), notes


def write_ssl(rd: RunDir, shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    """A legacy ``ssl.json`` for ``rd`` (s = 600, three label subsets): the accuracies of test_report at the run's λ
    and seed, plus ``shift`` per subset."""
    from test_report import accuracies, ssl_result

    cfg = rd.read_config()
    lam, seed = cfg.train.lam, cfg.train.seed
    acc = lambda s: tuple(a + d for a, d in zip(accuracies(lam, seed, s), shift, strict=True))  # noqa: E731
    tree = {
        "settings": {"sizes": [600]},
        "run": {"lam": lam, "seed": seed, "epoch": EPOCHS},
        "features": ssl_result(acc, sizes=(600,)),
        "raw_pixels": ssl_result(lambda s: (0.88, 0.885, 0.89), sizes=(600,)),
    }
    rd.record_path("ssl").write_text(json.dumps(tree))


def test_the_runs_table_names_each_run_by_method_and_knob(study, tmp_path):
    """A β-VAE or IWAE run's train.lam is 0, unused: the runs table names it by its own knob, never "λ 0"."""
    from test_report import markdown_table

    md = (make_report(study, tmp_path / "out").parent / "results.md").read_text()
    named = {r["run"]: r["method and knob"] for r in markdown_table(md, "Runs")}
    assert named == {
        "smvi/lam0_seed0": "SMVI, λ = 0",
        "smvi/lam0_seed1": "SMVI, λ = 0",
        "smvi/lam0.1_seed0": "SMVI, λ = 0.1",
        "beta2/lam0_seed0": "β-VAE, β = 2",
        "iwae5/lam0_seed0": "IWAE, k = 5",
        "flow/lam0_seed0": "SMVI, flow q, λ = 0",
        "constrained/lam0_seed0": "learned λ, D_SM ≤ 5",
    }


def test_every_method_has_its_ssl_accuracy_paired_with_lambda_zero(study, tmp_path):
    """The frontier report shows each method's SSL accuracy, and its difference from SMVI λ = 0 paired over the same
    label subsets and training seed (here +0.4, +0.5, +0.6 points: +0.50 ± 0.06 over the three subsets)."""
    from test_report import markdown_table

    for name in ("smvi/lam0_seed0", "smvi/lam0_seed1"):
        write_ssl(RunDir(study / name))
    write_ssl(RunDir(study / "beta2" / "lam0_seed0"), (0.004, 0.005, 0.006))
    md = (make_report(study, tmp_path / "out").parent / "results.md").read_text()
    rows = markdown_table(md, "SSL test accuracy per method and knob")
    assert [(r["method"], r["knob"], r["runs"]) for r in rows] == [
        ("SMVI", "λ=0", "2"),
        ("β-VAE", "β=2", "1"),
        ("raw pixels", "—", "—"),
    ]
    smvi, beta, raw = rows
    assert smvi["s = 600"] == "90.80 ± 0.10" and smvi["minus SMVI λ=0, s = 600"] == "reference"
    assert beta["s = 600"] == "91.20 ± 0.12 †" and beta["minus SMVI λ=0, s = 600"] == "+0.50 ± 0.06 †"
    assert raw["s = 600"] == "88.50 ± 0.29 †"


def test_the_training_curves_show_every_run(study, tmp_path, monkeypatch):
    """Every run of the report is in fig_training.png (β-VAE, IWAE and other families were left out), each named in
    the legend by its method and knob and dash-dotted off the λ axis."""
    import smvi.report.sections as sections
    from smvi.report.curves import _styles
    from smvi.report.naming import RunNames

    drawn = []
    monkeypatch.setattr(sections, "figure_curves", lambda runs, collapsed: drawn.extend(runs))
    make_report(study, tmp_path / "out")
    runs, _ = collect_runs(study)
    assert sorted(r.name for r in drawn) == sorted(r.name for r in runs)
    styles = _styles(runs, frozenset(), RunNames.of(runs), {r.name for r in lam_series(runs)[0]})
    assert [(ls, label) for _, ls, label in styles.values()] == [
        ("-", "SMVI, λ = 0"),
        ("-", "SMVI, λ = 0"),
        ("-", "SMVI, λ = 0.1"),
        ("-.", "SMVI, flow q, λ = 0"),
        ("-.", "IWAE, k = 5"),
        ("-.", "β-VAE, β = 2"),
        ("--", "learned λ, D_SM ≤ 5"),
    ]


def _metrics(rd: RunDir, seconds: list[float], **extra: list[float]) -> None:
    lines = [{"epoch": e, "seconds": s, **{k: v[e - 1] for k, v in extra.items()}} for e, s in enumerate(seconds, 1)]
    rd.metrics_path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_cost_table_gives_each_methods_epoch_time_and_the_samplers_diagnostics(study, tmp_path):
    """Seconds per epoch: each run's median, mean ± SE over runs; a rejection-sampling q's acceptance, proposals per
    sample and threshold at its last epoch (its family's metrics); a run without epoch times is not counted."""
    from test_report import markdown_table

    _metrics(RunDir(study / "smvi" / "lam0_seed0"), [10.0, 12.0, 30.0])  # median 12
    _metrics(RunDir(study / "smvi" / "lam0_seed1"), [14.0, 14.0, 15.0])  # median 14: 13 ± 1 over the two runs
    rej = write_run(study / "rej" / "lam0_seed0", {"lam": 0.0}, {"posterior": "rejection", "rejection_acceptance": 0.2})
    _metrics(rej, [80.0, 90.0, 85.0], acceptance=[0.3, 0.25, 0.2], proposals_per_sample=[3.3, 4.0, 5.0],
             threshold=[90.0, 91.0, 92.5])  # fmt: skip
    md = (make_report(study, tmp_path / "out").parent / "results.md").read_text()
    rows = {(r["method"], r["knob"]): r for r in markdown_table(md, "Training cost per method and knob")}
    assert set(rows) == {("SMVI", "λ=0"), ("SMVI, rejection q (acceptance 0.2)", "λ=0")}, rows
    smvi = rows["SMVI", "λ=0"]
    assert smvi["runs"] == "2" and smvi["seconds per epoch"] == "13.00 ± 1.00" and smvi["acceptance"] == "—"
    r = rows["SMVI, rejection q (acceptance 0.2)", "λ=0"]
    assert r["seconds per epoch"] == "85.00" and r["acceptance"] == "0.2" and r["proposals per sample"] == "5"
    assert r["threshold"] == "92.5"


def test_the_families_diagnostics_are_what_rejection_training_logs():
    """The cost table reads the family's metrics names (smvi.settings.families); the rejection terms log them."""
    from smvi.core.rejection import RejectionTerms
    from smvi.settings.families import FAMILIES

    ones = torch.ones(3)
    terms = RejectionTerms(ones, ones, ones, ones, None, 0.5 * ones, ones)
    assert set(FAMILIES["rejection"].metrics) <= set(terms.means())
    assert all(not spec.metrics for name, spec in FAMILIES.items() if name != "rejection")
