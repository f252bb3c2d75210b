"""The Python code blocks of the README and of the documentation site (docs/**/*.md) run as written: each page's
blocks in order, as one script, in a fresh interpreter, in an empty directory, without MNIST and on one torch thread.

A Python block that must not run is marked by ``<!-- docs-test: skip (the reason) -->`` on the line just above its
opening fence (docs/index.md says so too). Shell blocks do not run, but every ``smvi COMMAND`` in them must name a
command the CLI has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"^<!-- docs-test: skip \((?P<why>[^)]+)\) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```", flags=re.S | re.M)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """Every fenced block as (language, code, the reason it is skipped or None)."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.match(before)
        blocks.append((m.group("lang"), m.group("code"), skip.group("why") if skip else None))
    return blocks


def python_blocks(text: str) -> list[str]:
    """The Python blocks that run (not marked skip)."""
    return [code for lang, code, skip in code_blocks(text) if lang == "python" and skip is None]


def run_blocks(page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "blocks.py"
    script.write_text("\n\n".join(python_blocks(page.read_text())))
    # No MNIST (the examples must not need it); one thread, like the rest of the suite, so that a loaded CI machine
    # does not stall torch's thread barriers.
    env = {**os.environ, "SMVI_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    print(f"{page.relative_to(ROOT)}: Python blocks in {time.perf_counter() - t0:.1f} s")
    assert r.returncode == 0, f"{page.relative_to(ROOT)}:\n{r.stderr[-3000:]}"
    return r


RUNNABLE = [p for p in PAGES if python_blocks(p.read_text())]


def test_the_pages_with_code_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in RUNNABLE}
    assert {"README.md", "docs/getting-started.md", "docs/guide/library.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run_as_written(page, tmp_path):
    r = run_blocks(page, tmp_path)
    name = page.relative_to(ROOT).as_posix()
    if name in ("README.md", "docs/getting-started.md"):  # the SMVI loss in the user's own training loop
        assert "smvi_objective" in page.read_text() and "epoch 3: train ELBO" in r.stdout
    if name == "docs/guide/library.md":  # train, load, evaluate, pictures: the library's whole path
        assert "log p(x) ≈" in r.stdout and "BDMC:" in r.stdout
        assert (tmp_path / "runs" / "example" / "eval.json").is_file()
        assert (tmp_path / "runs" / "example" / "latents.png").is_file()


def test_skip_markers_say_why_and_mark_a_python_block():
    marker = re.compile(r"^<!-- docs-test:.*$", flags=re.M)  # a marker is a line of its own
    for page in PAGES:
        text = page.read_text()
        marked = [skip for lang, _, skip in code_blocks(text) if skip is not None]
        assert len(marker.findall(text)) == len(marked), f"{page}: a docs-test marker not right above a fence"
        for lang, _, skip in code_blocks(text):
            assert skip is None or lang == "python", f"{page}: only Python blocks run, so only they are marked"


def test_code_blocks_parse_with_the_markers():
    text = "a\n<!-- docs-test: skip (needs MNIST) -->\n```python\nraise SystemExit(1)\n```\n```python\nx = 1\n```\n"
    assert code_blocks(text) == [("python", "raise SystemExit(1)\n", "needs MNIST"), ("python", "x = 1\n", None)]
    assert python_blocks(text) == ["x = 1\n"]


def test_shell_blocks_name_real_commands():
    """Each ``smvi WORD`` at the start of a shell line (or after ``$(BIN)/``) is a command of the CLI."""
    from smvi.cli import main

    commands = set(main.commands) | {"COMMAND", "--help", "--version"}
    for page in PAGES:
        for lang, code, _ in code_blocks(page.read_text()):
            if lang not in ("bash", "sh", "console"):
                continue
            for line in code.splitlines():
                m = re.match(r"^\s*smvi\s+(\S+)", line)
                if m:
                    assert m.group(1) in commands, f"{page.relative_to(ROOT)}: {line.strip()}"
