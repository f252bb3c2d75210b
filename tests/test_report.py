"""The sweep report: from hand-written result files to figures, tables equal to the aggregated inputs, one HTML page;
missing files become notes, no runs a one-line error."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import tomli_w
from matplotlib.figure import Figure

from smvi.report.figures import lam_axis
from smvi.report.page import ReportError, make_report
from smvi.settings.run import RunConfig
from smvi.stages.ssl import Selection, SSLResult

LAMS, SEEDS, SIZES = (0.0, 0.01, 1.0), (0, 1), (600, 1000)


def eval_numbers(lam: float, seed: int, epochs: int = 3) -> dict:
    """Distinct, hand-checkable numbers per (λ, seed, split, metric)."""
    out = {}
    for j, split in enumerate(("test", "train")):
        ais = -86.0 - 2 * lam - 0.3 * seed + 0.5 * j
        gap = 3.0 / (1 + 10 * lam) + 0.1 * seed
        out[split] = {
            "n": 100,
            "ais": {"mean": ais, "se": 0.2},
            "elbo": {"mean": ais - gap, "se": 0.25},
            "gap": {"mean": gap, "se": 0.05},
            "iwae": {"mean": ais - 0.5, "se": 0.2},
            "d_sm": {"mean": 100.0, "se": 5.0},
        }
    # the shape smvi wrote before records had a header: read through the layer's documented upgrade
    return {"run": f"seed{seed}", "epoch": epochs, "lam": lam, "settings": {"ais_steps": 500}, "splits": out}


def accuracies(lam: float, seed: int, s: int) -> tuple[float, ...]:
    return tuple(0.9 + 0.01 * lam + 0.002 * seed + s / 1e5 + 0.001 * k for k in range(3))


def ssl_result(acc, seeds=(0, 1, 2), sizes=SIZES) -> dict:
    """``acc(s)`` -> one accuracy per seed, as :meth:`SSLResult.to_json` writes it."""
    sel = {s: tuple(Selection(10.0, 0.02, 0.9) for _ in seeds) for s in sizes}
    return SSLResult(sizes, tuple(seeds), {s: acc(s) for s in sizes}, sel, 60000, 10000, 50, 1.0).to_json()


def ssl_json(lam: float, seed: int, epochs: int = 3) -> dict:
    return {
        "settings": {"sizes": list(SIZES)},
        "run": {"lam": lam, "seed": seed, "epoch": epochs},
        "features": ssl_result(lambda s: accuracies(lam, seed, s)),
        "raw_pixels": ssl_result(lambda s: (0.88, 0.885, 0.89 + s / 1e5)),
        "seconds": 2.0,
    }


def write_run(d, lam, seed, *, eval_json=True, ssl=True, epochs=3):
    d.mkdir(parents=True)
    cfg = RunConfig.model_validate({"train": {"lam": lam, "seed": seed, "epochs": 3}})
    (d / "config.toml").write_text(tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, epochs + 1)))
    if eval_json:
        (d / "eval.json").write_text(json.dumps(eval_numbers(lam, seed, epochs)))
    if ssl:
        (d / "ssl.json").write_text(json.dumps(ssl_json(lam, seed, epochs)))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for lam in LAMS:
        for seed in SEEDS:
            write_run(root / f"lam{lam}" / f"seed{seed}", lam, seed)
    return root


def read_csv(path):
    with path.open(newline="") as f:
        return {(r["quantity"], r["split"], r["s"], r["lam"]): r for r in csv.DictReader(f)}


def se(values):
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def test_report_tables_equal_the_aggregated_inputs(sweep, tmp_path):
    page = make_report(sweep, tmp_path / "out")
    out = page.parent
    assert page == tmp_path / "out" / "report.html"
    for name in ("fig1_gap.png", "fig2_ssl.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    rows = read_csv(out / "results.csv")
    for lam in LAMS:
        for split in ("test", "train"):
            for q in ("gap", "ais", "elbo"):
                vals = [eval_numbers(lam, s)["splits"][split][q]["mean"] for s in SEEDS]
                r = rows[(q, split, "", repr(lam))]
                assert float(r["mean"]) == pytest.approx(np.mean(vals), abs=1e-12)
                assert float(r["se"]) == pytest.approx(se(vals), abs=1e-12)
                assert (r["n_runs"], r["se_over"], r["unit"]) == ("2", "training seeds", "nats")
        for s in SIZES:
            vals = [100 * np.mean(accuracies(lam, seed, s)) for seed in SEEDS]
            r = rows[("ssl_accuracy", "test", str(s), repr(lam))]
            assert float(r["mean"]) == pytest.approx(np.mean(vals)) and float(r["se"]) == pytest.approx(se(vals))
    raw = rows[("ssl_raw_accuracy", "test", "600", "")]  # identical in every run: counted once, SE over subsets
    assert float(raw["mean"]) == pytest.approx(100 * np.mean([0.88, 0.885, 0.896]))
    assert float(raw["se"]) == pytest.approx(100 * se([0.88, 0.885, 0.896])) and raw["n_runs"] == "1"
    gain = rows[("ssl_gain", "test", "600", "1.0")]  # paired with λ = 0 over both training seeds' subsets
    assert float(gain["mean"]) == pytest.approx(100 * 0.01 * 1.0) and gain["n_runs"] == "2"
    assert len(rows) == 3 * 2 * 3 + 3 * 2 + 2 + 2 * 2

    md, html = (out / "results.md").read_text(), page.read_text().replace("\u00a0", " ")  # ± keeps its numbers together
    gap0 = rows[("gap", "test", "", "0.0")]
    cell = f"{float(gap0['mean']):.2f} ± {float(gap0['se']):.2f}"
    assert cell in md and cell in html
    # Figures 1, 2 and 3 (the paired SSL differences: these legacy eval files keep no per-image values)
    assert html.count('src="data:image/png;base64,') == 3 and "<table class=''>" in html and "raw pixels" in html
    assert "](fig1_gap.png)" in md and "Notes" in md
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_runs_missing_files_are_skipped_with_a_note(sweep, tmp_path):
    write_run(sweep / "lam1.0" / "seed2", 1.0, 2, eval_json=False, epochs=2)
    write_run(sweep / "lam3.0" / "seed0", 3.0, 0, ssl=False)
    write_run(sweep / "lam5.0" / "seed0", 5.0, 0, eval_json=False, ssl=False, epochs=0)  # not started yet
    (sweep / "lam0.01" / "seed1" / "ssl.json").unlink()
    status = [
        {"name": "lam9_seed0", "status": "failed", "error": "TrainingDiverged: 20 steps"},
        {"name": "x", "status": "ok"},
    ]
    (sweep / "sweep_status.json").write_text(json.dumps({"runs": status}))
    page = make_report(sweep)
    assert page == sweep / "report" / "report.html"
    rows = read_csv(page.parent / "results.csv")
    # the run without eval.json still counts for SSL; the one without ssl.json still counts for Figure 1
    assert rows[("gap", "test", "", "1.0")]["n_runs"] == "2"
    assert rows[("ssl_accuracy", "test", "600", "1.0")]["n_runs"] == "3"
    assert rows[("ssl_accuracy", "test", "600", "0.01")]["n_runs"] == "1"
    single = rows[("gap", "test", "", "3.0")]  # one run: its own SE over data points
    assert (single["n_runs"], single["se_over"], float(single["se"])) == ("1", "data points", 0.05)
    assert ("ssl_accuracy", "test", "600", "3.0") not in rows
    html = page.read_text()
    md = (page.parent / "results.md").read_text()
    for note in (
        "lam1.0/seed2: no eval.json; left out of Figure 1",
        "lam3.0/seed0: no ssl.json; left out of Figure 2",
        "lam0.01/seed1: no ssl.json",
        "lam9_seed0 failed (TrainingDiverged: 20 steps)",
        "lam1.0/seed2 (λ = 1): unfinished, 2 of 3 epochs",
    ):  # the last one a flag
        assert note in html and note in md
    flags = md.split("## Flags", 1)[1].split("![", 1)[0]
    assert "lam1.0/seed2 (λ = 1): unfinished, 2 of 3 epochs" in flags and "⚠U unfinished" in flags
    assert "| lam5.0/seed0 | λ = 5 | 0 | 0/3 ⚠U | — | — | — / — | missing | missing |" in md
    assert "| lam1.0/seed2 | λ = 1 | 2 | 2/3 ⚠U |" in md
    gap_table = markdown_table(md, "Figure 1")
    assert [r["runs"] for r in gap_table if r["λ"] == "1"] == ["2 ⚠U"]  # the per-λ row is marked where it counts


def test_broken_and_partial_files_are_refused_with_a_note_each(sweep):
    (sweep / "lam0.0" / "seed0" / "eval.json").write_text("{not json")
    e = json.loads((sweep / "lam0.0" / "seed1" / "eval.json").read_text())
    del e["splits"]["train"]["ais"]
    (sweep / "lam0.0" / "seed1" / "eval.json").write_text(json.dumps(e))
    rows = read_csv(make_report(sweep).parent / "results.csv")
    assert ("gap", "test", "", "0.0") not in rows and rows[("gap", "test", "", "0.01")]["n_runs"] == "2"
    md = (sweep / "report" / "results.md").read_text()
    assert "lam0.0/seed0: unreadable eval.json" in md
    assert "lam0.0/seed1: unreadable eval.json" in md and "splits.train.ais: Field required" in md


def convergence_json(
    run: str, bdmc: list[tuple[int, float, float]], ladder: list[tuple[int, float, float]], converged: bool
) -> dict:
    """The layout :func:`smvi.stages.convergence.check_convergence` writes; (steps, gap, SE) and (steps, mean, SE)."""
    return {
        "run": run,
        "epoch": 3,
        "n_points": 50,
        "tol": 0.1,
        "settings": {"chains": 4},
        "seconds": 9.0,
        "bdmc": [
            {"steps": k, "lower": -90.0, "upper": -90.0 + g, "gap": g, "gap_se": se, "seconds": 1.0}
            for k, g, se in bdmc
        ],
        "ladder": {
            "steps": [k for k, _, _ in ladder],
            "means": [m for _, m, _ in ladder],
            "sems": [se for _, _, se in ladder],
            "diffs": [0.5],
            "diff_sems": [0.1],
            "agree": [converged],
            "converged": converged,
        },
    }


def markdown_table(md: str, title: str) -> list[dict[str, str]]:
    """The rows of the Markdown table under the heading starting with ``title``, as column → cell."""
    section = md.split(f"## {title}", 1)[1].split("\n\n", 2)[1]
    head, _, *body = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()]
    return [dict(zip(head, row, strict=True)) for row in body]


def test_convergence_table_lists_the_runs_that_have_one(sweep):
    make_report(sweep)
    for name in ("results.md", "report.html"):
        assert "AIS convergence" not in (sweep / "report" / name).read_text()
    csv_before = (sweep / "report" / "results.csv").read_text()
    (sweep / "lam0.01" / "seed1" / "convergence.json").write_text(
        json.dumps(
            convergence_json(
                "seed1", [(100, 1.234, 0.056), (300, 0.432, 0.021)], [(100, -87.651, 0.31), (300, -87.123, 0.29)], False
            )
        )
    )
    (sweep / "lam1.0" / "seed0" / "convergence.json").write_text(
        json.dumps(
            convergence_json("seed0", [(300, 0.118, 0.004)], [(300, -88.456, 0.27), (1000, -88.401, 0.26)], True)
        )
    )
    (sweep / "lam0.0" / "seed0" / "convergence.json").write_text("{not json")
    (sweep / "lam0.0" / "seed1" / "convergence.json").write_text(json.dumps({"run": "seed1", "bdmc": "?"}))
    page = make_report(sweep)
    md, html = (sweep / "report" / "results.md").read_text(), page.read_text().replace("\u00a0", " ")
    rows = markdown_table(md, "AIS convergence")
    assert [(r["method and knob"], r["run"], r["epoch"], r["points"]) for r in rows] == [
        ("λ = 0.01", "lam0.01/seed1", "3", "50"),
        ("λ = 1", "lam1.0/seed0", "3", "50"),
    ]
    assert {k: v for k, v in rows[0].items() if "steps" in k or "converged" in k} == {
        "BDMC gap, 100 steps": "1.23 ± 0.06",
        "AIS ladder, 100 steps": "-87.65 ± 0.31",
        "BDMC gap, 300 steps": "0.43 ± 0.02 ⚠B",
        "AIS ladder, 300 steps": "-87.12 ± 0.29",  # above tol = 0.1
        "BDMC gap, 1000 steps": "—",
        "AIS ladder, 1000 steps": "—",
        "ladder converged": "no ⚠L",
    }
    assert {k: v for k, v in rows[1].items() if "steps" in k or "converged" in k} == {
        "BDMC gap, 100 steps": "—",
        "AIS ladder, 100 steps": "—",
        "BDMC gap, 300 steps": "0.12 ± <0.01 ⚠B",
        "AIS ladder, 300 steps": "-88.46 ± 0.27",
        "BDMC gap, 1000 steps": "—",
        "AIS ladder, 1000 steps": "-88.40 ± 0.26",
        "ladder converged": "yes",
    }
    for text in (
        "<td>lam0.01/seed1</td>",
        "<td>1.23 ± 0.06</td>",
        "<td>-88.40 ± 0.26</td>",
        "<th>AIS ladder, 1000 steps</th>",
    ):
        assert text in html
    for note in ("lam0.0/seed0: unreadable convergence.json", "lam0.0/seed1: unreadable convergence.json"):
        assert note in md and note in html
    assert (sweep / "report" / "results.csv").read_text() == csv_before  # per-run rows: not in the per-λ CSV


def test_nothing_to_report_is_a_one_line_error(tmp_path):
    for target, match in ((tmp_path / "nope", "does not exist"), (tmp_path, "no usable runs under")):
        with pytest.raises(ReportError, match=match) as e:
            make_report(target)
        assert "\n" not in str(e.value)
    write_run(tmp_path / "r", 0.0, 0, eval_json=False, ssl=False)
    with pytest.raises(ReportError, match="has a current eval.json or ssl.json"):
        make_report(tmp_path)


def test_lambda_axis_is_logarithmic_and_sets_zero_apart_without_symlog():
    ax = Figure().subplots()
    pos = lam_axis(ax, [0.0, 0.001, 0.1, 10.0])
    assert ax.get_xscale() == "log" and pos(0.0) == pytest.approx(1e-4) and pos(0.1) == 0.1  # a decade below 0.001
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.001", "0.1", "10"]
    assert [t.get_text() for t in ax.texts] == ["//"]  # the break mark between 0 and 0.001, no shaded band
    assert not ax.patches and "shaded" not in ax.get_xlabel()
    ax = Figure().subplots()
    lam_axis(ax, [0.01, 1.0])
    assert ax.get_xscale() == "log" and not ax.texts  # no λ = 0, no break


def test_ssl_gain_is_paired_by_label_subset(tmp_path):
    """Each λ's accuracy minus λ = 0's on the same label subsets (matched by seed, whatever their order), mean ± SE
    over the pairs; a subset only one side has is left out."""
    sweep = tmp_path / "sweep"
    base = {0: 0.90, 1: 0.95, 2: 0.92}  # label subsets differ by far more than λ does
    for lam, acc in ((0.0, base), (0.5, {2: 0.925, 0: 0.902, 1: 0.951, 3: 0.99})):
        write_run(sweep / f"lam{lam}", lam, 0, ssl=False)
        seeds = list(acc)
        (sweep / f"lam{lam}" / "ssl.json").write_text(
            json.dumps(
                {
                    "settings": {},
                    "run": {"lam": lam, "seed": 0, "epoch": 3},
                    "features": ssl_result(lambda s, acc=acc, seeds=seeds: tuple(acc[k] for k in seeds), seeds, (600,)),
                }
            )
        )
    page = make_report(sweep)
    gain = read_csv(page.parent / "results.csv")[("ssl_gain", "test", "600", "0.5")]
    diffs = [100 * (0.902 - 0.90), 100 * (0.951 - 0.95), 100 * (0.925 - 0.92)]
    assert float(gain["mean"]) == pytest.approx(np.mean(diffs)) and float(gain["se"]) == pytest.approx(se(diffs))
    assert ("ssl_gain", "test", "600", "0.0") not in read_csv(page.parent / "results.csv")
    md = (page.parent / "results.md").read_text()
    assert f"| 0.5 | 1 | {np.mean(diffs):.2f} ± {se(diffs):.2f} † |" in md
    width = lambda png: int.from_bytes(png.read_bytes()[16:20], "big")  # noqa: E731 -- the PNG header's IHDR width
    assert width(page.parent / "fig2_ssl.png") > 1.5 * 7 * 130  # the gain panel beside the accuracies
    (sweep / "lam0.0" / "ssl.json").unlink()  # no λ = 0 results: nothing to pair with, one panel
    page = make_report(sweep)
    assert ("ssl_gain", "test", "600", "0.5") not in read_csv(page.parent / "results.csv")
    assert width(page.parent / "fig2_ssl.png") < 1.5 * 7 * 130
