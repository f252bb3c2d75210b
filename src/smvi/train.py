"""Training: a resumable loop over the SMVI objective, and loading of trained runs.

A run directory holds::

    config.toml              the resolved RunConfig (pass it back with --config to rerun)
    checkpoint.safetensors   weights, Adam state, RNG states and progress after the last finished epoch
    metrics.jsonl            one JSON line per finished epoch: every term, seconds, skipped steps, test monitor

Resuming restores the model, Adam, the global torch RNG (z sampling) and the data generator (shuffling and
binarization), so an interrupted run continues bit-identically on the same device and thread count.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, atomic_write_text, load_checkpoint, load_weights, save_checkpoint
from .config import ConfigError, RunConfig, config_to_toml, load_config
from .data import DynamicBinarizer, ImageData, binarize_fixed, load_data
from .models import VAE
from .objectives import smvi_objective

__all__ = ["train", "load_run", "LoadedRun", "RunError", "TrainingDiverged", "resolve_device"]

CONFIG, CHECKPOINT, METRICS, LOCK = "config.toml", "checkpoint.safetensors", "metrics.jsonl", ".lock"
# Files a training run owns; --overwrite removes these and nothing else.
RUN_FILES = (CONFIG, CHECKPOINT, METRICS)


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (exists, missing, locked, mismatched); one-line message."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available: use --device cpu or auto")
    return torch.device(name)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` so two processes never write the same run (released on exit/death)."""
    with open(run_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir} is in use by another smvi process; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _rng_state(device: torch.device, data: DynamicBinarizer) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "data": data.state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(rng: dict[str, torch.Tensor], device: torch.device, data: DynamicBinarizer) -> None:
    torch.set_rng_state(rng["torch"])
    data.set_state(rng["data"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


def _prepare_dir(config: RunConfig, run_dir: Path, resume: bool, overwrite: bool) -> RunConfig:
    """Create, reuse or clear ``run_dir`` as asked; returns the config to run (the saved one when resuming)."""
    has_run = (run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists()
    if resume:
        if not (run_dir / CONFIG).exists():
            raise RunError(f"nothing to resume in {run_dir}: no {CONFIG}; drop --resume to start a new run")
        saved = load_config(run_dir / CONFIG)
        mutable = {"train": {"epochs", "device"}}
        a, b = saved.model_dump(), config.model_dump()
        for section, values in a.items():
            for key, value in values.items():
                if b[section][key] != value and key not in mutable.get(section, ()):
                    raise ConfigError(
                        f"--resume: {section}.{key} is {b[section][key]!r} but the run in {run_dir} used {value!r}; "
                        "only train.epochs and train.device may change on resume"
                    )
        return config
    if has_run and not overwrite:
        raise RunError(f"{run_dir} already holds a run: pass --resume to continue it or --overwrite to start over")
    for name in RUN_FILES if overwrite else ():
        (run_dir / name).unlink(missing_ok=True)
    return config


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    last_metrics: dict


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: ImageData | None = None,
) -> TrainResult:
    """Train a :class:`~smvi.models.VAE` with the SMVI objective, checkpointing after every epoch.

    ``resume`` continues the run in ``run_dir`` (its saved config must match ``config`` except for ``train.epochs``
    and ``train.device``); without it an existing run is an error unless ``overwrite``. ``data`` skips loading.
    Non-finite steps are skipped and counted; ``train.max_bad_steps`` consecutive ones raise
    :class:`TrainingDiverged`, leaving the last good checkpoint in place.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run directory {run_dir} ({e.strerror}); choose another --out") from None
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run directory {run_dir} is not writable; choose another --out")
    with run_lock(run_dir):
        config = _prepare_dir(config, run_dir, resume, overwrite)
        tc = config.train
        device = resolve_device(tc.device)
        data = data if data is not None else load_data(config.data.dataset, config.data.data_dir)

        torch.manual_seed(tc.seed)
        model = VAE(data.train_x.shape[1], config.model).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
        loader = DynamicBinarizer(data.train_x, tc.batch_size, seed=tc.seed + 1)
        monitor_x = binarize_fixed(data.test_x[: config.data.monitor_size], config.data.eval_seed).to(device)

        start = 0
        if resume and (run_dir / CHECKPOINT).exists():
            ck = load_checkpoint(run_dir / CHECKPOINT)
            load_weights(model, ck.model, run_dir / CHECKPOINT)
            optimizer.load_state_dict(ck.optimizer)
            _set_rng_state(ck.rng, device, loader)
            start = int(ck.progress["epoch"])
            _truncate_metrics(run_dir / METRICS, start)
        atomic_write_text(run_dir / CONFIG, config_to_toml(config))

        last: dict = {}
        steps = len(loader)
        bar = tqdm(total=tc.epochs * steps, initial=start * steps, disable=not progress, unit="step", dynamic_ncols=True)
        with bar:
            for epoch in range(start, tc.epochs):
                t0 = time.perf_counter()
                means, skipped = _run_epoch(model, optimizer, loader, tc, device, bar, epoch)
                last = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 3),
                        "lam": lam_at(tc, epoch + 1), **means,
                        "skipped_steps": skipped, **_monitor(model, monitor_x, config.data.eval_seed)}
                save_checkpoint(
                    run_dir / CHECKPOINT, model=model, optimizer=optimizer, rng=_rng_state(device, loader),
                    progress={"epoch": epoch + 1}, config=config.model_dump(mode="json"),
                )
                with open(run_dir / METRICS, "a") as f:
                    f.write(json.dumps(last) + "\n")
        return TrainResult(run_dir, max(start, tc.epochs), last)


def lam_at(tc, epoch: float) -> float:
    """λ after ``epoch`` (fractional) epochs: ``tc.lam``, ramped linearly from 0 during ``tc.lam_warmup_epochs``."""
    if tc.lam_warmup_epochs <= 0:
        return tc.lam
    return tc.lam * min(1.0, epoch / tc.lam_warmup_epochs)


def _run_epoch(model, optimizer, loader, tc, device, bar, epoch) -> tuple[dict[str, float], int]:
    """One pass over the data; returns the example-weighted means of the terms and the number of skipped steps."""
    sums: dict[str, float] = {}
    seen = skipped = bad_in_a_row = 0
    params = list(model.parameters())
    steps = len(loader)
    for i, x in enumerate(loader.epoch()):
        x = x.to(device, non_blocking=True)
        terms = smvi_objective(model, x, lam=lam_at(tc, epoch + i / steps), n_samples=tc.n_samples)
        loss = terms.loss.mean()
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip or math.inf)
            ok = bool(torch.isfinite(norm))
        if not ok:
            skipped += 1
            bad_in_a_row += 1
            if bad_in_a_row >= tc.max_bad_steps:
                raise TrainingDiverged(
                    f"{bad_in_a_row} consecutive non-finite steps in epoch {epoch + 1} (λ={tc.lam}, lr={tc.lr}): "
                    "λ is likely too large for this learning rate — lower train.lr or set train.grad_clip; "
                    "the last good checkpoint is kept"
                )
            bar.update(1)
            continue
        bad_in_a_row = 0
        optimizer.step()
        n = x.shape[0]
        seen += n
        for k, v in terms.means().items():
            sums[k] = sums.get(k, 0.0) + v * n
        bar.update(1)
        bar.set_postfix({"epoch": epoch + 1, **{k: f"{v:.4g}" for k, v in terms.means().items() if k != "loss"}},
                        refresh=False)
    return {k: v / max(seen, 1) for k, v in sums.items()}, skipped


@torch.no_grad()
def _monitor(model, x: torch.Tensor, seed: int) -> dict[str, float]:
    """ELBO and D_SM on a fixed binarized test subset, with a fixed seed and without touching the training RNG."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        terms = smvi_objective(model, x, lam=0.0, compute_d_sm=True)
    m = terms.means()
    return {"test_elbo": m["elbo"], "test_d_sm": m["d_sm"]}


def _truncate_metrics(path: Path, epochs: int) -> None:
    """Keep only the metric lines of epochs ≤ ``epochs`` (a killed run may have written one past its checkpoint)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln)["epoch"] <= epochs:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a torn last line
    atomic_write_text(path, "".join(k + "\n" for k in keep))


@dataclass(frozen=True)
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: VAE
    epoch: int


def load_run(run_dir: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Load a trained run's config and model (eval mode, parameters frozen) from its directory, without unpickling."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not (run_dir / CONFIG).exists() or not (run_dir / CHECKPOINT).exists():
        raise RunError(f"{run_dir} is not a trained run (needs {CONFIG} and {CHECKPOINT}); train it with smvi train")
    config = load_config(run_dir / CONFIG)
    ck = load_checkpoint(run_dir / CHECKPOINT)
    if ck.config.get("model") != config.model.model_dump(mode="json"):
        raise CheckpointError(f"{run_dir}: {CHECKPOINT} was written with another model config than {CONFIG}")
    first = ck.model.get("encoder.0.weight")
    if first is None:
        raise CheckpointError(f"{run_dir / CHECKPOINT}: no encoder weights; not a VAE checkpoint")
    model = VAE(first.shape[1], config.model)
    load_weights(model, ck.model, run_dir / CHECKPOINT)
    model = model.to(resolve_device(device)).eval().requires_grad_(False)
    return LoadedRun(run_dir, config, model, int(ck.progress["epoch"]))
