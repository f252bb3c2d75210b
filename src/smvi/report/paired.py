"""Each λ against λ = 0, paired: the comparisons that settle the paper's claims (torch-free; read by
:mod:`smvi.report.page`).

**log p(x) and the gap.** For a run at λ and the run at λ = 0 with the same training seed, the per-image differences
on the images both evaluated (matched by image index, from ``eval.json``'s ``indices`` and ``per_image``): AIS log
p(x) and the gap AIS − ELBO on the test and training subsets, and IWAE log p(x) on the whole test set (``full_test``).
Over seeds the unit is the training seed (:func:`smvi.store.stats.clustered_paired_t`: the t-test on the seeds' mean
differences, so model-to-model variation counts); with one seed it is the image, and the answer is about those two
trained models. ``per-image SE`` is the SE of all (seed, image) differences pooled.

**SSL.** Accuracy at λ minus at λ = 0 on the same label subsets and training seed, in percentage points; the same
clustered t-test (unit: the training seed with ≥ 2 seeds, the label subset with one).

p-values are Holm-adjusted (:func:`smvi.store.stats.holm`) over the λ values compared -- per quantity and split for log
p(x) and the gap, over all (λ, s) for SSL, the family of claim 2. Records without per-image values (written before
``eval.json`` kept them) give no paired log p(x) rows; the report says so under the table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smvi.report.aggregate import Run, lookup, ssl_by_seed
from smvi.report.flags import CLAIM_BLOCKING, Flag, mark
from smvi.report.naming import NumberFormat
from smvi.store.stats import PairedDiff, clustered_paired_t, holm

__all__ = ["PairedRow", "paired_rows", "per_image", "paired_csv", "ALPHA", "PAIRED_CSV"]

ALPHA = 0.05  # the level of every test in the report; intervals are 1 − ALPHA
LOGPX = (("iwae_full", "test"), ("ais", "test"), ("gap", "test"), ("ais", "train"), ("gap", "train"))
LABEL = {
    "iwae_full": "log p(x), IWAE on the whole test set",
    "ais": "log p(x), AIS",
    "gap": "ELBO gap",
    "ssl_gain": "SSL accuracy",
}


@dataclass(frozen=True)
class PairedRow:
    """λ minus λ = 0 for one quantity (``iwae_full``, ``ais``, ``gap`` in nats; ``ssl_gain`` in percentage points at
    labeled-set size ``s``); ``p_holm``: the Holm-adjusted p-value within the row's family (module docstring)."""

    quantity: str
    split: str
    s: int | None
    lam: float
    diff: PairedDiff
    p_holm: float | None


def per_image(run: Run, quantity: str, split: str) -> dict[int, float]:
    """Image index → value of ``quantity`` in ``run``'s eval record; empty without per-image values."""
    if quantity == "iwae_full":
        idx, vals = lookup(run.eval, "full_test", "indices"), lookup(run.eval, "full_test", "per_image")
    else:
        idx = lookup(run.eval, "splits", split, "indices")
        vals = lookup(run.eval, "splits", split, "per_image", quantity)
    if not (isinstance(idx, list) and isinstance(vals, list) and len(idx) == len(vals)):
        return {}
    return {int(i): float(v) for i, v in zip(idx, vals, strict=True) if isinstance(v, (int, float))}


def _pairs(runs: list[Run], lam: float, values: Any) -> dict[int, list[float]]:
    """Training seed → the differences ``values(run) − values(run at λ = 0)`` on their common keys."""
    out: dict[int, list[float]] = {}
    for r in (r for r in runs if r.lam == lam):
        for r0 in (r0 for r0 in runs if r0.lam == 0 and r0.seed == r.seed):
            a, b = values(r), values(r0)
            if common := sorted(set(a) & set(b)):
                out.setdefault(r.seed, []).extend(a[k] - b[k] for k in common)
    return out


def _family(rows: list[tuple[str, str, int | None, float, PairedDiff]]) -> list[PairedRow]:
    adjusted = holm([d.p for *_, d in rows])
    return [PairedRow(q, sp, s, lam, d, p) for (q, sp, s, lam, d), p in zip(rows, adjusted, strict=True)]


