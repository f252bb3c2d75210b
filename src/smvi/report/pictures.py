"""The report's pictures section (torch-free): for each run with pictures (``smvi pictures``), its samples,
reconstructions and latent picture side by side, one row per run in the report's order (λ, then seed).

Everything is read through the run-directory layer (:mod:`smvi.store.rundir`): only a current pictures record (the one
freshness rule, :func:`smvi.store.records.staleness`: the run's identity and epoch; stale records are left out, the
report's notes say why) whose three PNGs have the SHA-256 it names. A run whose PNGs do not match (redrawn, damaged or
copied from elsewhere) keeps its row, with a line saying so instead of its images. The PNGs are inlined as base64, so
the page stays self-contained; without any run with a current pictures record the section is empty.
"""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path

from smvi.report.aggregate import Run, untrusted
from smvi.report.naming import RunNames
from smvi.store.records import PicturesRecord
from smvi.store.rundir import RunDir, RunError

__all__ = ["pictures_section", "CAPTION"]

CAPTION = (
    "Samples: decoder means E[x | z] at prior draws z ~ N(0, I), the same draws for every run. "
    "Reconstructions: fixed test images as the model sees them (the run's data.transform with its "
    "data.eval_seed), each row above the decoder mean at the encoder mean, the same images for every run. "
    "Latent space: the encoder means of fixed test images in 2-d (PCA, the axes' share of the variance in "
    "their labels, or t-SNE, which keeps neighbourhoods only), coloured by label, each label at its points' "
    "median."
)
WIDTH = {"samples": 300, "reconstructions": 300, "latents": 480}  # display width (pixels) in the page
TITLE = {
    "samples": "samples",
    "reconstructions": "test images (upper rows) and reconstructions",
    "latents": "encoder means",
}


def current_pictures(rd: RunDir) -> tuple[PicturesRecord | None, dict[str, bytes], str | None]:
    """``(record, pngs, problem)`` of one run: its current pictures record (None if missing or stale), the PNGs it
    names when all three match their SHA-256, and otherwise what is wrong (None when all is well)."""
    rec, why = rd.current_record("pictures")
    if not isinstance(rec, PicturesRecord) or why is not None:
        return None, {}, why
    if problem := untrusted(rd, "pictures", rec):
        return None, {}, problem
    pngs: dict[str, bytes] = {}
    for which in rd.picture_kinds():
        try:
            data = rd.read_picture(which)
        except RunError as e:
            return rec, {}, str(e)
        name = rd.picture_path(which).name
        if data is None:
            return rec, {}, f"{name} is missing"
        if hashlib.sha256(data).hexdigest() != rec.sha256[which]:
            return rec, {}, f"{name} is not the picture pictures.json describes"
        pngs[which] = data
    return rec, pngs, None


def _img(which: str, data: bytes) -> str:
    src = f"data:image/png;base64,{base64.b64encode(data).decode()}"
    return (
        f'<figure style="margin:0"><img alt="{which}" src="{src}" style="width:{WIDTH[which]}px;max-width:100%">'
        f'<figcaption style="font-size:85%;color:#555">{html.escape(TITLE[which])}</figcaption></figure>'
    )


def pictures_section(sweep_dir: str | Path, runs: list[Run]) -> str:
    """The section's HTML (module docstring) for ``runs`` (:func:`smvi.report.aggregate.collect_runs`' runs, whose names
    are their paths under ``sweep_dir``); the empty string when no run has a current pictures record."""
    e, names = html.escape, RunNames.of(runs)
    rows = []
    for r in runs:
        rec, pngs, problem = current_pictures(RunDir(Path(sweep_dir) / r.name))
        if rec is None:
            continue
        head = f"{names.of_run(r)} · {r.name} · epoch {rec.header.epoch}"
        if problem is not None:
            body = f"<p>{e(problem)}: redraw with smvi pictures --overwrite</p>"
        else:
            body = (
                '<div style="display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start">'
                + "".join(_img(k, pngs[k]) for k in WIDTH)
                + "</div>"
            )
        rows.append(f"<h3>{e(head)}</h3>{body}")
    if not rows:
        return ""
    return f"<h2>Samples, reconstructions and latent space</h2><p>{e(CAPTION)}</p>" + "".join(rows)
