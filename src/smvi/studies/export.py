"""``smvi export SWEEP_DIR RESULTS_DIR``: a sweep's (or a study's) small files, copied to a results folder.

What a results folder keeps of a sweep: everything but the checkpoints, locks, unfinished evaluations' progress, the
SSL feature arrays (every array file of a run) and the sweep's own report (the results folder gets its own;
:data:`LEFT_OUT`). Symlinked folders are followed (a study's reused arm is copied as a folder, as ``tar
--dereference`` did). Nothing in RESULTS_DIR that the export did not copy is deleted; a file there that differs from
the sweep's is refused (one line, before anything is copied) unless ``overwrite``; each file is written atomically (a
temporary file renamed into place).
"""

from __future__ import annotations

import filecmp
import fnmatch
import os
from pathlib import Path

from smvi.settings.run import ConfigError
from smvi.store.atomic import atomic_write_bytes
from smvi.store.rundir import RunDir

__all__ = ["LEFT_OUT", "ExportError", "export_results", "files_to_export"]

LEFT_OUT = ("checkpoint.safetensors", ".lock", "*.partial.json", *RunDir.array_files())
"""Names (fnmatch patterns) of the files an export leaves out, at any depth; and every folder named ``report`` (the
sweep's own report, an arm's; as the Makefile's ``tar --exclude=report`` did)."""


class ExportError(ConfigError):
    """An export that would overwrite a differing file, or whose source is not a folder; one line."""


def files_to_export(sweep_dir: str | Path) -> list[Path]:
    """The files of ``sweep_dir`` an export copies, relative to it, sorted; symlinked folders followed (each real
    folder once, so a link loop ends)."""
    root = Path(sweep_dir)
    out: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        real = os.path.realpath(here)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        rel = here.relative_to(root)
        dirs[:] = sorted(d for d in dirs if d != "report")
        out += [
            rel / f for f in sorted(files) if not any(fnmatch.fnmatch(f, p) for p in LEFT_OUT) and (here / f).is_file()
        ]
    return sorted(out)


def export_results(sweep_dir: str | Path, results_dir: str | Path, *, overwrite: bool = False) -> tuple[int, int]:
    """Copy the small files of ``sweep_dir`` (:func:`files_to_export`) into ``results_dir`` (module docstring);
    (files copied, files already identical). ExportError (one line) if ``sweep_dir`` is not a folder or, unless
    ``overwrite``, a file of ``results_dir`` differs from the sweep's (nothing is copied then)."""
    src, dst = Path(sweep_dir), Path(results_dir)
    if not src.is_dir():
        raise ExportError(f"{src} is not a folder: give a sweep (or study) directory")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ExportError(f"{dst} is inside {src}: export to a folder outside the sweep")
    files = files_to_export(src)
    todo, same = [], 0
    for rel in files:
        target = dst / rel
        if target.is_file() and filecmp.cmp(src / rel, target, shallow=False):
            same += 1
            continue
        if target.exists() and not target.is_file():
            raise ExportError(f"{target} is in the way of a file ({rel}) and is not one: move it")
        if target.exists() and not overwrite:
            raise ExportError(
                f"{target} differs from {src / rel}: rerun with --overwrite to replace it, or export to another folder"
            )
        todo.append(rel)
    for rel in todo:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, (src / rel).read_bytes())
    return len(todo), same
