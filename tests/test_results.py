"""The committed reproduction is consistent: its report's numbers are what ``smvi report`` computes from the committed
result files, and every run finished the preset's epochs with its evaluation, SSL and settings in place."""

from __future__ import annotations

import json
from pathlib import Path

from smvi.report.page import make_report
from smvi.settings.stages import EvalConfig
from smvi.store.rundir import RunDir
from smvi.studies.presets import PRESETS

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cpu"


def test_the_committed_report_is_what_the_committed_result_files_give(tmp_path):
    page = make_report(RESULTS, tmp_path)
    assert (tmp_path / "results.csv").read_text() == (RESULTS / "report" / "results.csv").read_text()
    md = (tmp_path / "results.md").read_text()
    assert "## Notes\n\nnone" in md  # nothing missing, nothing inconsistent
    flags = md.split("## Flags", 1)[1].split("![", 1)[0]  # the one thing wrong: λ = 1 collapsed, and it is said
    assert "runs/lam1_seed0 (λ = 1): posterior collapse" in flags and flags.count("\n- ") == 1
    assert "left out as flagged: λ = 1 (collapsed)" in md.split("## Flags")[0]
    assert page.exists() and (RESULTS / "report" / "fig_training.png").is_file()


def test_every_run_of_the_reproduction_is_complete():
    cpu = PRESETS["cpu"]
    runs = sorted((RESULTS / "runs").iterdir())
    assert len(runs) == len(cpu.lams) * len(cpu.seeds)
    for run in runs:
        metrics = (run / "metrics.jsonl").read_text().splitlines()
        assert json.loads(metrics[-1])["epoch"] == cpu.run.train.epochs, run.name
        rd = RunDir(run)  # the files predate record headers: read through the layer's documented upgrade
        for kind in ("eval", "ssl"):
            record, stale = rd.current_record(kind)
            assert stale is None and record.header.epoch == cpu.run.train.epochs, (run.name, kind, stale)
        assert EvalConfig.model_validate(rd.read_record("eval").header.settings) == cpu.eval


CONSTRAINED = RESULTS.parent / "constrained"


def test_the_committed_constrained_study_is_what_its_result_files_give(tmp_path):
    """results/constrained: its report's tables are recomputed from the committed files, every target run finished
    the cpu preset's epochs with current records, and each met its target in training (the README's first finding)."""
    make_report(CONSTRAINED, tmp_path)
    for name in ("results.csv", "constrained.csv"):
        assert (tmp_path / name).read_text() == (CONSTRAINED / "report" / name).read_text(), name
    rows = (CONSTRAINED / "report" / "constrained.csv").read_text().splitlines()[1:]
    assert len(rows) == 6
    for run in sorted((CONSTRAINED / "runs").iterdir()):
        rd = RunDir(run)
        target = rd.read_config().train.constraint.target
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert metrics[-1]["epoch"] == PRESETS["cpu"].run.train.epochs and target is not None, run.name
        assert metrics[-1]["constraint_avg"] <= 1.05 * target, run.name  # met in training, within 5 %
        for kind in ("eval", "ssl"):
            assert rd.current_record(kind)[1] is None, (run.name, kind)


def test_the_committed_gaussian_decoder_results_are_what_their_files_give(tmp_path):
    """results/gaussian and results/fashion-gaussian (`make gaussian`): each report is what its files give, every
    run is a Gaussian-decoder run on dequantized images that finished its 10 epochs with current records, and the
    pictures the report inlines match their records."""
    for name, dataset in (("gaussian", "mnist"), ("fashion-gaussian", "idx")):
        root = RESULTS.parent / name
        make_report(root, tmp_path / name)
        assert (tmp_path / name / "results.csv").read_text() == (root / "report" / "results.csv").read_text()
        assert "## Notes\n\nnone" in (tmp_path / name / "results.md").read_text()
        assert "Samples, reconstructions and latent space" in (tmp_path / name / "report.html").read_text()
        runs = sorted((root / "runs").iterdir())
        assert [r.name for r in runs] == ["lam0.01_seed0", "lam0.1_seed0", "lam0_seed0"]
        for run in runs:
            rd = RunDir(run)
            cfg = rd.read_config()
            assert (cfg.model.likelihood, cfg.data.transform, cfg.data.dataset) == ("gaussian", "dequantize", dataset)
            for kind in ("eval", "ssl", "pictures"):
                record, stale = rd.current_record(kind)
                assert stale is None and record.header.epoch == 10, (name, run.name, kind, stale)


PAPER = RESULTS.parent / "paper"


