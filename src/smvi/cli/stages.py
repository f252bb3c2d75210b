"""The stages on a trained run: ``smvi evaluate``, ``convergence``, ``ssl``, ``ssl-refined``, ``gaps``, ``pictures``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from smvi.cli.app import (
    EVAL_PRESET_NAMES,
    NO_PROGRESS_HELP,
    NonEmptyPath,
    eval_default,
    main,
    no_progress_option,
    set_threads,
    sets_option,
    stack,
    threads_option,
)
from smvi.settings.run import build_config
from smvi.settings.stages import ConvergenceConfig, EvalConfig, GapConfig, RefinedSSLConfig
from smvi.store.rundir import RunDir


def _fmt(value) -> str:
    """A printed estimate (nats, two decimals); ``nan`` for a missing one."""
    return "nan" if value is None else f"{value:.2f}"


def _other_data_note(record) -> None:
    if record.header.data is not None:
        click.echo(f"note: scored {record.header.data.describe()}, not the data the run was trained on (--other-data)")


def _notes(record) -> None:
    """The record's notes, each on a ``note:`` line, after the one on data it was not trained on."""
    _other_data_note(record)
    for note in record.notes:
        click.echo(f"note: {note}")


# ---- evaluate, ssl --------------------------------------------------------------------------------------------------
# CLI option -> config key
_EVAL_OPTIONS = {"ais_steps": "ais.steps", "ais_chains": "ais.chains", "ais_precision": "ais.precision"}
_DEVICE_HELP = "Where to compute: auto (a GPU when torch sees one, else the CPU, as for train), cpu or cuda."
_OTHER_DATA_HELP = (
    "Score the data found even if it is not what the run was trained on (data.json); the record then "
    "names it. Without it such data is refused."
)
_SETS_HELP = "Override any setting, e.g. --set ais.steps=300 (repeatable; `smvi config eval` lists them)."
_run_dir_argument = click.argument("run_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
_device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help=_DEVICE_HELP
)


def _stage_options(overwrite: str, *, no_progress: str = NO_PROGRESS_HELP):
    """The options the stage commands share, last in each one's --help: --device, --other-data, --overwrite (its help:
    ``overwrite``), --no-progress and --threads.

    The command gets them as one keyword, ``stage``: the stage function's keywords (``overwrite``, ``progress``,
    ``other_data`` and ``device``), with --threads already set."""
    shared = (
        click.option("--other-data", is_flag=True, help=_OTHER_DATA_HELP),
        click.option("--overwrite", is_flag=True, help=overwrite),
        no_progress_option(no_progress),
    )
    options = stack(_device_option, *shared, threads_option)

    def apply(command):
        @functools.wraps(command)
        def run(
            *args, device: str, other_data: bool, overwrite: bool, no_progress: bool, threads: int | None, **kwargs
        ):
            set_threads(threads)
            stage = {"overwrite": overwrite, "progress": not no_progress, "other_data": other_data, "device": device}
            return command(*args, stage=stage, **kwargs)

        return options(run)

    return apply


@main.command("evaluate")
@_run_dir_argument
@click.option(
    "--preset",
    type=click.Choice(EVAL_PRESET_NAMES),
    default="default",
    show_default=True,
    help="'default' is BDMC-checked converged AIS; 'quick' is for a first look.",
)
@sets_option(_SETS_HELP)
@click.option("--n-test", type=int, default=None, help=f"Test points (fixed random subset) {eval_default('n_test')}.")
@click.option(
    "--n-train",
    type=int,
    default=None,
    help=f"Training points (fixed random subset); 0 skips {eval_default('n_train')}.",
)
@click.option(
    "--ais-steps",
    "ais_steps",
    type=int,
    default=None,
    help=f"AIS intermediate distributions (ais.steps) {eval_default('ais.steps')}.",
)
@click.option(
    "--ais-chains",
    "ais_chains",
    type=int,
    default=None,
    help=f"AIS chains per point (ais.chains) {eval_default('ais.chains')}.",
)
@click.option(
    "--ais-precision",
    "ais_precision",
    type=click.Choice(["fp32", "bf16", "auto"]),
    default=None,
    help="bf16: AIS's leapfrog force and IWAE's decoder pass in bf16; auto: bf16 where the hardware has "
    "bf16 units (ais.precision) [auto].",
)
@_stage_options("Recompute an existing eval.json.")
def evaluate_cmd(run_dir: Path, preset: str, sets: tuple[str, ...], stage: dict[str, Any], **options) -> None:
    """ELBO, D_SM, IWAE, AIS log p(x) and the ELBO gap (AIS − ELBO) on fixed test and training subsets.

    Writes the run's eval record (eval.json): per-image values and means with standard errors, the settings, seconds
    and AIS diagnostics. Interrupted (Ctrl-C), it resumes from its last scored batch when rerun with the same settings
    (eval.partial.json), with the values an uninterrupted pass gives.
    """
    from smvi.stages.evaluate import evaluate_run
    from smvi.studies.presets import EVAL_PRESETS

    options = {_EVAL_OPTIONS.get(k, k): v for k, v in options.items()}
    cfg = build_config(EvalConfig, EVAL_PRESETS[preset].model_dump(), sets=sets, overrides=options)
    r = evaluate_run(run_dir, cfg, **stage)
    for name, s in r.splits.items():
        click.echo(
            f"{name:5s} (n={s.n}): ELBO {_fmt(s.elbo.mean)}  AIS {_fmt(s.ais.mean)} "
            f"(acceptance {_fmt(s.ais_acceptance)})  "
            f"gap {_fmt(s.gap.mean)} ± {_fmt(s.gap.se)}  D_SM {_fmt(s.d_sm.mean)}"
        )
    if f := r.full_test:
        click.echo(f"whole test set (n={f.n}): IWAE k={f.k} {_fmt(f.iwae.mean)} ± {_fmt(f.iwae.se)}")
    target = RunDir(run_dir).read_config().train.constraint
    if target.target is not None:  # a constrained run: what it asked for, next to what it reached
        click.echo(
            f"target: {target.measure} <= {target.target:g} during training "
            + ("(D_SM above)" if target.measure == "dsm" else "(IWAE_k - ELBO, a lower bound: AIS gap above)")
        )
    _notes(r)
    click.echo(f"-> {RunDir(run_dir).record_path('eval')} ({r.seconds or 0:.0f} s)")


