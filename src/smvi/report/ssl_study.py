"""The SSL study's pre-registered analysis (issue 25; torch-free): does better inference cause the downstream gain?

Written before the study's runs finished; the rules below are fixed, and the numbers come from the records alone.

**Data.** Every run of a study folder (:func:`smvi.report.aggregate.collect_runs`) that finished its planned epochs and
has a current ``ssl.json`` of the robust protocol (:mod:`smvi.stages.ssl_robust`: RBF SVM, logistic regression and
k-NN, the same label subsets for every run) and an ``eval.json``. No run is excluded for its results (a collapsed run
counts like any other); runs left out for missing or other-settings records are listed in the notes. A run's **arm**
is its method and knob (:func:`smvi.report.aggregate.method_of`): "SMVI λ=0" (the reference), "SMVI λ=0.01",
"SMVI, D_SM → encoder λ=0.01", "IWAE k=5", "β-VAE β=0.5", ...

**Accuracy.** acc_c(run, s): the test accuracy of classifier c (percent), mean over the label subsets of size s;
acc_c(run): its mean over s. The gain of a run over the reference is paired by training seed: Δ_c(run) =
acc_c(run) − acc_c(the reference run with the same seed).

**Primary test** (results/ssl/PREREGISTRATION.md, committed before any of the study's SSL numbers existed; this
module implements it and must not drift from it). c = the RBF SVM (the paper's classifier), arm SMVI λ=0.01 against
SMVI λ=0: the seeds' Δ averaged over s, two-sided paired t-test over seeds (:func:`smvi.store.stats.paired_t`),
α = 0.05, 95 % t interval. Verdict:

- *holds*: mean Δ > 0 and p < α;
- *does not hold*: the interval's upper end is below :data:`MARGIN` (0.1 points: a gain of 0.1 points or more is
  excluded), or mean Δ < 0 with p < α (a loss);
- *cannot be decided*: otherwise.

**Secondary tests.** Every (arm ≠ reference, s, classifier) cell: the seeds' Δ at that s, paired t over seeds;
Holm-adjusted over all the cells together (one family).

**Mechanism** (does the gain track inference?). Per arm ≠ reference, the RBF SVM's Δ averaged over s, paired t over
seeds (95 % interval). Its mean test ELBO gap (AIS − ELBO, from ``eval.json``) tells better inference (a smaller gap
than the reference's) from worse: the *worse-inference controls* are the arms with a larger gap than the reference
(the study's IWAE k = 5 and β = 0.5). A control *matches* the primary arm when its interval reaches the primary
arm's mean gain (upper end ≥ it). Verdict:

- *tracks inference*: the primary test holds, the encoder-only arm (``train.dsm_grad = "encoder"``, D_SM's gradient
  reaching only q) gains with its interval above 0, and no worse-inference control matches;
- *not specific to inference*: the primary test holds and a worse-inference control matches;
- *no gain*: the primary test does not hold;
- *cannot be decided*: otherwise.

**Better inference at test time only** (exploratory: added after the pre-registration, so outside its family of
tests). For every reference run with a current ``ssl_refined.json`` (:mod:`smvi.stages.ssl_refined`: the same model,
its encoder means against per-image refined posteriors' means, on the same images and label subsets of a reduced
protocol), per classifier: the run's accuracy difference refined − encoder, mean over s and the label subsets; paired
t over seeds (95 % interval). Reported beside the local fits' mean ELBO gain, which says how much better the
inference became.

**Figure.** For every run with an eval record: its Δ (paired with the reference's run of its seed; a reference run,
or a run whose seed has none: against the reference's mean over seeds, so the reference's seeds scatter around 0
and show the unpaired seed-to-seed spread), against its test ELBO gap and against its test log p(x) (AIS), one row
per classifier; each arm's mean ± SE over seeds drawn over its runs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from smvi.report.aggregate import Run, collect_runs, lookup, method_of, number
from smvi.report.paired import ALPHA, format_p
from smvi.store.atomic import atomic_write_bytes, atomic_write_text
from smvi.store.stats import PairedDiff, holm, mean_se, paired_t

__all__ = [
    "REFERENCE",
    "PRIMARY",
    "PRIMARY_CLASSIFIER",
    "Cell",
    "SSLStudy",
    "arm_of",
    "refined_gain",
    "run_accuracy",
    "ssl_study",
    "write_ssl_study",
    "ssl_study_verdicts",
    "study_markdown",
    "study_csv",
    "figure_gain",
    "STUDY_FILES",
]

REFERENCE, PRIMARY, PRIMARY_CLASSIFIER = "SMVI λ=0", "SMVI λ=0.01", "rbf_svm"
ENCODER_ONLY = "SMVI, D_SM → encoder"
MARGIN = 0.1
"""The primary test's margin in accuracy points: "does not hold" once the interval excludes a gain this large."""
STUDY_FILES = ("ssl_study.md", "ssl_study.csv", "fig_ssl_gain.png")
Verdict = Literal["holds", "does not hold", "cannot be decided"]
Mechanism = Literal["tracks inference", "not specific to inference", "no gain", "cannot be decided"]


