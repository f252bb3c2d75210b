"""The documentation site: `mkdocs build --strict` (what `make docs` runs) builds it with no warning, and
scripts/check_docs.py finds it whole in a real headless browser (pages, figures, search) and catches a broken one.
The build skips where MkDocs is not installed (`pip install -e '.[docs]'`), the browser checks where chromium is not;
the static link checks always run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_docs.py"
check_docs = load_script(SCRIPT)

CHROMIUM = check_docs.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): the browser check cannot run here"
)
FIGURE = "results/paper/report/fig1_gap.png"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="MkDocs is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "site"
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_the_site_builds_strict_with_every_page_and_the_committed_figures(site):
    for page in (
        "index.html",
        "getting-started/index.html",
        "guide/sweeps/index.html",
        "results/paper/index.html",
        "results/frontier/index.html",
        "api/core/index.html",
        "architecture/index.html",
        "cite/index.html",
    ):
        assert (site / page).is_file(), page
    assert (site / FIGURE).read_bytes() == (ROOT / FIGURE).read_bytes()  # the committed figure, not a copy in docs/
    api = (site / "api" / "core" / "index.html").read_text()
    assert 'id="smvi.core.objectives.smvi_objective"' in api  # generated from the docstrings
    assert ":class:" not in api  # Sphinx roles became links or code (scripts/docs_hooks.py)
    assert "┌" in (site / "architecture" / "index.html").read_text()  # ARCHITECTURE.md, wing diagram first
    assert check_docs.link_problems(site) == []


def _mini_site(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "index.html").write_text(
        '<html><body><a href="a/">a</a><a href="a/#x">x</a>'
        '<a href="https://example.org/">out</a><img src="fig.png"></body></html>'
    )
    (root / "fig.png").write_bytes(check_docs.PIXEL)
    (root / "a" / "index.html").write_text('<html><body><h2 id="x">x</h2><a href="../index.html">up</a></body></html>')
    return root


def test_link_check_passes_a_whole_site_and_names_each_break(tmp_path):
    root = _mini_site(tmp_path / "site")
    assert check_docs.link_problems(root) == []
    (root / "a" / "index.html").write_text(
        '<html><body><a href="../missing/">m</a><a href="../index.html#nope">n</a>'
        '<script src="https://cdn.example.org/x.js"></script></body></html>'
    )
    problems = check_docs.link_problems(root)
    assert len(problems) == 4, problems  # the missing page, the missing anchor, the outside script, index's #x
    assert any("names no built file" in p for p in problems)
    assert any("no anchor #nope" in p for p in problems) and any("no anchor #x" in p for p in problems)
    assert any("fetches from outside" in p and "cdn.example.org" in p for p in problems)


@pytest.mark.slow  # about half a minute: chromium opens pages and waits for the search
@needs_chromium
def test_the_built_site_passes_in_chromium_and_search_finds_pages(site, tmp_path):
    shots = tmp_path / "shots"
    r = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(site),
            "--pages",
            "index.html,results/paper/index.html",
            "--query",
            "posterior collapse",
            "--screenshot",
            str(shots),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 pages opened" in r.stdout and "results shown" in r.stdout
    for name in ("home", "results-paper", "search"):
        assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
@needs_chromium
def test_a_missing_figure_is_caught(site, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    (broken / FIGURE).unlink()
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(broken), "--pages", "results/paper/index.html"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "names no built file" in r.stdout and "image did not load" in r.stdout