def paired_rows(runs: list[Run]) -> list[PairedRow]:
    """Every paired comparison of the sweep (see the module docstring); empty without λ = 0."""
    lams = sorted({r.lam for r in runs if r.lam != 0})
    if not any(r.lam == 0 for r in runs):
        return []
    out: list[PairedRow] = []
    for q, split in LOGPX:
        family = []
        for lam in lams:
            clusters = _pairs([r for r in runs if r.eval], lam, lambda r, q=q, split=split: per_image(r, q, split))
            if d := clustered_paired_t(clusters, level=1 - ALPHA):
                family.append((q, split, None, lam, d))
        out += _family(family)
    sizes = sorted({int(s) for r in runs for s in (lookup(r.ssl, "features", "sizes") or {}) if str(s).isdigit()})
    family = []
    for s in sizes:
        for lam in lams:
            clusters = _pairs(
                [r for r in runs if r.ssl], lam, lambda r, s=s: {k: 100 * v for k, v in ssl_by_seed(r.ssl, s).items()}
            )
            if d := clustered_paired_t(clusters, level=1 - ALPHA, value_unit="label subsets"):
                family.append(("ssl_gain", "test", s, lam, d))
    return out + _family(family)


PAIRED_CSV = "paired.csv"
"""The report's file of paired comparisons (:func:`paired_csv`)."""

PAIRED_COLUMNS = (
    "quantity",
    "split",
    "s",
    "lam",
    "mean",
    "se",
    "low",
    "high",
    "level",
    "p",
    "p_holm",
    "n",
    "unit",
    "se_pooled",
    "n_values",
)


def paired_csv(paired: list[PairedRow]) -> str:
    """``paired.csv``: one line per :class:`PairedRow` -- λ minus λ = 0 (``mean`` ± ``se`` over ``n`` ``unit``s, the
    ``level`` t interval [``low``, ``high``], ``p`` and its Holm adjustment ``p_holm``; ``se_pooled`` over all
    ``n_values`` differences); ``s`` is set for ``ssl_gain`` only; empty fields: no value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PAIRED_COLUMNS)
    text = lambda v: "" if v is None else repr(v)  # noqa: E731
    for r in paired:
        d = r.diff
        w.writerow(
            [
                r.quantity,
                r.split,
                text(r.s),
                repr(r.lam),
                repr(d.mean),
                text(d.se),
                text(d.low),
                text(d.high),
                repr(d.level),
                text(d.p),
                text(r.p_holm),
                d.n,
                d.unit,
                text(d.se_pooled),
                d.n_values,
            ]
        )
    return buf.getvalue()


# ---- tables and figure ----------------------------------------------------------------------------------------------
def format_p(p: float | None) -> str:
    """A p-value as the report writes it: two significant digits, "<0.001" below that, "—" for none."""
    return "—" if p is None else f"{p:.2g}" if p >= 0.001 else "<0.001"


def _cell(r: PairedRow | None) -> str:
    """``Δ ± SE (per-value SE) [CI] p, p_Holm``; — without a comparison."""
    if r is None:
        return "—"
    d = r.diff
    text = f"{d.mean:+.2f}" + ("" if d.se is None else f" ± {d.se:.2f}")
    if d.se_pooled is not None and d.n_values != d.n:
        text += f" ({d.se_pooled:.2f})"
    if d.low is not None:
        text += f" [{d.low:+.2f}, {d.high:+.2f}]"
    return text + f" p={format_p(d.p)} p_Holm={format_p(r.p_holm)} n={d.n}"


NO_PER_IMAGE = (
    "— : no paired value; the eval records of these runs keep no per-image values (written before "
    "eval.json kept them): re-evaluate to pair them"
)


def paired_tables(
    paired: list[PairedRow],
    lams: list[float],
    have_eval: bool,
    flags: Sequence[Flag] = (),
    fmt: NumberFormat | None = None,
) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's paired tables: log p(x) and gap (when any run has an eval record), SSL (when any pair exists); a λ
    cell (written by ``fmt``, the report's: :mod:`smvi.report.naming`) carries the markers of the flags that keep it
    out of the claims (:data:`smvi.report.flags.CLAIM_BLOCKING`)."""
    find = {(r.quantity, r.split, r.s, r.lam): r for r in paired}
    fmt = fmt or NumberFormat.separating(lams)
    lam_cell = lambda lam: fmt(lam) + mark(flags, lam=lam, kinds=CLAIM_BLOCKING)  # noqa: E731
    others = [lam for lam in lams if lam != 0]
    out = []
    level = f"{100 * (1 - ALPHA):g} %"
    if have_eval and others and 0 in lams:
        keys = [(q, sp, None) for q, sp in LOGPX]
        body = [[lam_cell(lam)] + [_cell(find.get(k + (lam,))) for k in keys] for lam in others]
        missing = not any(r.quantity in LABEL and r.quantity != "ssl_gain" for r in paired)
        out.append(
            (
                f"λ minus λ = 0, paired on the same images and training seeds (nats): mean ± SE over seeds "
                f"(per-image SE) [{level} t interval], p and Holm-adjusted p over λ, n = seeds (or images with "
                f"one seed)" + (f". {NO_PER_IMAGE}" if missing else ""),
                ["λ"] + [f"{LABEL[q]}, {sp}" for q, sp in LOGPX],
                body,
            )
        )
    sizes = sorted({r.s for r in paired if r.quantity == "ssl_gain" and r.s is not None})
    if sizes:
        body = [[lam_cell(lam)] + [_cell(find.get(("ssl_gain", "test", s, lam))) for s in sizes] for lam in others]
        out.append(
            (
                f"SSL accuracy, λ minus λ = 0, paired on the same label subsets and training seeds (percentage "
                f"points): mean ± SE (per-subset SE) [{level} t interval], paired t-test p and Holm-adjusted p "
                f"over all λ and s, n = seeds (or label subsets with one seed)",
                ["λ"] + [f"s = {s}" for s in sizes],
                body,
            )
        )
    return out