def arm_of(run: Run) -> str | None:
    """The run's arm, e.g. "SMVI λ=0.01", "IWAE k=5" (None for a learned λ)."""
    m = method_of(run.config)
    return None if m is None else f"{m[0]} {m[1]}={m[2]:g}"


def run_accuracy(run: Run) -> dict[tuple[str, int], float]:
    """(classifier, s) → the run's test accuracy (percent), mean over its label subsets, from its robust ssl record
    (empty for another protocol)."""
    table = lookup(run.ssl, "table")
    if lookup(run.ssl, "settings", "protocol") != "robust" or not isinstance(table, list):
        return {}
    acc: dict[tuple[str, int], list[float]] = {}
    for row in table:
        if (a := number(row.get("accuracy"))) is not None:
            acc.setdefault((row["classifier"], int(row["size"])), []).append(100 * a)
    return {k: float(np.mean(v)) for k, v in acc.items()}


@dataclass(frozen=True)
class Cell:
    """One arm against the reference, paired by seed: classifier ``classifier`` at labeled-set size ``s`` (None:
    averaged over s); ``p_holm`` within its family (module docstring)."""

    arm: str
    classifier: str
    s: int | None
    diff: PairedDiff
    p_holm: float | None = None


@dataclass(frozen=True)
class ArmPoint:
    """One run of the figure: its arm, seed, test ELBO gap, test log p(x) (AIS), and Δ per classifier (module
    docstring, Figure)."""

    arm: str
    seed: int
    gap: float | None
    logpx: float | None
    gain: dict[str, float]


@dataclass(frozen=True)
class SSLStudy:
    primary: Cell | None
    verdict: Verdict
    sentence: str
    secondary: tuple[Cell, ...]
    arms: tuple[Cell, ...]  # the mechanism's per-arm tests (RBF SVM, averaged over s)
    gaps: dict[str, float]  # arm → mean test ELBO gap over its runs
    mechanism: Mechanism
    mechanism_sentence: str
    accuracy: dict[tuple[str, str, int], tuple[float, float | None, int]]  # (arm, c, s) → mean, SE over seeds, n
    edges: dict[str, tuple[int, int]]  # arm → (fits with a choice on a grid's edge, fits)
    points: tuple[ArmPoint, ...]
    notes: tuple[str, ...]
    refined: tuple[Cell, ...] = ()  # test-time refinement of the reference's runs, per classifier (module docstring)
    refined_gain: float | None = None  # the local fits' mean ELBO gain (nats per image), mean over those runs


def _arms(runs: list[Run], notes: list[str]) -> dict[str, dict[int, Run]]:
    out: dict[str, dict[int, Run]] = {}
    for r in runs:
        arm = arm_of(r)
        if arm is None:
            notes.append(f"{r.name}: a learned λ, not an arm of this study; left out")
        elif r.epochs is None or r.planned is None or r.epochs < r.planned:
            notes.append(f"{r.name}: unfinished ({r.epochs} of {r.planned} epochs); left out")
        elif not run_accuracy(r):
            notes.append(f"{r.name}: no current robust-protocol ssl.json (smvi ssl --set protocol=robust); left out")
        elif r.seed in out.get(arm, {}):
            notes.append(f"{r.name}: a second run of {arm}, seed {r.seed}; left out")
        else:
            out.setdefault(arm, {})[r.seed] = r
    return out


