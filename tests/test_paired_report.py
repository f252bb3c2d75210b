"""The report's paired comparisons with λ = 0 (smvi.report.paired) on a synthetic sweep with per-image values and three
seeds: pairing by image index and seed, the numbers against a direct computation, and the claims on the page."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from smvi.report.aggregate import collect_runs
from smvi.report.page import make_report
from smvi.report.paired import paired_rows
from smvi.settings.run import RunConfig
from smvi.stages.ssl import Selection, SSLResult

LAMS, SEEDS, N = (0.0, 0.01, 0.1), (0, 1, 2), 20
IDX = [3 * i for i in range(N)]


def values(lam: float, seed: int, i: int) -> dict[str, float]:
    """Per-image AIS, gap and whole-test IWAE of image index ``i``: log p(x) falls with λ and the gap shrinks, with
    seed- and image-dependent parts so that every SE is positive."""
    ais = -90 + math.sin(i) - 30 * lam + 0.4 * lam * seed + lam * math.cos(i + seed)
    gap = 3 / (1 + 10 * lam) + 0.05 * math.sin(i + seed)
    return {"ais": ais, "gap": gap, "elbo": ais - gap, "iwae": ais - 0.5}


def split(lam: float, seed: int, order: list[int]) -> dict:
    v = [values(lam, seed, i) for i in order]
    col = {k: [x[k] for x in v] for k in ("ais", "gap", "elbo", "iwae")}
    ms = {k: {"mean": float(np.mean(c)), "se": 0.1} for k, c in col.items()}
    return {
        "n": len(order),
        "indices": order,
        **ms,
        "d_sm": {"mean": 1.0, "se": 0.1},
        "per_image": {**col, "d_sm": [1.0] * len(order)},
    }


def accuracy(gain: float, lam: float, seed: int, k: int) -> float:
    return 0.9 + gain + 0.01 * seed + 0.002 * k + 0.001 * math.sin(7 * seed + k + 100 * lam)


def write_run(d, lam: float, seed: int) -> None:
    d.mkdir(parents=True)
    cfg = RunConfig.model_validate({"train": {"lam": lam, "seed": seed, "epochs": 3}})
    (d / "config.toml").write_text(tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    order = IDX[::-1] if lam == 0 else IDX  # λ = 0 stores its images in another order: pairing is by index
    full = list(range(40))
    iwae = [values(lam, seed, i)["iwae"] for i in full]
    ev = {
        "run": d.name,
        "epoch": 3,
        "lam": lam,
        "settings": {},
        "splits": {s: split(lam, seed, order) for s in ("test", "train")},
        "full_test": {
            "k": 10,
            "n": 40,
            "indices": full,
            "per_image": iwae,
            "iwae": {"mean": float(np.mean(iwae)), "se": 0.1},
        },
    }
    (d / "eval.json").write_text(json.dumps(ev))
    gain = {0.01: 0.02, 0.1: -0.01}.get(lam, 0.0)
    acc = {600: tuple(accuracy(gain, lam, seed, k) for k in range(4))}
    sel = {600: tuple(Selection(1.0, 0.1, 0.9) for _ in range(4))}
    ssl = {
        "settings": {"sizes": [600]},
        "run": {"lam": lam, "seed": seed, "epoch": 3},
        "features": SSLResult((600,), (0, 1, 2, 3), acc, sel, 100, 50, 5, 1.0).to_json(),
    }
    (d / "ssl.json").write_text(json.dumps(ssl))


@pytest.fixture
def sweep(tmp_path):
    for lam in LAMS:
        for seed in SEEDS:
            write_run(tmp_path / "sweep" / f"lam{lam}_seed{seed}", lam, seed)
    return tmp_path / "sweep"


def test_paired_differences_are_per_seed_means_of_per_image_differences(sweep):
    runs, _ = collect_runs(sweep)
    rows = {(r.quantity, r.split, r.lam): r for r in paired_rows(runs)}
    for q, split, key in (("ais", "test", "ais"), ("gap", "train", "gap"), ("iwae_full", "test", "iwae")):
        images = range(40) if q == "iwae_full" else IDX
        per_seed = [np.mean([values(0.1, s, i)[key] - values(0, s, i)[key] for i in images]) for s in SEEDS]
        d = rows[(q, split, 0.1)].diff
        assert d.mean == pytest.approx(np.mean(per_seed)) and d.n == 3 and d.unit == "seeds"
        assert d.se == pytest.approx(np.std(per_seed, ddof=1) / math.sqrt(3)) and d.n_values == 3 * len(images)
    ssl = rows[("ssl_gain", "test", 0.01)].diff
    want = [np.mean([100 * (accuracy(0.02, 0.01, s, k) - accuracy(0, 0, s, k)) for k in range(4)]) for s in SEEDS]
    assert ssl.mean == pytest.approx(np.mean(want)) and ssl.se == pytest.approx(np.std(want, ddof=1) / math.sqrt(3))
    assert ssl.p < 0.01 and ssl.n == 3 and ssl.n_values == 12
    assert rows[("ais", "test", 0.1)].p_holm >= rows[("ais", "test", 0.1)].diff.p  # adjusted over the λ values


def test_the_report_states_both_claims_and_shows_the_paired_tables(sweep, tmp_path):
    make_report(sweep, tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Claim 1: the ELBO gap shrinks as λ grows, at a cost in log-likelihood — holds: at λ = 0.1" in md
    assert "Claim 2: semi-supervised accuracy improves at a moderate λ — holds" in md and "λ = 0.01, s = 600" in md
    assert "paired on the same images and training seeds" in md and "p_Holm=" in md
    assert "no per-image values" not in md  # these records have them
    # Figure 1's table: SE over the 3 seeds, and beside it the runs' own SEs (0.1 each) combined: √(3·0.1²)/3
    assert "| 0 | 3 | 3.00 ± <0.01 (0.06) |" in md
    assert (tmp_path / "out" / "fig3_paired.png").stat().st_size > 1000
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Claims</h2>" in html and "fig3_paired.png" in html


def test_paired_csv_holds_every_paired_row_exactly(sweep, tmp_path):
    make_report(sweep, tmp_path / "out")
    with open(tmp_path / "out" / "paired.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    rows = paired_rows(collect_runs(sweep)[0])
    assert len(lines) == len(rows) == 5 * 2 + 2  # five log p(x)/gap quantities and SSL at s = 600, for λ = 0.01, 0.1
    for line, r in zip(lines, rows, strict=True):
        assert (line["quantity"], line["split"], float(line["lam"])) == (r.quantity, r.split, r.lam)
        assert line["s"] == ("" if r.s is None else str(r.s))
        for key in ("mean", "se", "low", "high", "p", "level", "se_pooled"):  # repr: the numbers round-trip exactly
            assert float(line[key]) == getattr(r.diff, key)
        assert float(line["p_holm"]) == r.p_holm and int(line["n"]) == r.diff.n == 3 and line["unit"] == "seeds"
        assert int(line["n_values"]) == r.diff.n_values


def test_a_sweep_without_lambda_zero_writes_no_paired_csv(sweep, tmp_path):
    for d in sweep.glob("lam0.0_seed*"):
        shutil.rmtree(d)
    make_report(sweep, tmp_path / "out")
    assert (tmp_path / "out" / "results.csv").is_file() and not (tmp_path / "out" / "paired.csv").exists()


def test_runs_without_per_image_values_report_a_dash_and_say_why(sweep, tmp_path):
    for ev in sweep.glob("*/eval.json"):
        tree = json.loads(ev.read_text())
        tree.pop("full_test")
        for s in tree["splits"].values():
            s.pop("per_image"), s.pop("indices")
        ev.write_text(json.dumps(tree))
    make_report(sweep, tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| 0.1 | — | — | — | — | — |" in md and "keep no per-image values" in md
    assert "Claim 1: the ELBO gap shrinks as λ grows, at a cost in log-likelihood — cannot be decided" in md


def test_a_nested_sweep_is_left_to_its_own_report(sweep, tmp_path):
    """results/paper inside results: the outer report does not mix the inner sweep's runs into its own."""
    inner = sweep / "paper"
    write_run(inner / "runs" / "lam0.5_seed0", 0.5, 0)
    (inner / "sweep.toml").write_text("lams = [0.5]\n")
    runs, notes = collect_runs(sweep)
    assert 0.5 not in {r.lam for r in runs} and len(runs) == 9
    assert [r.lam for r in collect_runs(inner)[0]] == [0.5]


