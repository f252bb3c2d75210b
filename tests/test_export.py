"""`smvi export SWEEP_DIR RESULTS_DIR` (smvi.studies.export): what the Makefile's `tar --exclude` patterns kept of a
sweep, with symlinked folders followed; nothing deleted, a differing file refused unless --overwrite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smvi.settings.run import ConfigError
from smvi.studies.export import export_results, files_to_export

KEPT = [
    "sweep.toml",
    "sweep_status.json",
    "runs/lam0_seed0/config.toml",
    "runs/lam0_seed0/eval.json",
    "runs/lam0_seed0/metrics.jsonl",
    "runs/lam0_seed0/samples.png",
    "reused/sweep.toml",
    "reused/runs/lam1_seed0/eval.json",
]
LEFT = [
    "runs/lam0_seed0/checkpoint.safetensors",
    ".lock",
    "runs/lam0_seed0/.lock",
    "runs/lam0_seed0/eval.partial.json",
    "runs/lam0_seed0/ssl_features.npz",
    "report/results.md",
    "report/fig1.png",
    "reused/report/results.md",
    "reused/runs/lam1_seed0/checkpoint.safetensors",
]


def sweep(tmp_path: Path) -> Path:
    """A study folder: its own files, and an arm linked in from elsewhere (as `--reuse` links one)."""
    src = tmp_path / "sweep"
    other = tmp_path / "elsewhere"
    for rel in KEPT + LEFT:
        base, rel = (other, rel.removeprefix("reused/")) if rel.startswith("reused/") else (src, rel)
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(f"content of {rel}\n")
    (src / "reused").symlink_to("../elsewhere", target_is_directory=True)
    return src


def test_export_copies_the_small_files_and_follows_linked_folders(tmp_path):
    src = sweep(tmp_path)
    assert [str(p) for p in files_to_export(src)] == sorted(KEPT)
    copied, same = export_results(src, tmp_path / "results")
    assert (copied, same) == (len(KEPT), 0)
    out = tmp_path / "results"
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == sorted(KEPT)
    assert not (out / "reused").is_symlink()  # a real folder, as tar --dereference wrote it
    assert all((out / k).read_bytes() == (src / k).read_bytes() for k in KEPT)
    assert export_results(src, out) == (0, len(KEPT))  # again: nothing to do


def test_export_deletes_nothing_and_refuses_a_differing_file_unless_overwrite(tmp_path):
    src, out = sweep(tmp_path), tmp_path / "results"
    (out / "runs" / "lam0_seed0").mkdir(parents=True)
    (out / "report.md").write_text("the results folder's own\n")
    (out / "runs" / "lam0_seed0" / "eval.json").write_text("an older evaluation\n")
    with pytest.raises(ConfigError, match="eval.json differs.*--overwrite") as e:
        export_results(src, out)
    assert "\n" not in str(e.value)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "report.md",
        "runs/lam0_seed0/eval.json",
    ]  # refused before anything was copied
    assert (out / "runs" / "lam0_seed0" / "eval.json").read_text() == "an older evaluation\n"
    assert export_results(src, out, overwrite=True) == (len(KEPT), 0)
    assert (out / "runs" / "lam0_seed0" / "eval.json").read_bytes() == (src / "runs/lam0_seed0/eval.json").read_bytes()
    assert (out / "report.md").read_text() == "the results folder's own\n"  # not the export's: kept
    assert not [p for p in out.rglob("*") if "tmp" in p.name]  # no temporary file left


def test_export_refuses_a_missing_source_and_a_folder_inside_the_sweep(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        export_results(tmp_path / "nowhere", tmp_path / "results")
    src = sweep(tmp_path)
    with pytest.raises(ConfigError, match="inside"):
        export_results(src, src / "results")


def test_the_export_command(tmp_path):
    src, out = sweep(tmp_path), tmp_path / "results"
    smvi = [sys.executable, "-m", "smvi", "export"]
    r = subprocess.run(smvi + [str(src), str(out)], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(f"{len(KEPT)} files copied, 0 already there"), r.stderr
    os.chmod(out / "sweep.toml", 0o644)
    (out / "sweep.toml").write_text("changed\n")
    r = subprocess.run(smvi + [str(src), str(out)], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "--overwrite" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and (out / "sweep.toml").read_text() == "changed\n"
    r = subprocess.run(
        smvi + [str(src), str(out), "--overwrite"], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith(f"1 files copied, {len(KEPT) - 1} already there")