def _paired(arm_runs: dict[int, Run], ref: dict[int, Run], value) -> PairedDiff | None:
    diffs = [
        a - b
        for seed, r in arm_runs.items()
        if seed in ref
        if (a := value(r)) is not None and (b := value(ref[seed])) is not None
    ]
    return paired_t(diffs, level=1 - ALPHA, unit="seeds")


def _mean_over_s(c: str, sizes: list[int]):
    def value(r: Run) -> float | None:
        acc = run_accuracy(r)
        vals = [v for s in sizes if (v := acc.get((c, s))) is not None]
        return None if len(vals) < len(sizes) else float(np.mean(vals))

    return value


REFINED = f"{REFERENCE}, refined q at test time"


def refined_gain(run: Run, c: str) -> float | None:
    """The run's accuracy difference refined − encoder means (points) of classifier ``c``, mean over its
    ssl_refined record's (s, subset) rows; None without the record or a pair of rows."""
    tree = run.ssl_refined or {}

    def rows(which: str) -> dict:
        return {
            (r["size"], r["subset"]): 100 * a
            for r in lookup(tree, which, "table") or []
            if r["classifier"] == c and (a := number(r.get("accuracy"))) is not None
        }

    enc, ref = rows("encoder"), rows("refined")
    diffs = [ref[k] - enc[k] for k in enc if k in ref]
    return float(np.mean(diffs)) if diffs else None


def _refined(ref: dict[int, Run]) -> tuple[tuple[Cell, ...], float | None]:
    """The test-time refinement cells (paired over the reference's seeds) and the mean ELBO gain of the fits."""
    runs = [r for r in ref.values() if r.ssl_refined]
    classifiers = sorted(
        {row["classifier"] for r in runs for row in lookup(r.ssl_refined, "encoder", "table") or []},
        key=lambda c: (c != PRIMARY_CLASSIFIER, c),
    )
    cells = tuple(
        Cell(REFINED, c, None, d)
        for c in classifiers
        if (d := paired_t([g for r in runs if (g := refined_gain(r, c)) is not None], level=1 - ALPHA, unit="seeds"))
        is not None
    )
    gains = [g for r in runs if (g := number(lookup(r.ssl_refined, "fit", "gain", "mean"))) is not None]
    return cells, (float(np.mean(gains)) if gains else None)


def _ci(d: PairedDiff) -> str:
    ci = "" if d.low is None else f" [95 % CI {d.low:+.2f}, {d.high:+.2f}]"
    return f"{d.mean:+.2f} points{ci}, p = {format_p(d.p)} (n = {d.n} seeds)"


def _decide(primary: PairedDiff | None) -> tuple[Verdict, str]:
    name = f"Primary test: the RBF SVM's accuracy, {PRIMARY} minus {REFERENCE}, averaged over s"
    if primary is None or primary.p is None:
        return "cannot be decided", f"{name} — cannot be decided: fewer than two seeds pair the two arms."
    if primary.mean > 0 and primary.p < ALPHA:
        return "holds", f"{name} — holds: {_ci(primary)}."
    if primary.mean < 0 and primary.p < ALPHA:
        return "does not hold", f"{name} — does not hold: {_ci(primary)}; a significant loss."
    if primary.high is not None and primary.high < MARGIN:
        return "does not hold", (
            f"{name} — does not hold: {_ci(primary)}; the interval excludes a gain of {MARGIN} points."
        )
    return "cannot be decided", (
        f"{name} — cannot be decided: {_ci(primary)}; no significant gain, but gains of "
        f"{MARGIN} points or more are not excluded."
    )