def test_a_folder_of_sweeps_alone_is_reported_as_one(tmp_path):
    """The frontier study's layout: DIR/<arm>/sweep.toml and DIR/<arm>/runs/..., no run of DIR's own."""
    for arm, lam, seed in (("smvi", 0.0, 0), ("smvi", 0.1, 0), ("other", 0.0, 1)):  # distinct runs (fingerprints)
        write_run(tmp_path / "study" / arm / "runs" / f"lam{lam}_seed{seed}", lam, seed)
        (tmp_path / "study" / arm / "sweep.toml").write_text("lams = [0.0]\n")
    runs, _ = collect_runs(tmp_path / "study")
    assert sorted(r.name for r in runs) == [
        "other/runs/lam0.0_seed1",
        "smvi/runs/lam0.0_seed0",
        "smvi/runs/lam0.1_seed0",
    ]


def test_the_whole_test_set_iwae_is_a_column_of_figure_1s_table(sweep, tmp_path):
    from smvi.report.aggregate import aggregate

    rows, _ = aggregate(collect_runs(sweep)[0])
    got = {r.lam: r for r in rows if r.quantity == "iwae_full"}
    want = [np.mean([values(0.1, s, i)["iwae"] for i in range(40)]) for s in SEEDS]
    assert got[0.1].mean == pytest.approx(np.mean(want)) and got[0.1].n_runs == 3
    assert got[0.1].se == pytest.approx(np.std(want, ddof=1) / math.sqrt(3))
    make_report(sweep, tmp_path / "out")
    assert "log p(x) (IWAE, whole set), test" in (tmp_path / "out" / "results.md").read_text()