_CONV = ConvergenceConfig()


@main.command("convergence")
@_run_dir_argument
@click.option(
    "--steps", default=None, help=f"AIS lengths to compare, comma-separated [{','.join(map(str, _CONV.steps))}]."
)
@click.option("--n-points", type=int, default=None, help=f"Simulated points (BDMC) and test points [{_CONV.n_points}].")
@click.option("--tol", type=float, default=None, help=f"Agreement (nats) that counts as converged [{_CONV.tol}].")
@sets_option("Override any setting, e.g. --set ais.chains=8 --set seed=1 (repeatable).")
@click.option(
    "--ais-precision",
    type=click.Choice(["fp32", "bf16", "auto"]),
    default=None,
    help="bf16: AIS's leapfrog force in bf16, energies exact; auto: bf16 where the hardware has bf16 units "
    "(ais.precision) [auto].",
)
@_stage_options("Recompute an existing convergence record.")
def convergence_cmd(
    run_dir: Path,
    steps: str | None,
    n_points: int | None,
    tol: float | None,
    sets: tuple[str, ...],
    ais_precision: str | None,
    stage: dict[str, Any],
) -> None:
    """Check AIS settings on a trained model: BDMC bounds on simulated data, and AIS at increasing lengths on test data.

    Writes the run's convergence record (convergence.json). A small BDMC gap (upper − lower) means AIS at those
    settings is accurate.
    """
    from smvi.stages.convergence import check_convergence

    ladder = None
    if steps is not None:
        try:
            ladder = [int(s) for s in steps.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"expected comma-separated integers, got {steps!r}", param_hint="--steps"
            ) from None
    cfg = build_config(
        ConvergenceConfig,
        sets=sets,
        overrides={"steps": ladder, "n_points": n_points, "tol": tol, "ais.precision": ais_precision},
    )
    r = check_convergence(run_dir, cfg, **stage)
    means = r.ladder.means if r.ladder else [None] * len(r.bdmc)
    for b, m in zip(r.bdmc, means, strict=True):
        click.echo(
            f"steps {b.steps:>6d}: BDMC [{_fmt(b.lower)}, {_fmt(b.upper)}] gap {_fmt(b.gap)}"
            f" ± {_fmt(b.gap_se)}   test AIS {_fmt(m)}"
        )
    _notes(r)
    converged = r.ladder.converged if r.ladder else None
    click.echo(f"ladder converged (tol {cfg.tol}): {converged}  -> {RunDir(run_dir).record_path('convergence')}")


