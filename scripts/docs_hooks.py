"""MkDocs hooks (mkdocs.yml ``hooks:``): the committed results join the site, and the docstrings' Sphinx roles
become links.

1. Every ``results/<study>/report/*.png`` (the figures ``smvi report`` drew) and the reports' Markdown
(``results/<study>/report/results.md``, ``results/paper/summary.md``, ``results/bf16check/comparison.md``) are added
to the site's files as ``results/...``, so the results pages show the committed figures and link to the full tables
without a second copy of any file in ``docs/``.
2. The docstrings name other objects with Sphinx roles (``:class:`~smvi.core.models.VAE` ``), which Markdown renders
   as the role's text beside a code span. Each becomes an optional cross-reference that mkdocs-autorefs turns into a
   link to the object's API entry where one is rendered, else plain code (``~`` keeps only the last name shown).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):<code>(~?)([\w.]+)(\(\))?</code>")
ROOT = Path(__file__).resolve().parents[1]
PATTERNS = (
    "results/*/report/*.png",
    "results/*/report/results.md",
    "results/paper/summary.md",
    "results/bf16check/comparison.md",
)


def on_files(files: Files, config) -> Files:
    for pattern in PATTERNS:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def _autoref(m: re.Match) -> str:
    short, name, call = m.group(1), m.group(2), m.group(3) or ""
    shown = name.rsplit(".", 1)[-1] if short else name
    return f'<autoref identifier="{name}" optional><code>{shown}{call}</code></autoref>'


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub(_autoref, html)