def _bar(d: PairedDiff) -> tuple[float, float]:
    """An error bar's lengths below and above the mean: to the interval's ends (a point drawn has an interval)."""
    assert d.low is not None and d.high is not None
    return d.mean - d.low, d.high - d.mean


def figure_paired(
    paired: list[PairedRow],
    lams: list[float],
    collapsed: frozenset[float] = frozenset(),
    fmt: NumberFormat | None = None,
) -> bytes | None:
    """Δ to λ = 0 with its t interval against λ: (a) log p(x) and gap on test images, (b) SSL; None if nothing.
    Linear y axes; a λ in ``collapsed`` is marked and does not set the y-range (:mod:`smvi.report.figures`); λ
    written by ``fmt`` (the report's, else one separating ``lams``)."""
    from matplotlib.figure import Figure

    from smvi.report.figures import COLLAPSED_STYLE, collapsed_legend, focus, lam_axis, plain_y, png

    fmt = fmt or NumberFormat.separating(lams)

    logpx = [r for r in paired if r.split == "test" and r.quantity != "ssl_gain"]
    ssl = [r for r in paired if r.quantity == "ssl_gain"]
    if not (logpx or ssl):
        return None
    fig = Figure(figsize=(11, 4.4), layout="tight")
    panels = fig.subplots(1, 2)
    pos = {ax: lam_axis(ax, [lam for lam in lams if lam != 0], fmt) for ax in panels}
    scale = {ax: ([], []) for ax in panels}  # the values that set each panel's y-range, and the collapsed points
    series = [(panels[0], q, None, f"C{i}", LABEL[q]) for i, q in enumerate(("iwae_full", "ais", "gap"))]
    sizes = sorted({r.s for r in ssl if r.s is not None})
    series += [(panels[1], "ssl_gain", s, f"C{i}", f"s = {s}") for i, s in enumerate(sizes)]
    for ax, q, s, color, label in series:
        pts = sorted(
            (r for r in (logpx if q != "ssl_gain" else ssl) if r.quantity == q and r.s == s), key=lambda r: r.lam
        )
        pts = [r for r in pts if r.diff.low is not None]
        off = collapsed if any(r.lam not in collapsed for r in pts) else frozenset()  # all collapsed: drawn as usual
        if on := [r for r in pts if r.lam not in off]:  # a collapsed λ: a red × apart from the line
            x, y = [pos[ax](r.lam) for r in on], [r.diff.mean for r in on]
            err = [[_bar(r.diff)[0] for r in on], [_bar(r.diff)[1] for r in on]]
            ax.errorbar(x, y, yerr=err, color=color, label=label, capsize=3, marker="o", ms=4)
        for r in pts:
            if r.lam in collapsed:
                ax.scatter([pos[ax](r.lam)], [r.diff.mean], **COLLAPSED_STYLE)
            if r.lam in off:
                scale[ax][1].append((pos[ax](r.lam), r.diff.mean, f"λ={fmt(r.lam)}"))
            else:
                scale[ax][0].extend([r.diff.low, r.diff.high])
    titles = ("(a) test images: λ minus λ = 0 (nats)", "(b) SSL accuracy: λ minus λ = 0 (points)")
    for ax, title in zip(panels, titles, strict=True):
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set(title=title, ylabel="paired difference")
        focus(ax, *scale[ax], include=(0.0,), unit=" nats" if ax is panels[0] else " points")
        plain_y(ax, signed=True)
        if ax.get_legend_handles_labels()[0]:
            collapsed_legend(ax, bool(scale[ax][1]))
        else:
            ax.text(
                0.5,
                0.5,
                "no paired values\n(no per-image values in the records)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
            )
    return png(fig)