def _mechanism(
    arms: list[Cell], gaps: dict[str, float], primary: PairedDiff | None, verdict: Verdict
) -> tuple[Mechanism, str]:
    """The mechanism verdict of the module docstring from the per-arm pooled gains ``arms`` (RBF SVM, mean over s),
    the arms' mean test ELBO gaps and the primary test."""
    ref_gap = gaps.get(REFERENCE)
    listed = "; ".join(f"{c.arm}: {_ci(c.diff)}, gap {gaps.get(c.arm, float('nan')):.2f} nats" for c in arms)
    listed = f" ({listed})" if listed else ""
    if verdict == "does not hold":
        return "no gain", f"Mechanism — no gain: the primary test does not hold{listed}."
    if verdict != "holds" or primary is None:
        return "cannot be decided", f"Mechanism — cannot be decided: the primary test is undecided{listed}."
    worse = [c for c in arms if ref_gap is not None and c.arm in gaps and gaps[c.arm] > ref_gap]
    matching = [c for c in worse if c.diff.high is not None and c.diff.high >= primary.mean]
    encoder = [c for c in arms if c.arm.startswith(ENCODER_ONLY) and c.diff.low is not None and c.diff.low > 0]
    if matching:
        names = ", ".join(c.arm for c in matching)
        return "not specific to inference", (
            f"Mechanism — not specific to inference: {names}, with a larger ELBO "
            f"gap than {REFERENCE}, gains as much as {PRIMARY}{listed}."
        )
    if encoder and worse:
        return "tracks inference", (
            f"Mechanism — tracks inference: the encoder-only penalty gains and no "
            f"worse-inference control matches {PRIMARY}{listed}."
        )
    return "cannot be decided", f"Mechanism — cannot be decided{listed}."


def ssl_study(sweep_dir: str | Path) -> SSLStudy:
    """The analysis of the module docstring for the runs under ``sweep_dir``."""
    runs, notes = collect_runs(sweep_dir)
    arms = _arms(runs, notes)
    ref = arms.get(REFERENCE, {})
    if not ref:
        notes.append(f"no {REFERENCE} run with a robust-protocol ssl.json: nothing to compare against")
    keys = sorted({k for a in arms.values() for r in a.values() for k in run_accuracy(r)})
    classifiers = sorted({c for c, _ in keys}, key=lambda c: (c != PRIMARY_CLASSIFIER, c))
    sizes = sorted({s for _, s in keys})
    others = sorted(a for a in arms if a != REFERENCE)

    primary_diff = _paired(arms.get(PRIMARY, {}), ref, _mean_over_s(PRIMARY_CLASSIFIER, sizes)) if ref else None
    verdict, sentence = _decide(primary_diff)
    primary = Cell(PRIMARY, PRIMARY_CLASSIFIER, None, primary_diff) if primary_diff else None

    cells = [
        Cell(a, c, s, d)
        for a in others
        for c in classifiers
        for s in sizes
        if (d := _paired(arms[a], ref, lambda r, c=c, s=s: run_accuracy(r).get((c, s)))) is not None
    ]
    secondary = tuple(
        Cell(x.arm, x.classifier, x.s, x.diff, p) for x, p in zip(cells, holm([x.diff.p for x in cells]), strict=True)
    )
    per_arm = [
        Cell(a, PRIMARY_CLASSIFIER, None, d)
        for a in others
        if (d := _paired(arms[a], ref, _mean_over_s(PRIMARY_CLASSIFIER, sizes))) is not None
    ]
    per_arm = [
        Cell(x.arm, x.classifier, None, x.diff, p)
        for x, p in zip(per_arm, holm([x.diff.p for x in per_arm]), strict=True)
    ]

    gaps = {}
    for a, members in arms.items():
        vals = [
            g for r in members.values() if (g := number(lookup(r.eval, "splits", "test", "gap", "mean"))) is not None
        ]
        if vals:
            gaps[a] = float(np.mean(vals))
    mechanism, mechanism_sentence = _mechanism(per_arm, gaps, primary_diff, verdict)

    accuracy = {}
    for a, members in arms.items():
        for c, s in keys:
            m = mean_se([run_accuracy(r).get((c, s)) for r in members.values()])
            if m.mean is not None:
                accuracy[(a, c, s)] = (m.mean, m.se, m.n)
    # every member of an arm has an ssl record (the arms are made of runs with one)
    edges = {
        a: (
            sum(any(row["on_edge"].values()) for r in members.values() for row in (r.ssl or {})["table"]),
            sum(len((r.ssl or {})["table"]) for r in members.values()),
        )
        for a, members in arms.items()
    }
    base = {
        c: float(np.mean(v))
        for c in classifiers
        if (v := [x for r in ref.values() if (x := _mean_over_s(c, sizes)(r)) is not None])
    }

    def gain(a: str, seed: int, r: Run) -> dict[str, float]:
        """Δ per classifier: paired with the reference's run of the same seed where there is one, else (the
        reference's own runs) against the reference's mean."""
        out = {}
        for c in base:
            v = _mean_over_s(c, sizes)(r)
            pair = _mean_over_s(c, sizes)(ref[seed]) if a != REFERENCE and seed in ref else None
            if v is not None:
                out[c] = v - (pair if pair is not None else base[c])
        return out

    points = tuple(
        ArmPoint(
            a,
            seed,
            number(lookup(r.eval, "splits", "test", "gap", "mean")),
            number(lookup(r.eval, "splits", "test", "ais", "mean")),
            gain(a, seed, r),
        )
        for a, members in arms.items()
        for seed, r in sorted(members.items())
        if r.eval
    )
    refined, refined_elbo = _refined(ref)
    return SSLStudy(
        primary,
        verdict,
        sentence,
        secondary,
        tuple(per_arm),
        gaps,
        mechanism,
        mechanism_sentence,
        accuracy,
        edges,
        points,
        tuple(notes),
        refined,
        refined_elbo,
    )


