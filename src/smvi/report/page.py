"""Figures and tables of a λ sweep from its result files alone (no model is loaded, nothing is recomputed).

The runs and the numbers per λ come from :mod:`smvi.report.aggregate` (which files are read, how means and SEs are
formed). Writes ``out_dir`` (default ``sweep_dir/report``) as one atomic set -- built in a temporary directory that
replaces the old one, so a killed report never leaves a mix of new and old files: ``fig1_gap.png``, ``fig2_ssl.png``,
``fig_training.png`` (training curves, :mod:`smvi.report.curves`), ``results.csv`` (every tabulated per-λ number with
its SE), ``paired.csv`` (each λ minus λ = 0 with its interval and p-values, when the sweep has λ = 0), ``results.md``
and a self-contained ``report.html`` (PNGs inlined as base64; ``scripts/check_report.py`` checks it in a headless
browser). Run names and notes are escaped in Markdown as in HTML. Only current records are reported (stale and damaged
ones are listed in the notes); nothing here imports torch.

The page opens with provenance (versions, machine, dates, wall time: :mod:`smvi.store.provenance`), one sentence per
claim of the paper (:mod:`smvi.report.claims`) and the **flags** (:mod:`smvi.report.flags`: posterior collapse,
unfinished runs, AIS acceptance off target, unconverged BDMC or AIS ladder), each also marked in the table cell it
concerns. Then the figures (:mod:`smvi.report.figures`: collapsed λ marked and kept from setting the y-range), the
paired comparisons with λ = 0 (:mod:`smvi.report.paired`, ``fig3_paired.png``), the tables (:mod:`smvi.report.tables`;
with ``convergence.json`` files, one on AIS convergence), notes, a provenance table, and the settings in a collapsible
section.
"""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime
from pathlib import Path

from smvi.report.aggregate import ReportError, Row, Run, aggregate, collect_runs, lam_series
from smvi.report.claims import decide_claims
from smvi.report.flags import legend, sweep_flags
from smvi.report.paired import paired_rows
from smvi.report.sections import SECTIONS, Inputs
from smvi.report.tables import SE_NOTE, provenance_table, settings_tables
from smvi.store.atomic import atomic_write_dir
from smvi.store.provenance import provenance_summary
from smvi.store.records import smvi_version

__all__ = ["ReportError", "make_report", "collect_runs", "aggregate", "Run", "Row"]

REFERENCES = (
    "Kingma et al. 2014, M1 + transductive SVM: test accuracy 94.28 % (600 labels), 95.76 % (1000), 96.51 % (3000); "
    "an inductive SVM here, so close but not identical.",
    "Burda et al. 2016, VAE (50 latents, 2×200 tanh, dynamic binarization): test log p(x) ≈ −86.76 nats.",
    "Cremer et al. 2018, factorized Gaussian q, static binarization: inference gap ≈ 2.77 nats (order of magnitude).",
)
CAPTIONS = {name: caption for section in SECTIONS for name, caption in section.captions.items()}
"""Every figure's caption, from the sections that draw them (:data:`smvi.report.sections.SECTIONS`)."""
TITLE = "SMVI sweep report"


# ---- Markdown -------------------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what could open an HTML tag or comment ("<0.01" stays as it is)
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")  # what could read as an entity


