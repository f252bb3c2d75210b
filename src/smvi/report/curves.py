"""Training curves of a sweep's runs from their ``metrics.jsonl`` (torch-free): ``fig_training.png``.

Small multiples, one panel per term against the epoch, one line per run, every run of the report: the runs on the λ
axis (:func:`smvi.report.aggregate.lam_series`) solid and coloured by λ (viridis over their λ grid); runs of other
methods (β-VAE, IWAE, other variational families) dash-dotted, in shades of one colour per method, darker for a larger
knob; runs with a learned λ dashed, in their own colours. Each is named in the legend as the report names it
(:class:`smvi.report.naming.RunNames`). The panels: (a) the ELBO (training mean per epoch; dotted: on the fixed monitor
set, ``test_elbo``), (b) D_SM on the monitor set (``test_d_sm``, else the training mean ``d_sm``), (c) KL(q ‖ prior)
(``test_kl`` on the monitor set, else the training mean ``kl``: :func:`smvi.report.aggregate.last_kl`'s rule, epoch by
epoch). A panel is logarithmic when its values are positive and span more than :data:`LOG_RANGE`; a run flagged as a
posterior collapse (:mod:`smvi.report.flags`) ends in a red × and says so in the legend.
"""

from __future__ import annotations

from typing import Any

from smvi.report.aggregate import Run, lam_series, last_kl, number
from smvi.report.figures import COLLAPSED_STYLE, png
from smvi.report.frontier import method_groups
from smvi.report.naming import RunNames

__all__ = ["FIGURE", "CAPTION", "curve", "figure_curves"]

FIGURE = "fig_training.png"
CAPTION = (
    "Training curves per run from metrics.jsonl: (a) ELBO per epoch (solid: training mean; dotted: on the fixed "
    "monitor test set), (b) D_SM on the monitor set, (c) KL(q ‖ p(z)) on the monitor set (the training mean "
    "for runs that did not log it); every run of the report: solid, coloured by λ, the runs on the λ axis; "
    "dash-dotted, in shades of one colour per method (darker: larger knob), other methods (β-VAE, IWAE, other "
    "families); dashed: a learned λ; red ×: posterior collapse (⚠C). "
    "Logarithmic y where the values span more than two orders of magnitude."
)
LOG_RANGE = 100.0


def curve(run: Run, key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one term of ``run``'s metrics: ``elbo``, ``test_elbo``, ``d_sm`` (the monitor set's, else
    the training mean) or ``kl`` (:func:`smvi.report.aggregate.last_kl` per line); epochs without a finite value are
    skipped."""
    xs, ys = [], []
    for m in run.metrics:
        if key == "kl":
            v = last_kl(m)[0]
        elif key == "d_sm":
            v = number(m.get("test_d_sm")) if number(m.get("test_d_sm")) is not None else number(m.get("d_sm"))
        else:
            v = number(m.get(key))
        if v is not None:
            xs.append(m["epoch"])
            ys.append(v)
    return xs, ys


OTHER_METHODS = ("Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd", "Blues")
"""The colour maps of the methods off the λ axis, in the frontier's order of methods (its Figure 4's colours)."""


def _styles(
    runs: list[Run], collapsed: frozenset[str], names: RunNames, axis: set[str]
) -> dict[str, tuple[Any, str, str]]:
    """run name → (colour, line style, legend label) in the legend's order: the runs named in ``axis`` (the λ axis)
    by λ, then the other methods in the frontier's order (:func:`smvi.report.frontier.method_groups`) by knob, then
    the learned λ; the label (``names``) is shared by the runs of one method and knob (training seeds)."""
    from matplotlib import colormaps

    on = sorted((r for r in runs if r.name in axis), key=lambda r: (r.lam, r.seed))
    viridis, lams = colormaps["viridis"], sorted({r.lam for r in on})
    color = {lam: viridis(0.9 * i / max(len(lams) - 1, 1)) for i, lam in enumerate(lams)}
    out: dict[str, tuple[Any, str, str]] = {}
    label = lambda r: names.of_run(r) + (" ⚠C" if r.name in collapsed else "")  # noqa: E731
    for r in on:
        out[r.name] = (color[r.lam], "-", label(r))
    off = method_groups([r for r in runs if r.name not in axis])
    methods = list(dict.fromkeys(method for (method, _, _), _ in off))
    for (method, _, value), rs in off:
        cmap = colormaps[OTHER_METHODS[methods.index(method) % len(OTHER_METHODS)]]
        values = sorted(v for (m, _, v), _ in off if m == method)
        for r in rs:
            out[r.name] = (cmap(0.45 + 0.5 * values.index(value) / max(len(values) - 1, 1)), "-.", label(r))
    for k, r in enumerate(r for r in runs if r.name not in out):  # a learned λ
        out[r.name] = (f"C{k % 10}", "--", label(r) + (f", seed {r.seed}" if r.seed else ""))
    return out


def figure_curves(runs: list[Run], collapsed: frozenset[str] = frozenset()) -> bytes | None:
    """The training-curve figure of ``runs`` (module docstring: every run of the report, named and placed on the λ
    axis as the report does it); None when no run has metrics with an ELBO."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names, axis = RunNames.of(runs), {r.name for r in lam_series(runs)[0]}
    runs = [r for r in runs if curve(r, "elbo")[0] or curve(r, "test_elbo")[0]]
    if not runs:
        return None
    styles = _styles(runs, collapsed, names, axis)
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    panels = fig.subplots(1, 3)
    titles = ("(a) ELBO (nats)", "(b) D_SM, monitor set", "(c) KL(q ‖ p(z)) (nats)")
    for ax, key, title in zip(panels, ("elbo", "d_sm", "kl"), titles, strict=True):
        values = []
        for r in runs:
            color, ls, _ = styles[r.name]
            x, y = curve(r, key)
            if x:
                ax.plot(x, y, color=color, ls=ls, lw=1.3)
                values += y
                if r.name in collapsed:
                    ax.scatter([x[-1]], [y[-1]], **COLLAPSED_STYLE)
            if key == "elbo" and (t := curve(r, "test_elbo"))[0]:
                ax.plot(*t, color=color, ls=":", lw=1)
        if values and min(values) > 0 and max(values) / min(values) > LOG_RANGE:
            ax.set_yscale("log")
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    seen = {}
    for color, ls, label in styles.values():
        seen.setdefault(label, Line2D([], [], color=color, ls=ls, lw=1.5))
    fig.legend(
        list(seen.values()), list(seen), loc="outside lower center", ncol=len(seen) if len(seen) <= 8 else 6, fontsize=8
    )
    return png(fig)