# ---- writing --------------------------------------------------------------------------------------------------------
def _d(d: PairedDiff, p_holm: float | None) -> str:
    se = "" if d.se is None else f" ± {d.se:.2f}"
    ci = "" if d.low is None else f" [{d.low:+.2f}, {d.high:+.2f}]"
    return f"{d.mean:+.2f}{se}{ci} p={format_p(d.p)} p_Holm={format_p(p_holm)} n={d.n}"


def _table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def _refined_section(st: SSLStudy) -> list[str]:
    """The exploratory test-time refinement section (empty when no reference run has an ssl_refined record)."""
    if not st.refined:
        return []
    gain = "—" if st.refined_gain is None else f"{st.refined_gain:.2f}"
    return [
        f"## Better inference at test time only: {REFINED} (exploratory, not pre-registered)",
        "",
        f"The same models; each image's posterior refined by the gap split's local fit (mean ELBO gain {gain} nats "
        "per image), against the encoder's, on the same images and label subsets of a reduced protocol "
        "(smvi ssl-refined). Δ = refined − encoder, mean over s and subsets, paired t over seeds.",
        "",
        _table(["classifier", "Δ accuracy"], [[c.classifier, _d(c.diff, None)] for c in st.refined]),
        "",
    ]


def study_markdown(st: SSLStudy) -> str:
    """The analysis as Markdown: the verdicts, the per-arm tests, the per-classifier accuracies, the secondary cells,
    the grid-edge counts and the notes."""
    arms = sorted({a for a, _, _ in st.accuracy}, key=lambda a: (a != REFERENCE, a))
    classifiers = sorted({c for _, c, _ in st.accuracy}, key=lambda c: (c != PRIMARY_CLASSIFIER, c))
    sizes = sorted({s for _, _, s in st.accuracy})
    out = [
        "# SSL study: the pre-registered analysis",
        "",
        "Rules: smvi.report.ssl_study (module docstring). Accuracies in percent, gains in percentage points, "
        "paired by training seed with the reference arm; ± SE over seeds [95 % t interval].",
        "",
        f"- {st.sentence}",
        f"- {st.mechanism_sentence}",
        "",
        "## Each arm against " + REFERENCE + " (RBF SVM, averaged over s; Holm over the arms)",
        "",
        _table(
            ["arm", "test ELBO gap (nats)", "Δ accuracy"],
            [[c.arm, f"{st.gaps[c.arm]:.2f}" if c.arm in st.gaps else "—", _d(c.diff, c.p_holm)] for c in st.arms],
        ),
        "",
        "## Accuracy per classifier (mean ± SE over seeds, n seeds)",
        "",
    ]
    for c in classifiers:
        body = [
            [a]
            + [
                (
                    lambda v: (
                        "—"
                        if v is None
                        else f"{v[0]:.2f}" + ("" if v[1] is None else f" ± {v[1]:.2f}") + f" (n={v[2]})"
                    )
                )(st.accuracy.get((a, c, s)))
                for s in sizes
            ]
            for a in arms
        ]
        out += [f"**{c}**", "", _table(["arm"] + [f"s = {s}" for s in sizes], body), ""]
    out += [
        "## Secondary: every (arm, s, classifier) cell against " + REFERENCE + " (Holm over all cells)",
        "",
        _table(
            ["arm", "classifier", "s", "Δ accuracy"],
            [[x.arm, x.classifier, str(x.s), _d(x.diff, x.p_holm)] for x in st.secondary],
        ),
        "",
        *_refined_section(st),
        "## Hyper-parameter choices on a grid's edge",
        "",
        _table(["arm", "fits on an edge", "fits"], [[a, str(e), str(n)] for a, (e, n) in sorted(st.edges.items())]),
        "",
        "![SSL gain against the ELBO gap and log p(x)](fig_ssl_gain.png)",
        "",
        "## Notes",
        "",
    ]
    out += [f"- {n}" for n in st.notes] or ["none"]
    return "\n".join(out) + "\n"