@main.command("ssl")
@_run_dir_argument
@sets_option("Override any setting, e.g. --set sizes=[600,1000] --set seeds=[0,1] (repeatable).")
@click.option("--test-size", type=int, default=None, help="Fixed random test subset [the full test set].")
@_stage_options("Recompute an existing ssl.json.")
def ssl_cmd(run_dir: Path, sets: tuple[str, ...], test_size: int | None, stage: dict[str, Any]) -> None:
    """Semi-supervised accuracy: an SVM on encoder means μ_φ(x) with s labeled examples (s/10 per class).

    For each s (600, 1000, 3000 by default) and label-subset seed, hyper-parameters are chosen by cross-validation
    inside the labeled examples. Prints test accuracy, mean ± SE over the seeds (as in the report), for the encoder
    means and the raw-pixel baseline; writes RUN_DIR/ssl.json. ``--set protocol=robust``: the RBF SVM, logistic
    regression and k-NN on growing grids over 20 label subsets, the encoder means saved as RUN_DIR/ssl_features.npz.
    """
    from smvi.stages.ssl import SSLConfig, ssl_run

    cfg = build_config(SSLConfig, sets=sets, overrides={"test_size": test_size})
    record = ssl_run(run_dir, cfg, **stage)
    _other_data_note(record)
    click.echo(ssl_table(record))
    click.echo(f"-> {RunDir(run_dir).record_path('ssl')} ({record.seconds or 0:.0f} s)")


