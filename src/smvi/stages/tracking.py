"""Optional TensorBoard logging of a training run (``train.tensorboard = DIR``, ``smvi train --tensorboard DIR``).

What it writes, under ``DIR/<run directory name>`` (so that the runs of a sweep sharing one ``DIR`` appear side by
side in ``tensorboard --logdir DIR``):

- every optimizer step (x = global step): ``step/<term>`` for the batch means of loss, elbo, log_likelihood, kl and
  d_sm, ``step/lam`` (λ after warm-up), ``step/grad_norm`` (before clipping) and ``step/lr``;
- every epoch (x = epoch): ``epoch/<key>`` for every number of that epoch's ``metrics.jsonl`` line (train means, the
  test monitor, seconds, skipped steps), and two image grids: ``samples`` (decoder means at 64 fixed prior draws)
  and ``reconstructions`` (test images in odd rows, the decoder mean at their encoder mean below each), drawn by
  :mod:`smvi.stages.pictures` as ``smvi pictures`` draws them (without its frames).

``metrics.jsonl`` stays the record: this is a view of the same numbers. Logging never touches torch's global RNG or
the model's parameters, so a run trains bit-identically with or without it, and it never stops training: the first
failure to write (an unwritable or full folder) prints one warning on stderr and logging stops there. Without the
``tensorboard`` package, :func:`open_tracker` raises :class:`~smvi.settings.run.ConfigError` naming the install
command; an empty ``train.tensorboard`` (which would mean the current folder) is refused the same way.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import torch
from torch import Tensor

from smvi.settings.run import ConfigError
from smvi.stages.pictures import image_grid, pairs_grid, reconstructions, sample_means

__all__ = ["NullTracker", "TensorBoardTracker", "open_tracker"]

INSTALL = "pip install -e '.[tensorboard]' in the smvi source tree (or pip install tensorboard)"


class NullTracker:
    """Logs nothing (the default): the training loop calls it unconditionally."""

    def step(self, step: int, terms: dict[str, float], *, lam: float, grad_norm: float, lr: float) -> None:
        pass

    def epoch(self, epoch: int, metrics: dict, model, monitor_x: Tensor) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _never_fails(method):
    """A tracker method that, instead of raising, prints one warning and turns the tracker off (training goes on)."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.failed:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- a view of metrics.jsonl must never stop training
            self.failed = True
            detail = (str(e).splitlines() or [""])[0]
            print(
                f"warning: TensorBoard logging to {self.log_dir} stopped ({type(e).__name__}: {detail}); training "
                "goes on and metrics.jsonl holds every number",
                file=sys.stderr,
                flush=True,
            )
            return None

    return guarded


class TensorBoardTracker(NullTracker):
    """Writes the scalars and image grids described in the module docstring to ``log_dir``; a failed write is one
    warning and ends the logging, never the training."""

    def __init__(self, log_dir: str | Path, *, n_images: int = 64, seed: int = 0):
        self.log_dir = Path(log_dir)
        self.n_images = n_images
        self.seed = seed
        self.failed = False
        self._writer = None

    @property
    def writer(self):
        """The SummaryWriter, created (with ``log_dir``) on the first write: a run that fails before its first step
        leaves no event directory behind."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    @_never_fails
    def step(self, step: int, terms: dict[str, float], *, lam: float, grad_norm: float, lr: float) -> None:
        for key, value in {**terms, "lam": lam, "grad_norm": grad_norm, "lr": lr}.items():
            self.writer.add_scalar(f"step/{key}", value, step)

    @_never_fails
    @torch.no_grad()
    def epoch(self, epoch: int, metrics: dict, model, monitor_x: Tensor) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        side = math.isqrt(monitor_x.shape[1])
        if side * side != monitor_x.shape[1]:
            self.writer.flush()
            return  # not square images: scalars only
        samples = sample_means(model, self.n_images, self.seed)  # fixed draws, torch's global RNG untouched
        self.writer.add_image("samples", image_grid(samples, side=side), epoch)
        x = monitor_x[: self.n_images // 2]
        self.writer.add_image("reconstructions", pairs_grid(x, reconstructions(model, x), side=side), epoch)
        self.writer.flush()

    @_never_fails
    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


def open_tracker(log_root: str | Path | None, run_name: str) -> NullTracker:
    """The tracker for ``train.tensorboard``: :class:`NullTracker` when unset, else a :class:`TensorBoardTracker`
    writing to ``log_root/run_name``. Raises :class:`ConfigError` (one line) when TensorBoard is not installed."""
    if log_root is None:
        return NullTracker()
    if str(log_root) == "":
        raise ConfigError(
            "train.tensorboard is empty (it would log into the current folder): give a folder, or leave it unset"
        )
    try:
        import tensorboard  # noqa: F401  -- torch.utils.tensorboard needs it
    except ImportError:
        raise ConfigError(f"train.tensorboard needs the tensorboard package: {INSTALL}") from None
    return TensorBoardTracker(Path(log_root) / run_name)
