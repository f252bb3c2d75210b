"""scripts/check_report.py: a report opens in a real headless browser (Debian's chromium) with every image loaded and
nothing fetched from outside; a broken page is caught. The browser tests skip, saying why, where chromium is absent;
the static checks always run."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script
from smvi.report.page import make_report
from test_report import LAMS, SEEDS, write_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_report.py"
check_report = load_script(SCRIPT)

CHROMIUM = check_report.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): the browser check cannot run here"
)
TINY_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def report(tmp_path) -> Path:
    for lam in LAMS:
        for seed in SEEDS:
            write_run(tmp_path / "sweep" / f"lam{lam}_seed{seed}", lam, seed)
    return make_report(tmp_path / "sweep")


def broken_page(tmp_path) -> Path:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        f"<img alt='fine' src='data:image/png;base64,{TINY_PNG}'>"
        "<img alt='not a png' src='data:image/png;base64,AAAA'>"
        "<img alt='outside' src='fig1_gap.png'></body></html>"
    )
    return page


def test_the_static_check_accepts_a_report_and_names_each_outside_or_broken_image(report, tmp_path):
    images, problems = check_report.static_problems(report.read_text())
    assert images == 3 and problems == []  # Figures 1, 2, 3 (these files hold no metrics for curves)
    images, problems = check_report.static_problems(broken_page(tmp_path).read_text())
    assert images == 3 and len(problems) == 2
    assert "does not decode as a PNG" in problems[0] and "not embedded as a PNG: fig1_gap.png" in problems[1]
    assert check_report.static_problems("<a href='#flags'>x</a><a href='https://arxiv.org'>y</a>") == (0, [])
    assert check_report.static_problems("<div style=\"background:url('x.png')\"></div>")[1]


@needs_chromium
def test_a_report_loads_every_image_in_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every image embedded and loaded" in r.stdout
    seen = check_report.browser_report(CHROMIUM, report)
    assert seen["images"] == 3 and seen["broken"] == [] and seen["errors"] == [] and seen["details"] == 1
    assert all(w > 500 and h > 200 for _, w, h in seen["sizes"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = check_report._png_size(shot.read_bytes())
    assert width == 1280 and height >= min(seen["height"], check_report.MAX_HEIGHT) - 1


@needs_chromium
def test_chromium_catches_a_broken_and_a_missing_image(tmp_path):
    page = broken_page(tmp_path)
    seen = check_report.browser_report(CHROMIUM, page)
    assert seen["images"] == 3 and sorted(seen["broken"]) == ["not a png", "outside"]
    assert any("IMG" in e and "fig1_gap.png" in e for e in seen["errors"])
    r = subprocess.run([sys.executable, str(SCRIPT), str(page)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "image did not load in chromium: outside" in r.stdout


def test_without_chromium_the_script_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert check_report.main([str(tmp_path / "report.html")]) == 2