def ssl_table(record) -> str:
    """An ssl record as a table: test accuracy (%), mean ± SE over the label subsets (:func:`smvi.store.stats.mean_se`,
    the report's convention), one column per labeled-set size s, one row per feature set (encoder means, raw pixels) or,
    for the robust protocol, per classifier on the encoder means, with how many choices hit a grid's edge."""
    from smvi.store.stats import mean_se

    f, raw = record.features, record.raw_pixels
    sizes = sorted(f.sizes, key=int)

    def cell(acc: list | None) -> str:
        m = mean_se(acc) if acc is not None else None
        if m is None or m.mean is None:
            return "—"
        return f"{100 * m.mean:.2f}" + ("" if m.se is None else f" ± {100 * m.se:.2f}")

    def by_size(scores) -> dict[str, list]:
        return {s: v.accuracy for s, v in scores.sizes.items()}

    rows = [(f"encoder means μ(x), d={f.n_features}", by_size(f))]
    if record.table:
        names = list(dict.fromkeys(r.classifier for r in record.table))
        rows = [
            (
                f"{c} on μ(x), d={f.n_features}",
                {s: [r.accuracy for r in record.table if r.classifier == c and str(r.size) == s] for s in sizes},
            )
            for c in names
        ]
    rows += [(f"raw pixels, d={raw.n_features}", by_size(raw))] if raw is not None else []
    table = [["", *(f"s = {s}" for s in sizes)]] + [[name, *(cell(acc.get(s)) for s in sizes)] for name, acc in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [f"test accuracy (%), mean ± SE over {len(f.seeds)} label subsets, {f.n_test} test images:"]
    lines += [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in table
    ]
    if record.table:
        edge = sum(any(r.on_edge.values()) for r in record.table)
        lines.append(f"choices on a grid's edge: {edge} of {len(record.table)} fits")
    elif raw is None:
        lines.append("raw pixels: not computed (--set raw_pixels=true)")
    return "\n".join(lines)


@main.command("ssl-refined")
@_run_dir_argument
@sets_option(
    "Override any setting, e.g. --set steps=300 --set seeds=[0,1] (repeatable; `smvi config ssl_refined` lists them)."
)
@click.option("--steps", type=int, default=None, help=f"Local-fit steps per image [{RefinedSSLConfig().steps}].")
@click.option("--test-size", type=int, default=None, help=f"Fixed random test subset [{RefinedSSLConfig().test_size}].")
@_stage_options("Recompute an existing ssl_refined.json.")
def ssl_refined_cmd(run_dir: Path, sets: tuple[str, ...], stage: dict[str, Any], **options) -> None:
    """Better inference at test time only: SSL accuracy on per-image refined posteriors beside the encoder's.

    Each image a labeled set or the test subset uses gets the gap split's local fit (the ELBO of that image alone,
    optimized from the encoder's q for --steps steps); the robust protocol (RBF SVM, logistic regression, k-NN) then
    scores the refined means and the encoder means on the same images and label subsets. Prints each classifier's
    accuracy on both and the paired difference; writes RUN_DIR/ssl_refined.json and the two features files.
    Each image's fit costs steps × n_samples decoder passes, so the default protocol is reduced (5 label subsets,
    2000 test images, about 16,000 images to refine: about 15 min on one core for the paper's model, where the
    default 100 steps close about 93 % of the amortization gap).
    """
    from smvi.stages.ssl_refined import ssl_refined_run

    cfg = build_config(RefinedSSLConfig, sets=sets, overrides=options)
    record = ssl_refined_run(run_dir, cfg, **stage)
    click.echo(refined_table(record))
    _notes(record)
    click.echo(f"-> {RunDir(run_dir).record_path('ssl_refined')} ({record.seconds or 0:.0f} s)")


def refined_table(record) -> str:
    """An ssl_refined record as a table: per classifier and s, the test accuracy (%) on the encoder means and on the
    refined means, mean over the label subsets, and refined − encoder, mean ± SE over the subsets (paired)."""
    from smvi.store.stats import mean_se

    def acc(fits) -> dict[tuple[str, int, int], float | None]:
        return {(r.classifier, r.size, r.subset): r.accuracy for r in fits}

    enc, ref = acc(record.encoder.table), acc(record.refined.table)
    classifiers = list(dict.fromkeys(c for c, _, _ in enc))
    sizes = sorted({s for _, s, _ in enc})
    pct = lambda v: "—" if v is None else f"{100 * v:.2f}"  # noqa: E731
    rows = [["classifier", "s", "encoder", "refined", "refined − encoder"]]
    for c in classifiers:
        for s in sizes:
            keys = [k for k in enc if k[0] == c and k[1] == s]
            e, r = mean_se([enc[k] for k in keys]), mean_se([ref.get(k) for k in keys])
            pairs = [(enc[k], ref.get(k)) for k in keys]
            d = mean_se([None if a is None or b is None else b - a for a, b in pairs])
            diff = "—" if d.mean is None else f"{100 * d.mean:+.2f}" + ("" if d.se is None else f" ± {100 * d.se:.2f}")
            rows.append([c, str(s), pct(e.mean), pct(r.mean), diff])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    f, g = record.fit, record.fit.gain
    lines = [
        f"local fits: {f.images} images, {record.header.settings.get('steps')} steps each, ELBO gain over the "
        f"encoder's q {_fmt(g.mean)} ± {_fmt(g.se)} nats/image (median {_fmt(f.gain_quantiles.get('q50'))}), "
        f"{f.seconds or 0:.0f} s",
        f"test accuracy (%), mean over {len({k[2] for k in enc})} label subsets, "
        f"{record.encoder.features_file.n_test} test images; difference: mean ± SE over the subsets (paired):",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


@main.command("gaps")
@_run_dir_argument
@sets_option("Override any setting, e.g. --set steps=5000 --set ais.steps=1000 (repeatable).")
@click.option("--n-points", type=int, default=None, help=f"Test images (fixed random subset) [{GapConfig().n_points}].")
@click.option(
    "--ais-steps",
    "ais_steps",
    type=int,
    default=None,
    help=f"AIS intermediate distributions for log p(x) (ais.steps) [{GapConfig().ais.steps}].",
)
@_stage_options("Recompute an existing gaps.json.")
def gaps_cmd(run_dir: Path, sets: tuple[str, ...], stage: dict[str, Any], **options) -> None:
    """Split the ELBO gap into approximation gap (log p(x) − ELBO of the best q of the family for each image) and
    amortization gap (that ELBO − the encoder's), log p(x) from AIS. Writes the run's gaps record (gaps.json)."""
    from smvi.stages.gaps import gaps_run

    options = {_EVAL_OPTIONS.get(k, k): v for k, v in options.items()}
    cfg = build_config(GapConfig, sets=sets, overrides=options)
    r = gaps_run(run_dir, cfg, **stage)
    ms = lambda m: f"{_fmt(m.mean)} ± {_fmt(m.se)}"  # noqa: E731
    click.echo(
        f"n={r.n}: gap {ms(r.gap)} = approximation {ms(r.approximation)} + amortization "
        f"{ms(r.amortization)}  (local fit converged: {r.fit.converged}, last-window gain ≤ "
        f"{_fmt(r.fit.last_gain_max)} nats)"
    )
    _notes(r)
    click.echo(f"-> {RunDir(run_dir).record_path('gaps')} ({r.seconds or 0:.0f} s)")


@main.command("pictures")
@_run_dir_argument
@sets_option(
    "Override any setting, e.g. --set projection=tsne --set n_latent=5000 (repeatable; `smvi config "
    "pictures` lists them)."
)
@_stage_options("Redraw existing pictures (pictures.json and its PNGs).", no_progress="No progress bar.")
def pictures_cmd(run_dir: Path, sets: tuple[str, ...], stage: dict[str, Any]) -> None:
    """Draw what the model learned, as three PNGs in RUN_DIR: samples.png (decoder means of 64 prior samples),
    reconstructions.png (32 fixed test images, each row above its reconstructions) and latents.png (the encoder
    means of 2000 test images in 2-d, PCA or t-SNE, coloured by label). Writes the run's pictures record
    (pictures.json); the sweep report shows the pictures of every run side by side. About 2 s with PCA."""
    from smvi.settings.stages import PicturesConfig
    from smvi.stages.pictures import pictures_run

    cfg = build_config(PicturesConfig, sets=sets)
    r = pictures_run(run_dir, cfg, **stage)
    _notes(r)
    rd = RunDir(run_dir)
    names = ", ".join(rd.picture_path(k).name for k in rd.picture_kinds())
    click.echo(f"-> {names} and {rd.record_path('pictures').name} in {rd.path} ({r.seconds or 0:.0f} s)")
