"""Every command explains itself, and the installed console script works."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from smvi.cli import main


def all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize(
    "path, cmd", list(all_commands(main)), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_command_and_option_has_help(path, cmd):
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output
    assert cmd.help and len(cmd.help) > 20
    for p in cmd.params:
        if isinstance(p, click.Option) and p.name != "help":
            assert p.help, f"{' '.join(path)} {p.opts} has no help"


@pytest.mark.parametrize("stage", ["evaluate", "convergence", "ssl", "ssl-refined", "gaps", "pictures"])
def test_every_stage_command_shares_the_stage_options(stage):
    """Each command that runs a stage on a trained run takes the same options (smvi ssl had no --device or
    --threads)."""
    opts = {o for p in main.commands[stage].params for o in p.opts}
    assert {"--device", "--other-data", "--overwrite", "--no-progress", "--threads"} <= opts, stage


def test_top_level_help_lists_commands():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for name in main.commands:
        assert name in r.output


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "smvi", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "0.1.0" in r.stdout


def test_usage_error_exits_2():
    r = CliRunner().invoke(main, ["train"])
    assert r.exit_code == 2 and "--out" in r.output
