"""The report's section list: every registered section returns the one Section shape, each figure it draws has its
caption and each file it writes is declared (so `--out` accepts a report of it), and the page holds every section's
figures and tables in the list's order. Checked on committed studies that exercise every section."""

from __future__ import annotations

from pathlib import Path

import pytest

from smvi.report.aggregate import aggregate, collect_runs, lam_series
from smvi.report.flags import sweep_flags
from smvi.report.page import CAPTIONS, REPORT_FILES, make_report
from smvi.report.paired import paired_rows
from smvi.report.sections import SECTIONS, Inputs, Section

RESULTS = Path(__file__).resolve().parents[1] / "results"


def inputs(sweep_dir: Path) -> Inputs:
    runs, _ = collect_runs(sweep_dir)
    rows, _ = aggregate(runs)
    axis = lam_series(runs)[0]
    return Inputs(
        sweep_dir,
        runs,
        rows,
        sorted({r.lam for r in rows if r.lam is not None}),
        sweep_flags(runs),
        axis,
        paired_rows(axis),
    )


def test_section_names_are_distinct_and_every_caption_and_file_is_the_page_s():
    names = [s.name for s in SECTIONS]
    assert len(set(names)) == len(names)
    for section in SECTIONS:
        assert set(section.captions) <= set(CAPTIONS) and set(section.files) <= REPORT_FILES


@pytest.mark.parametrize("study", ["constrained", "frontier", "gaussian"])
def test_every_section_gives_one_shape_with_its_captions_and_files(study, tmp_path):
    given = {}
    for section in SECTIONS:
        out = section.build(inputs(RESULTS / study))
        assert isinstance(out, Section), section.name
        assert set(out.figures) <= set(section.captions), section.name
        assert set(out.files) <= section.files, section.name
        given[section.name] = out
    html = make_report(RESULTS / study, tmp_path).read_text()
    md = (tmp_path / "results.md").read_text()
    figures = [f for out in given.values() for f in out.figures]
    assert figures and all(f"![{f}]({f})" in md for f in figures)
    assert [md.index(f"![{f}]") for f in figures] == sorted(md.index(f"![{f}]") for f in figures)
    titles = [t[0] for out in given.values() for t in out.tables]
    assert [md.index(f"## {t}") for t in titles] == sorted(md.index(f"## {t}") for t in titles)
    assert all(out.html in html for out in given.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {*figures, *(f for out in given.values() for f in out.files), "results.md", "report.html"}
    )