def study_csv(st: SSLStudy) -> str:
    """One line per test: ``kind`` (primary, arm, cell, refined), arm, classifier, s (empty: averaged over s), the
    paired difference (mean, se, low, high, p, p_holm, n seeds)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "arm", "classifier", "s", "mean", "se", "low", "high", "p", "p_holm", "n"])
    text = lambda v: "" if v is None else repr(v)  # noqa: E731
    rows = ([("primary", st.primary)] if st.primary else []) + [("arm", c) for c in st.arms]
    rows += [("cell", c) for c in st.secondary] + [("refined", c) for c in st.refined]
    for kind, c in rows:
        d = c.diff
        w.writerow(
            [
                kind,
                c.arm,
                c.classifier,
                text(c.s),
                repr(d.mean),
                text(d.se),
                text(d.low),
                text(d.high),
                text(d.p),
                text(c.p_holm),
                d.n,
            ]
        )
    return buf.getvalue()


def figure_gain(st: SSLStudy) -> bytes | None:
    """SSL gain against the test ELBO gap (left) and log p(x) (right), one row per classifier (module docstring)."""
    from matplotlib.figure import Figure

    from smvi.report.figures import png

    classifiers = sorted({c for p in st.points for c in p.gain}, key=lambda c: (c != PRIMARY_CLASSIFIER, c))
    if not classifiers:
        return None
    arms = sorted({p.arm for p in st.points}, key=lambda a: (a != REFERENCE, a))
    fig = Figure(figsize=(11, 3.6 * len(classifiers)), layout="tight")
    axes = fig.subplots(len(classifiers), 2, squeeze=False)
    for row, c in zip(axes, classifiers, strict=True):
        for ax, (attr, xlabel) in zip(
            row, (("gap", "test ELBO gap, AIS − ELBO (nats)"), ("logpx", "test log p(x), AIS (nats)")), strict=True
        ):
            for i, a in enumerate(arms):
                pts = [
                    (getattr(p, attr), p.gain[c])
                    for p in st.points
                    if p.arm == a and c in p.gain and getattr(p, attr) is not None
                ]
                if not pts:
                    continue
                x, y = np.array(pts).T
                color, marker = f"C{i % 10}", "osD^v<>p*h"[i % 10]
                ax.scatter(x, y, color=color, marker=marker, s=14, alpha=0.4, lw=0)
                mx, my = mean_se(x.tolist()), mean_se(y.tolist())
                ax.errorbar(
                    [mx.mean],
                    [my.mean],
                    xerr=[mx.se or 0.0],
                    yerr=[my.se or 0.0],
                    color=color,
                    marker=marker,
                    ms=6,
                    capsize=3,
                    label=a,
                )
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set(xlabel=xlabel, ylabel=f"{c}: accuracy minus {REFERENCE} (points)")
        row[0].legend(fontsize=7)
    return png(fig)


def ssl_study_verdicts(markdown: Path) -> str:
    """The two verdict lines of a written ``ssl_study.md`` (for the command line)."""
    return "\n".join(
        line[2:] for line in markdown.read_text().splitlines() if line.startswith(("- Primary test", "- Mechanism"))
    )


def write_ssl_study(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``ssl_study.md``, ``ssl_study.csv`` and ``fig_ssl_gain.png`` to ``out_dir`` (default
    ``SWEEP_DIR/report``); returns the Markdown file's path."""
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "report"
    st = ssl_study(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fig := figure_gain(st):
        atomic_write_bytes(out / "fig_ssl_gain.png", fig)
    atomic_write_text(out / "ssl_study.csv", study_csv(st))
    atomic_write_text(out / "ssl_study.md", study_markdown(st))
    return out / "ssl_study.md"