def test_claims_on_the_page_leave_out_collapsed_and_unfinished_runs(sweep, tmp_path):
    """The runs' own metrics flag them: a collapsed λ = 0.1 no longer decides claim 1, an unfinished λ = 0.01 no
    longer carries claim 2, and the page lists both flags."""
    for seed in SEEDS:
        (sweep / f"lam0.1_seed{seed}" / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "test_kl": 0.002, "test_active_units": 0}) + "\n" for e in (1, 2, 3))
        )
    make_report(sweep, tmp_path / "a")
    md = (tmp_path / "a" / "results.md").read_text()
    assert "Claim 1: the ELBO gap shrinks as λ grows, at a cost in log-likelihood — holds: at λ = 0.01" in md
    assert "left out as flagged: λ = 0.1 (collapsed)" in md
    path = sweep / "lam0.01_seed1" / "config.toml"
    path.write_text(path.read_text().replace("epochs = 3", "epochs = 30"))  # asked for 30, trained 3
    make_report(sweep, tmp_path / "b")
    md = (tmp_path / "b" / "results.md").read_text()
    claims = md.split("## Claims", 1)[1].split("## Flags", 1)[0]
    assert "holds" not in claims.replace("does not hold", "").replace("cannot be decided", "")
    flags = md.split("## Flags", 1)[1].split("![", 1)[0]
    assert "lam0.01_seed1 (λ = 0.01): unfinished, 3 of 30 epochs" in flags
    assert flags.count("posterior collapse at epoch 3: 0 active units and KL 0.002 nats (monitor set)") == 3


def test_summary_table_quotes_the_report_row_by_row(sweep, tmp_path):
    make_report(sweep, tmp_path / "out")
    script = Path(__file__).resolve().parents[1] / "scripts" / "summary_table.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True, check=True
    ).stdout
    tables = [
        [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| λ")]
        for block in out.split("\n\n")
        if block.startswith("| λ")
    ]
    values, paired = tables
    assert [line.split(" | ")[0] for line in values] == ["| 0", "| 0.01", "| 0.1"]  # no raw-pixel SSL here
    assert values[0].startswith("| 0 | 3 | 3.00 ± <0.01 |")  # the test gap at λ = 0, as results.csv has it
    assert [line.split(" | ")[0] for line in paired] == ["| 0.01", "| 0.1"]  # λ = 0 is the reference
    rows = {(r.quantity, r.s, r.lam): r for r in paired_rows(collect_runs(sweep)[0])}
    d = rows[("iwae_full", None, 0.1)].diff
    assert paired[1].startswith(f"| 0.1 | {d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p_Holm=")
    assert "n=3 seeds" in paired[1]
    r = rows[("ssl_gain", 600, 0.01)]
    assert r.p_holm < 0.001  # the synthetic gain of 2 points at λ = 0.01
    assert paired[0].endswith(
        f"| {r.diff.mean:+.2f} [{r.diff.low:+.2f}, {r.diff.high:+.2f}] p_Holm=<0.001, n=3 seeds |"
    )


def test_summary_table_marks_a_lambda_kept_out_of_the_claims(sweep, tmp_path):
    cfg = sweep / "lam0.1_seed2" / "config.toml"
    cfg.write_text(cfg.read_text().replace("epochs = 3", "epochs = 5"))  # asks for more epochs than it has: ⚠U
    make_report(sweep, tmp_path / "out")
    script = Path(__file__).resolve().parents[1] / "scripts" / "summary_table.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True, check=True
    ).stdout
    assert "\n| 0.1 ⚠U | " in out and "\n| 0.01 | " in out and "\n| 0 | " in out
    assert "⚠U: unfinished: fewer epochs than the config asks for, so not evidence for a claim." in out
    assert "⚠C" not in out


def test_summary_table_without_a_report_says_what_to_run(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "summary_table.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and "run `smvi report` on the sweep first" in r.stderr
