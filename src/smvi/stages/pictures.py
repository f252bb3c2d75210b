"""``smvi pictures``: what a trained model draws, how it reconstructs test images, and where its encoder puts them.

Three PNGs beside the run's pictures record (file names owned by :mod:`smvi.store.rundir`; the record,
:class:`~smvi.store.records.PicturesRecord`, holds each PNG's SHA-256, so a reader knows the PNG is the one it
describes):

- ``samples``: the decoder means E[x | z] at ``n_samples`` prior draws z ~ N(0, I), ``columns`` per row;
- ``reconstructions``: ``n_reconstructions`` fixed test images as the model sees them (the run's ``data.transform``
  with its ``data.eval_seed``, as every evaluation: binarized, or dequantized), each row of them above a row of their
  reconstructions, the decoder mean at the encoder's mean (:func:`smvi.core.families.location` for a flow q);
- ``latents``: the encoder means of ``n_latent`` fixed test images (the features of ``smvi ssl``,
  :func:`smvi.stages.ssl.encoder_features`) in 2-d, coloured by label, each label written at its points' median: by
  default on their first two principal components (:func:`pca_2d`: an SVD of the centred means, each axis's sign fixed
  so that its largest loading is positive), or by t-SNE (``projection = "tsne"``, scikit-learn's, seeded; it keeps
  neighbourhoods, not distances or variances).

Draws and subsets are seeded (:class:`~smvi.settings.stages.PicturesConfig`): the same run and settings give the same
pixels. Decoder means are probabilities (Bernoulli decoder) or gray levels on the dequantized [0, 1] scale (Gaussian
decoder; clipped to [0, 1]), drawn white on black as MNIST is stored; grids have a one-pixel gray frame per image.
:func:`image_grid` is the one grid-maker (the TensorBoard logger, :mod:`smvi.stages.tracking`, uses it too).
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from smvi.core.families import location
from smvi.data.loading import ImageData, fixed_inputs, fixed_subset
from smvi.progress import Progress, label_of
from smvi.settings.stages import PicturesConfig
from smvi.stages.ssl import encoder_features
from smvi.stages.trained import check_inputs, holds_run_lock, open_stage
from smvi.store.records import PictureKind, PicturesRecord, make_header
from smvi.store.rundir import RunError

__all__ = [
    "PicturesConfig",
    "Pictures",
    "pictures_run",
    "draw_pictures",
    "image_grid",
    "pairs_grid",
    "sample_means",
    "reconstructions",
    "pca_2d",
    "FRAME",
    "PAD",
    "GAP",
    "LATENT_SIZE",
]

FRAME = 0.5  # gray level of the frame around each image of a grid
PAD, GAP = 1, 3  # pixels of frame around each image, and between the (image row, reconstruction row) pairs
LATENT_SIZE = (6.4, 5.2), 100  # the latent picture's size in inches and its dpi: 640 x 520 pixels


def image_grid(images: Tensor, columns: int = 8, side: int = 28, pad: int = 0, pad_value: float = FRAME) -> Tensor:
    """``[n, side²]`` images in [0, 1] -> one ``[1, H, W]`` grid, row-major, blank (0) where the last row is short;
    ``pad`` pixels of ``pad_value`` between and around the images: H = rows·(side + pad) + pad, likewise W."""
    n = images.shape[0]
    rows = math.ceil(n / columns)
    padded = torch.zeros(rows * columns, side * side, dtype=images.dtype)
    padded[:n] = images.detach().cpu().clamp(0, 1)
    cells = padded.view(rows, columns, side, side)
    if pad:
        cells = torch.nn.functional.pad(cells, (pad, 0, pad, 0), value=pad_value)
    s = side + pad
    grid = cells.permute(0, 2, 1, 3).reshape(rows * s, columns * s)
    if pad:
        grid = torch.nn.functional.pad(grid, (0, pad, 0, pad), value=pad_value)
    return grid.unsqueeze(0)


@torch.no_grad()
def sample_means(model, n: int, seed: int) -> Tensor:
    """The decoder means at ``n`` prior draws z ~ N(0, I) (seeded; torch's global RNG untouched), ``[n, x_dim]`` on
    the CPU."""
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    z = torch.randn(n, model.z_dim, generator=g).to(device=p.device, dtype=p.dtype)
    return model.decode(z).mean.float().cpu()


@torch.no_grad()
def reconstructions(model, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The decoder mean at the encoder's location (mean) of each input, ``[n, x_dim]`` on the CPU."""
    dev = next(model.parameters()).device
    out = [
        model.decode(location(model.encode(x[i : i + batch_size].to(dev)))).mean.float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


def pairs_grid(top: Tensor, bottom: Tensor, columns: int = 8, side: int = 28, pad: int = 0, gap: int = 0) -> Tensor:
    """``top`` and ``bottom`` ``[n, side²]`` as one ``[1, H, W]`` grid: each row of ``columns`` images of ``top`` above
    the same row of ``bottom`` (a short last row blank-padded), each pair of rows an :func:`image_grid` with ``pad``,
    the pairs ``gap`` pixels (of the frame's gray) apart."""
    pairs = []
    for start in range(0, len(top), columns):
        a, b = top[start : start + columns].detach().cpu(), bottom[start : start + columns].detach().cpu().to(top.dtype)
        blank = torch.zeros(columns - len(a), a.shape[1], dtype=a.dtype)
        pairs.append(image_grid(torch.cat([a, blank, b, blank]), columns, side, pad))
    if gap:
        stripe = torch.full((1, gap, pairs[0].shape[2]), FRAME, dtype=pairs[0].dtype)
        pairs = [p for pair in pairs for p in (stripe, pair)][1:]
    return torch.cat(pairs, dim=1)


def pca_2d(points: Tensor) -> tuple[Tensor, list[float | None]]:
    """``[n, d]`` points -> their coordinates ``[n, 2]`` on the first two principal components, and the fraction of
    the total variance along each (None when the points do not vary). Each component's sign is fixed so that its
    largest loading is positive; with d = 1 the second coordinate is 0."""
    x = points.double()
    x = x - x.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    vh = vh[:2]
    sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
    vh = vh * torch.where(sign == 0, 1.0, sign)
    coords = torch.zeros(len(x), 2, dtype=x.dtype)
    coords[:, : len(vh)] = x @ vh.T
    total = float((s**2).sum())
    var = [float(v) for v in s[:2] ** 2] + [0.0] * (2 - len(s[:2]))
    return coords, [v / total if total > 0 else None for v in var]


def grid_png(grid: Tensor) -> bytes:
    """A ``[1, H, W]`` grid in [0, 1] as an 8-bit gray PNG (white = 1; each value rounded to the nearest of 256)."""
    from PIL import Image  # Pillow comes with matplotlib

    pixels = (grid[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="png")  # uint8 [H, W]: 8-bit gray ("L")
    return buf.getvalue()


def project_2d(points: Tensor, projection: str, seed: int) -> tuple[Tensor, list[float | None]]:
    """``[n, d]`` points in 2-d by ``projection`` (``"pca"``: :func:`pca_2d`; ``"tsne"``: scikit-learn's t-SNE,
    initialized by PCA, seeded), and the variance fractions of the two axes (None for t-SNE, which has none)."""
    if projection == "pca":
        return pca_2d(points)
    from sklearn.manifold import TSNE

    n = len(points)
    tsne = TSNE(2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3), n_jobs=1)
    return torch.from_numpy(tsne.fit_transform(points.double().numpy())), [None, None]


def latents_png(coords: Tensor, labels: Tensor, axes: tuple[str, str], title: str) -> bytes:
    """The latent picture: ``coords`` ``[n, 2]`` as dots coloured by ``labels`` (a legend, and each label written at
    its dots' median), the axes labelled ``axes``."""
    from matplotlib import colormaps, patheffects
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    classes = sorted({int(v) for v in labels})
    qualitative = {10: "tab10", 20: "tab20"}  # colormap(i): the i-th color
    name = next((qualitative[k] for k in sorted(qualitative) if len(classes) <= k), None)
    colors = colormaps[name] if name else colormaps["turbo"].resampled(len(classes))
    size, dpi = LATENT_SIZE
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    ax = fig.subplots()
    index = {c: i for i, c in enumerate(classes)}
    ax.scatter(
        coords[:, 0].numpy(), coords[:, 1].numpy(), c=[colors(index[int(v)]) for v in labels], s=6, alpha=0.6, lw=0
    )
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    for k in classes:
        centre = coords[labels == k].median(0).values
        ax.text(
            float(centre[0]),
            float(centre[1]),
            str(k),
            color=colors(index[k]),
            fontsize=14,
            weight="bold",
            ha="center",
            va="center",
            path_effects=outline,
        )
    handles = [Line2D([], [], ls="", marker="o", ms=6, color=colors(index[k]), label=str(k)) for k in classes]
    ax.legend(handles=handles, title="label", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set(xlabel=axes[0], ylabel=axes[1], title=title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _axes(projection: str, explained: list[float | None]) -> tuple[str, str]:
    if projection == "tsne":
        return "t-SNE 1", "t-SNE 2"
    pct = lambda v: "no variance" if v is None else f"{100 * v:.0f} % of the variance"  # noqa: E731
    return f"PC1 ({pct(explained[0])})", f"PC2 ({pct(explained[1])})"


@dataclass(frozen=True)
class Pictures:
    """The three pictures of one model as PNG bytes, and what the record says about them."""

    png: dict[PictureKind, bytes]
    shown: list[int]  # the test images reconstructed (indices into the test split)
    n_latent: int
    explained: list[float | None]  # variance fractions of the latent picture's axes (PCA; None for t-SNE)
    notes: list[str]


def draw_pictures(
    model,
    data: ImageData,
    cfg: PicturesConfig = PicturesConfig(),
    *,
    transform: str = "binarize",
    eval_seed: int = 0,
    progress: bool | str = False,
) -> Pictures:
    """The samples, reconstructions and latent picture of ``model`` (module docstring) on ``data``'s test split, its
    inputs made by ``transform`` with ``eval_seed`` (a run's ``data.transform`` and ``data.eval_seed``). ``progress``
    counts the three pictures (:class:`smvi.progress.Progress`; a string is its label)."""
    d = data.test_x.shape[1]
    side = math.isqrt(d)
    if side * side != d:
        raise RunError(f"the images have {d} pixels, not a square number: smvi pictures draws square images only")
    shown = fixed_subset(len(data.test_x), cfg.n_reconstructions, cfg.seed)
    latent = fixed_subset(len(data.test_x), cfg.n_latent, cfg.seed + 1)
    png: dict[PictureKind, bytes] = {}
    notes: list[str] = []
    with Progress(label_of(progress, "pictures"), 3, unit="picture", enabled=bool(progress)) as bar:
        png["samples"] = grid_png(image_grid(sample_means(model, cfg.n_samples, cfg.seed), cfg.columns, side, PAD))
        bar.update()
        x = fixed_inputs(data.test_x[shown], transform, eval_seed)
        png["reconstructions"] = grid_png(pairs_grid(x, reconstructions(model, x), cfg.columns, side, PAD, GAP))
        bar.update()
        mu = torch.from_numpy(encoder_features(model, data.test_x[latent], seed=eval_seed, transform=transform))
        if float(mu.var(0).sum()) == 0:
            notes.append("the encoder means do not vary over the test images (posterior collapse?)")
        coords, explained = project_2d(mu, cfg.projection, cfg.seed)
        method = {"pca": "PCA", "tsne": "t-SNE"}[cfg.projection]
        title = f"{method} of the encoder means of {len(latent)} test images ($z \\in \\mathbb{{R}}^{{{model.z_dim}}}$)"
        png["latents"] = latents_png(coords, data.test_y[latent], _axes(cfg.projection, explained), title)
        bar.update()
    return Pictures(png, [int(i) for i in shown], len(latent), explained, notes)


@holds_run_lock
def pictures_run(
    run_dir: str | Path,
    cfg: PicturesConfig = PicturesConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    other_data: bool = False,
) -> PicturesRecord:
    """Draw the run's samples, reconstructions and latent picture (:func:`draw_pictures`, on the run's inputs);
    write the three PNGs, then the pictures record naming their SHA-256 (each file atomically); return the record
    as written.

    Checked before any work: the run (config, checkpoint and their identity), an existing record (an error unless
    ``overwrite``), that the directory is writable, and that the images are square. A failed write is one-line
    :class:`~smvi.store.rundir.RunError`."""
    t0 = time.perf_counter()
    cfg = check_inputs(run_dir, cfg, PicturesConfig, data=data, device=device)
    rd, run, data = open_stage(
        run_dir, "pictures", data=data, overwrite=overwrite, device=device, other_data=other_data
    )
    p = draw_pictures(
        run.model,
        data,
        cfg,
        transform=run.config.data.transform,
        eval_seed=run.config.data.eval_seed,
        progress=progress and f"pictures {rd.path.name}",
    )
    for which, png in p.png.items():
        rd.write_picture(which, png)
    record = PicturesRecord(
        header=make_header("pictures", run.fingerprint, run.epoch, cfg, data=run.other_data),
        run=rd.path.name,
        sha256={k: hashlib.sha256(v).hexdigest() for k, v in p.png.items()},
        reconstruction_indices=p.shown,
        n_latent=p.n_latent,
        explained=p.explained,
        seconds=round(time.perf_counter() - t0, 2),
        notes=p.notes,
    )
    return rd.write_record("pictures", record)
