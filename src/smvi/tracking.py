"""Optional TensorBoard logging of a training run (``train.tensorboard = DIR``, ``smvi train --tensorboard DIR``).

What it writes, under ``DIR/<run directory name>`` (so that the runs of a sweep sharing one ``DIR`` appear side by
side in ``tensorboard --logdir DIR``):

- every optimizer step (x = global step): ``step/<term>`` for the batch means of loss, elbo, log_likelihood, kl and
  d_sm, ``step/lam`` (λ after warm-up), ``step/grad_norm`` (before clipping) and ``step/lr``;
- every epoch (x = epoch): ``epoch/<key>`` for every number of that epoch's ``metrics.jsonl`` line (train means, the
  test monitor, seconds, skipped steps), and two image grids: ``samples`` (decoder means at 64 fixed prior draws)
  and ``reconstructions`` (test images in odd rows, the decoder mean at their encoder mean below each).

``metrics.jsonl`` stays the record: this is a view of the same numbers. Logging never touches torch's global RNG or
the model's parameters, so a run trains bit-identically with or without it. Without the ``tensorboard`` package,
:func:`open_tracker` raises :class:`~smvi.config.ConfigError` naming the install command.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from .config import ConfigError

__all__ = ["NullTracker", "TensorBoardTracker", "open_tracker", "image_grid"]

INSTALL = "pip install -e '.[tensorboard]' in the smvi source tree (or pip install tensorboard)"


class NullTracker:
    """Logs nothing (the default): the training loop calls it unconditionally."""

    def step(self, step: int, terms: dict[str, float], *, lam: float, grad_norm: float, lr: float) -> None:
        pass

    def epoch(self, epoch: int, metrics: dict, model, monitor_x: Tensor) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_grid(images: Tensor, columns: int = 8, side: int = 28) -> Tensor:
    """``[n, side²]`` images in [0, 1] -> one ``[1, rows·side, columns·side]`` grid (row-major, blank-padded)."""
    n = images.shape[0]
    rows = math.ceil(n / columns)
    padded = torch.zeros(rows * columns, side * side, dtype=images.dtype)
    padded[:n] = images.detach().cpu().clamp(0, 1)
    grid = padded.view(rows, columns, side, side).permute(0, 2, 1, 3).reshape(rows * side, columns * side)
    return grid.unsqueeze(0)


class TensorBoardTracker(NullTracker):
    """Writes the scalars and image grids described in the module docstring to ``log_dir``."""

    def __init__(self, log_dir: str | Path, *, n_images: int = 64, seed: int = 0):
        self.log_dir = Path(log_dir)
        self.n_images = n_images
        self.seed = seed
        self._writer = None

    @property
    def writer(self):
        """The SummaryWriter, created (with ``log_dir``) on the first write: a run that fails before its first step
        leaves no event directory behind."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def step(self, step: int, terms: dict[str, float], *, lam: float, grad_norm: float, lr: float) -> None:
        for key, value in {**terms, "lam": lam, "grad_norm": grad_norm, "lr": lr}.items():
            self.writer.add_scalar(f"step/{key}", value, step)

    @torch.no_grad()
    def epoch(self, epoch: int, metrics: dict, model, monitor_x: Tensor) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        side = math.isqrt(monitor_x.shape[1])
        if side * side != monitor_x.shape[1]:
            self.writer.flush()
            return  # not square images: scalars only
        g = torch.Generator().manual_seed(self.seed)  # fixed draws, and torch's global RNG untouched
        p = next(model.parameters())
        z = torch.randn(self.n_images, model.z_dim, generator=g).to(device=p.device, dtype=p.dtype)
        self.writer.add_image("samples", image_grid(model.decode(z).mean, side=side), epoch)
        x = monitor_x[: self.n_images // 2]
        recon = model.decode(model.encode(x).mean).mean
        pairs = torch.stack([x.to(recon.dtype), recon]).view(2, -1, 8, x.shape[1]) if len(x) % 8 == 0 else None
        shown = pairs.permute(1, 0, 2, 3).reshape(-1, x.shape[1]) if pairs is not None else torch.cat([x, recon])
        self.writer.add_image("reconstructions", image_grid(shown, side=side), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def open_tracker(log_root: str | Path | None, run_name: str) -> NullTracker:
    """The tracker for ``train.tensorboard``: :class:`NullTracker` when unset, else a :class:`TensorBoardTracker`
    writing to ``log_root/run_name``. Raises :class:`ConfigError` (one line) when TensorBoard is not installed."""
    if log_root is None:
        return NullTracker()
    try:
        import tensorboard  # noqa: F401  -- torch.utils.tensorboard needs it
    except ImportError:
        raise ConfigError(f"train.tensorboard needs the tensorboard package: {INSTALL}") from None
    return TensorBoardTracker(Path(log_root) / run_name)
