"""MkDocs hook (mkdocs.yml ``hooks:``): the committed results join the site under their repository paths.

Every ``results/<study>/report/*.png`` (the figures ``smvi report`` drew) and the reports' Markdown
(``results/<study>/report/results.md``, ``results/paper/summary.md``, ``results/bf16check/comparison.md``) are added
to the site's files as ``results/...``, so the results pages show the committed figures and link to the full tables
without a second copy of any file in ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("results/*/report/*.png", "results/*/report/results.md", "results/paper/summary.md",
            "results/bf16check/comparison.md")


def on_files(files: Files, config) -> Files:
    for pattern in PATTERNS:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