def md_escape(text: str) -> str:
    """``text`` as literal Markdown inline text: HTML characters as entities, Markdown syntax backslash-escaped, line
    breaks as spaces (a run name cannot break a table, start a link or inject HTML)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    text = _MD_TAG.sub("&lt;", _MD_ENTITY.sub("&amp;", text))
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_table(title: str, head: list[str], body: list[list[str]], level: str = "##") -> str:
    e = md_escape
    return (
        f"{level} {title}\n\n| "
        + " | ".join(map(e, head))
        + " |\n|"
        + "---|" * len(head)
        + "\n"
        + "".join("| " + " | ".join(map(e, row)) + " |\n" for row in body)
    )


def _markdown(page: dict) -> str:
    e = md_escape
    items = lambda xs, empty="none": "".join(f"- {e(x)}\n" for x in xs) or f"{empty}\n"  # noqa: E731
    parts = [
        f"# {TITLE}\n",
        "".join(f"{e(x)}  \n" for x in page["provenance"]),
        "## Claims\n\n" + items(page["claims"]),
        "## Flags\n\n" + (f"{e(page['legend'])}\n\n" if page["legend"] else "") + items(page["flags"]),
    ]
    parts += [f"![{f}]({f})\n\n{CAPTIONS[f]}\n" for f in page["figures"]]
    parts += [_md_table(*t) for t in page["tables"]]
    parts.append(SE_NOTE + "\n\n## Reference points (other settings)\n\n" + items(REFERENCES))
    parts.append("## Notes\n\n" + items(page["notes"]))
    parts.append(_md_table(*page["provenance_table"]))
    parts.append("## Settings\n\n" + "\n".join(_md_table(*t, level="###") for t in page["settings"]))
    return "\n".join(parts)


# ---- HTML -----------------------------------------------------------------------------------------------------------
_FLAG = re.compile(r"⚠[A-Z]")
STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}"
    "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-size:.9em;color:#444}"
    ".scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0;font-size:.9em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left;white-space:nowrap}.flag{color:#b00020;font-weight:bold}"
    "h2.t{font-size:1.05em;margin-top:1.8em}h3.t{font-size:1em}table.kv td{text-align:left}"
    ".flags li{color:#b00020}.prov{color:#555;font-size:.9em}details{margin:1em 0}"
    "summary{cursor:pointer;font-weight:bold;font-size:1.2em}"
)


def _h(text: str) -> str:
    """Escaped ``text`` with each flag marker highlighted and ``mean ± SE`` kept on one line."""
    text = html.escape(str(text)).replace(" ± ", "\u00a0±\u00a0")
    return _FLAG.sub(lambda m: f"<span class='flag'>{m.group()}</span>", text)


def _html_table(title: str, head: list[str], body: list[list[str]], level: str = "h2", cls: str = "") -> str:
    return (
        f"<{level} class='t'>{_h(title)}</{level}><div class='scroll'><table class='{cls}'><tr>"
        + "".join(f"<th>{_h(c)}</th>" for c in head)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in body)
        + "</table></div>"
    )


def _html(page: dict, pngs: dict[str, bytes]) -> str:
    lis = lambda xs, cls="": f"<ul class='{cls}'>" + "".join(f"<li>{_h(x)}</li>" for x in xs) + "</ul>"  # noqa: E731
    imgs = "".join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
        f"<figcaption>{_h(CAPTIONS[n])}</figcaption></figure>"
        for n, b in pngs.items()
    )
    flags = (f"<p>{_h(page['legend'])}</p>" + lis(page["flags"], "flags")) if page["flags"] else "<p>none</p>"
    settings = "".join(_html_table(*t, level="h3", cls="kv") for t in page["settings"])
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{TITLE}</title><style>{STYLE}</style></head>"
        f"<body><h1>{TITLE}</h1><p class='prov'>{'<br>'.join(_h(x) for x in page['provenance'])}</p>"
        f"<h2>Claims</h2>{lis(page['claims'])}<h2>Flags</h2>{flags}{imgs}"
        + "".join(_html_table(*t) for t in page["tables"])
        + f"<p>{_h(SE_NOTE)}</p>{page['html']}<h2>Reference points (other settings)</h2>{lis(REFERENCES)}"
        f"<h2>Notes</h2>{lis(page['notes'] or ['none'])}{_html_table(*page['provenance_table'])}"
        f"<details><summary>Settings</summary>{settings}</details></body></html>\n"
    )


# ---- the report -----------------------------------------------------------------------------------------------------
def make_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the figures, tables and page of the sweep in ``sweep_dir`` (see the module docstring); returns the path
    of ``report.html``. Raises :class:`ReportError` when there is no run or no result to report."""
    runs, notes = collect_runs(sweep_dir)
    rows, more = aggregate(runs)
    notes += more
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "report"
    if out.exists() and not (out.is_dir() and all(p.name in REPORT_FILES for p in out.iterdir())):
        raise ReportError(f"{out} holds other files than a report; choose a new or empty --out")
    lams = sorted({r.lam for r in rows if r.lam is not None})
    flags = sweep_flags(runs)
    axis = lam_series(runs)[0]  # the fixed-λ SMVI runs: other methods are in the frontier section
    paired = paired_rows(axis)
    inputs = Inputs(Path(sweep_dir), runs, rows, lams, flags, axis, paired)
    claims = [c.sentence for c in decide_claims(paired, rows, flags, inputs.names.fmt)]
    sections = [section.build(inputs) for section in SECTIONS]
    pngs = {name: png for s in sections for name, png in s.figures.items()}
    notes += [n for s in sections for n in s.notes]
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = {
        "provenance": [
            f"report written {made} by smvi {smvi_version()} from {len(runs)} runs",
            *provenance_summary(runs),
        ],
        "claims": claims,
        "flags": [f.message for f in flags],
        "legend": legend(flags),
        "figures": list(pngs),
        "tables": [t for s in sections for t in s.tables],
        "notes": notes,
        "provenance_table": provenance_table(runs),
        "settings": settings_tables(runs),
        "html": "".join(s.html for s in sections),
    }
    files = {
        **pngs,
        **{name: data for s in sections for name, data in s.files.items()},
        "results.md": _markdown(page).encode(),
        "report.html": _html(page, pngs).encode(),
    }
    try:
        atomic_write_dir(out, files)
    except OSError as e:
        raise ReportError(
            f"cannot write the report in {out} ({e.strerror or e}); the previous report is intact: "
            "free space or fix permissions"
        ) from None
    return out / "report.html"


REPORT_FILES = {"results.md", "report.html", *CAPTIONS, *(f for section in SECTIONS for f in section.files)}
"""Every file a report may hold (an ``--out`` with others is refused)."""