def test_the_committed_paper_results_are_what_their_files_give(tmp_path):
    """results/paper: the report's tables (values and paired differences) are recomputed from the committed files,
    summary.md is what scripts/summary_table.py prints from them, the docs' results page quotes its tables verbatim
    and the README the first."""
    import subprocess
    import sys

    make_report(PAPER, tmp_path)
    for name in ("results.csv", "paired.csv"):
        assert (tmp_path / name).read_text() == (PAPER / "report" / name).read_text(), name
    md = (tmp_path / "results.md").read_text()
    flags = md.split("## Flags", 1)[1].split("![", 1)[0]  # only λ = 1's collapse in its first 39 epochs
    assert flags.count("\n- ") == 1 and "runs/lam1_seed0 (λ = 1): in posterior collapse for 39 of its 300" in flags
    assert "## Notes\n\nnone" in md
    script = Path(__file__).resolve().parents[1] / "scripts" / "summary_table.py"
    summary = subprocess.run(
        [sys.executable, str(script), str(PAPER / "report")], capture_output=True, text=True, check=True
    ).stdout
    assert summary == (PAPER / "summary.md").read_text()
    root = Path(__file__).resolve().parents[1]
    page, readme = ((root / name).read_text() for name in ("docs/results/paper.md", "README.md"))
    tables = [block for block in summary.split("\n\n") if block.startswith("| λ")]
    assert len(tables) == 2 and all(t.strip() in page for t in tables) and tables[0].strip() in readme


def test_every_paper_run_finished_with_the_paper_preset_s_settings():
    paper = PRESETS["paper"]
    runs = sorted((PAPER / "runs").iterdir())
    assert len(runs) == len(paper.lams) * len(paper.seeds) + 1  # and λ = 1 with seed 0
    for run in runs:
        rd = RunDir(run)
        cfg = rd.read_config()
        assert cfg.train.epochs == 300 and cfg.train.precision == "bf16", run.name
        for kind in ("eval", "ssl"):
            record, stale = rd.current_record(kind)
            assert stale is None and record.header.epoch == 300, (run.name, kind, stale)
        record = rd.read_record("eval")
        # the preset's settings but the AIS precision: these runs were scored in fp32, before "auto" became the
        # default (issue 26); records keep the precision they ran with
        assert record.computed_precision == "fp32", run.name
        fp32 = paper.eval.model_copy(update={"ais": paper.eval.ais.model_copy(update={"precision": "fp32"})})
        assert EvalConfig.model_validate(record.header.settings) == fp32, run.name


FRONTIER = RESULTS.parent / "frontier"


def _frontier_table(md: str) -> str:
    return md.split("## Figure 4: the trade-off frontier", 1)[1].split("\n## ", 1)[0]


def test_the_committed_frontier_study_is_what_its_result_files_give(tmp_path):
    """results/frontier (`make frontier`): the report's per-λ table and frontier table (with its paired "dominated
    by" column) are recomputed from the committed files, and the docs' results page quotes the frontier table
    verbatim."""
    make_report(FRONTIER, tmp_path)
    assert (tmp_path / "results.csv").read_text() == (FRONTIER / "report" / "results.csv").read_text()
    md = (tmp_path / "results.md").read_text()
    assert "aggregates mix them" not in md  # the methods differ by design; nothing else differs
    flags = md.split("## Flags", 1)[1].split("![", 1)[0]
    assert flags.count("\n- ") == 4 and "full/runs/lam0.1_seed0 (SMVI, full q, λ = 0.1): posterior collapse" in flags
    table = _frontier_table(md)
    assert table == _frontier_table((FRONTIER / "report" / "results.md").read_text())
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    page = (Path(__file__).resolve().parents[1] / "docs" / "results" / "frontier.md").read_text()
    assert rows and all(row in page for row in rows)


def test_each_committed_arm_is_the_sweep_the_frontier_study_file_builds():
    """`smvi study runs/frontier --config frontier` reproduces (and resumes) the committed study: each arm's saved
    sweep.toml is the sweep the study file builds for it, every setting alike."""
    from smvi.settings.study import load_study_config
    from smvi.studies.study import arm_sweep_config
    from smvi.studies.sweep import read_sweep

    study = load_study_config("frontier")
    assert sorted(study.arms) == sorted(p.parent.name for p in FRONTIER.glob("*/sweep.toml"))
    for arm in study.arms:
        assert read_sweep(FRONTIER / arm) == arm_sweep_config(study, arm), arm


def test_every_arm_of_the_frontier_study_finished_with_its_settings():
    """Every arm's runs (the study file smvi/studies/frontier.toml) trained the cpu preset's epochs in bf16 with
    current eval and ssl records, and each run the study splits (its arm's gaps stage) has a current gaps record."""
    from smvi.settings.study import load_study_config

    study = load_study_config("frontier")
    cpu = PRESETS["cpu"]
    for arm, spec in study.arms.items():
        runs = sorted((FRONTIER / arm / "runs").iterdir())
        assert len(runs) == len(spec.lams or cpu.lams), arm
        for run in runs:
            rd = RunDir(run)
            cfg = rd.read_config()
            assert cfg.train.epochs == cpu.run.train.epochs and cfg.train.precision == "bf16", (arm, run.name)
            kinds = ("eval", "ssl", "gaps") if cfg.train.lam in spec.stages.get("gaps", ()) else ("eval", "ssl")
            for kind in kinds:
                record, stale = rd.current_record(kind)
                assert stale is None and record.header.epoch == cpu.run.train.epochs, (arm, run.name, kind, stale)
