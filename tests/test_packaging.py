"""Packaging: the built wheel installs and runs outside the source tree; `smvi --help` starts without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_idx_dir, tiny_train_args
from smvi.cli import EVAL_PRESET_NAMES, SWEEP_PRESET_NAMES, main

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH (so the source tree is not importable) and the caller's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


def test_help_does_not_import_torch():
    """`smvi --help` and every subcommand's --help, in a fresh interpreter, leave torch unimported."""
    paths = [(), *_commands(main)]
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom smvi.cli import main\n"
        f"for path in {paths!r}:\n"
        "    r = CliRunner().invoke(main, [*path, '--help'])\n"
        "    assert r.exit_code == 0 and 'Usage:' in r.output, (path, r.output)\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"], "a --help imported torch or numpy"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, smvi; print('torch' in sys.modules); smvi.VAE; print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    assert r.stdout.split() == ["False", "True"], r.stderr  # `import smvi` is light; a name imports what it needs


def test_preset_choices_match_the_presets():
    """The CLI spells the preset names without importing torch; they must be the library's."""
    from smvi.studies.presets import EVAL_PRESETS, PRESETS

    assert set(EVAL_PRESET_NAMES) == set(EVAL_PRESETS)
    assert set(SWEEP_PRESET_NAMES) == set(PRESETS)


def test_threads_option_sets_torch_threads(idx_dir, tmp_path):
    """--threads N reaches torch: the run's metrics record the thread count it trained with (the suite runs on 1)."""
    import json

    r = CliRunner().invoke(
        main, ["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--threads", "2", *tiny_train_args(idx_dir)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["threads"] == 2
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "r2"), "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output and not (tmp_path / "r2").exists()


def test_license_matches_pyproject():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the smvi authors" in text


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_tree(tmp_path):
    """Build the wheel from a copy of the sources, install it into a new venv that sees the dev environment's
    third-party packages (the pinned torch) but not the source tree, then run `smvi --help` and a tiny train there."""
    pytest.importorskip("build")
    t0 = time.perf_counter()
    src = tmp_path / "src-copy"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = dist.glob("smvi-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert {"smvi/cli/__init__.py", "smvi/cli/stages.py"} <= set(names)  # the subpackage is packaged
    assert any(n.endswith("licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dev environment's site-packages as a plain path entry: torch and the other dependencies are importable,
    # but its .pth files (the editable install of this tree) are not processed, so smvi comes only from the wheel.
    Path(site, "dev_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    work = tmp_path / "elsewhere"
    data = make_idx_dir(work / "idx", n_train=128, n_test=64)
    env = _clean_env(SMVI_CACHE_DIR=str(work / "cache"))
    r = subprocess.run(
        [py, "-c", "import smvi, torch; print(smvi.__file__); print(torch.__version__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(site), "smvi was not imported from the installed wheel"
    smvi = venv / "bin" / "smvi"
    r = subprocess.run([smvi, "--help"], capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0 and "Usage: smvi" in r.stdout, r.stderr
    r = subprocess.run(
        [smvi, "train", "--out", "run", "--epochs", "1", *tiny_train_args(data)],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "run" / "checkpoint.safetensors").is_file() and "epoch 1:" in r.stdout
    print(f"wheel build + install + help + tiny train: {time.perf_counter() - t0:.1f} s")


def test_every_public_name_resolves():
    import smvi

    for name in smvi.__all__:
        assert getattr(smvi, name) is not None, name
    assert callable(smvi.train_run) and smvi.train_run.__module__ == "smvi.stages.train"
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        smvi.trian  # noqa: B018
