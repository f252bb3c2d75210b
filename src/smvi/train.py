"""Training: a resumable loop over the SMVI objective, and loading of trained runs.

A run directory holds::

    config.toml              the resolved RunConfig (pass it back with --config to rerun)
    checkpoint.safetensors   weights, Adam state, RNG states and progress after the last finished epoch
    metrics.jsonl            one JSON line per finished epoch: every term, seconds, device and threads, skipped steps,
                             test monitor

Every file is replaced atomically; after each epoch the metrics are written first, then the checkpoint, so a run
killed at any point holds a checkpoint and at most one metrics line past it (dropped on resume). Resuming restores
the model, Adam, the global torch RNG (z sampling) and the data generator (shuffling and binarization), so an
interrupted run continues bit-identically on the same device and thread count.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    temporary_files,
)
from .config import ConfigError, ModelConfig, RunConfig, build_config, config_to_toml, load_config
from .data import DynamicBinarizer, ImageData, binarize_fixed, load_data
from .models import VAE
from .objectives import smvi_objective, training_objective

__all__ = ["train", "load_run", "LoadedRun", "RunError", "TrainingDiverged", "resolve_device"]

CONFIG, CHECKPOINT, METRICS, LOCK = "config.toml", "checkpoint.safetensors", "metrics.jsonl", ".lock"
# Files a training run owns; --overwrite removes these and nothing else.
RUN_FILES = (CONFIG, CHECKPOINT, METRICS)


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (exists, missing, locked, mismatched); one-line message."""


class TrainingDiverged(RuntimeError):
    """Training cannot go on: ``train.max_bad_steps`` non-finite steps in a row, an epoch without one finite step, or
    an update that made the parameters non-finite. The message names the likely cause; the last good checkpoint is
    kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available: use --device cpu or auto")
    return torch.device(name)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` so two processes never write the same run (released on exit/death)."""
    try:
        lock = open(run_dir / LOCK, "a+")
    except OSError as e:
        raise RunError(f"run directory {run_dir} is not writable ({e.strerror}); choose another --out") from None
    with lock as f:
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


_MUTABLE = {("train", "epochs"), ("train", "device")}  # the settings a resumed run may change


def _config_change(old: dict, new: dict) -> str | None:
    """The first setting, other than train.epochs and train.device, on which two config dumps differ."""
    for section, values in old.items():
        for key, value in values.items():
            now = new.get(section, {}).get(key) if isinstance(new.get(section), dict) else None
            if (section, key) not in _MUTABLE and now != value:
                return f"{section}.{key} is {now!r} but the run used {value!r}"
    return None


def _check_dir(config: RunConfig, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse what ``resume`` / ``overwrite`` do not allow in ``run_dir`` (nothing is changed here)."""
    has = {name: (run_dir / name).exists() for name in RUN_FILES}
    if resume:
        if not has[CONFIG]:
            if has[CHECKPOINT]:
                raise RunError(f"{run_dir} has a {CHECKPOINT} but no {CONFIG}: the run directory is damaged; "
                               f"restore {CONFIG} or start over with --overwrite")
            raise RunError(f"nothing to resume in {run_dir}: no {CONFIG}; drop --resume to start a new run")
        change = _config_change(load_config(run_dir / CONFIG).model_dump(mode="json"), config.model_dump(mode="json"))
        if change:
            raise ConfigError(f"--resume: {change} in {run_dir}; "
                              "only train.epochs and train.device may change on resume")
    elif any(has.values()) and not overwrite:
        raise RunError(f"{run_dir} already holds a run: pass --resume to continue it or --overwrite to start over")


@contextmanager
def _writing(run_dir: Path) -> Iterator[None]:
    """Turn a failed write (disk full, permissions) into one line; atomic writes leave the previous files intact."""
    try:
        yield
    except OSError as e:
        raise RunError(f"cannot write in {run_dir} ({e.strerror or e}); the files there are intact: "
                       "free space or fix permissions, then --resume") from None


def _clear(run_dir: Path, overwrite: bool) -> None:
    """Remove temporary files left by a killed writer and, with ``overwrite``, the previous run's files."""
    for name in RUN_FILES:
        for tmp in temporary_files(run_dir / name):
            tmp.unlink(missing_ok=True)
        if overwrite:
            (run_dir / name).unlink(missing_ok=True)


def _restore(path: Path, config: RunConfig, model, optimizer, loader, device) -> tuple[int, int]:
    """Load the checkpoint at ``path`` into the model, Adam and the RNGs; returns (epochs done, bad steps in a row)."""
    ck = load_checkpoint(path)
    change = _config_change(ck.config, config.model_dump(mode="json"))
    if change:
        raise CheckpointError(f"{path} belongs to another run ({change}); resume the run it came from")
    load_weights(model, ck.model, path)
    try:
        optimizer.load_state_dict(ck.optimizer)
        _set_rng_state(ck.rng, device, loader)
        return int(ck.progress["epoch"]), int(ck.progress.get("bad_steps_in_a_row", 0))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: damaged optimizer, RNG or progress state ({type(e).__name__} {detail})"
                              ) from None


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
    """Train a :class:`~smvi.models.VAE` with ``train.objective`` (SMVI by default), checkpointing after every epoch.

    ``resume`` continues the run in ``run_dir`` (its saved config must match ``config`` except for ``train.epochs``
    and ``train.device``); without it an existing run is an error unless ``overwrite``. ``data`` skips loading.
    Non-finite steps (loss or gradient) are skipped and counted; ``train.max_bad_steps`` consecutive ones raise
    :class:`TrainingDiverged`, leaving the last good checkpoint in place. Nothing in ``run_dir`` changes before the
    data, the device and (when resuming) the checkpoint have been checked.
    """
    run_dir = Path(run_dir)
    config = build_config(RunConfig, config.model_dump(mode="json"))  # re-checked: model_copy(update=) skips validation
    if resume and not run_dir.is_dir():
        raise RunError(f"nothing to resume: run directory {run_dir} does not exist")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run directory {run_dir} ({e.strerror}); choose another --out") from None
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run directory {run_dir} is not writable; choose another --out")
    with run_lock(run_dir):
        _check_dir(config, run_dir, resume, overwrite)
        tc = config.train
        device = resolve_device(tc.device)
        data = data if data is not None else load_data(config.data.dataset, config.data.data_dir)

        torch.manual_seed(tc.seed)
        model = VAE(data.train_x.shape[1], config.model).to(device)
        optimizer = _adam(model, tc.lr)
        loader = DynamicBinarizer(data.train_x, tc.batch_size, seed=tc.seed + 1)
        monitor_x = binarize_fixed(data.test_x[: config.data.monitor_size], config.data.eval_seed).to(device)

        start, bad_in_a_row, history = 0, 0, []
        if resume:
            if (run_dir / CHECKPOINT).exists():
                start, bad_in_a_row = _restore(run_dir / CHECKPOINT, config, model, optimizer, loader, device)
            history = _metrics_history(run_dir / METRICS, start)
        # Everything is checked: only now is anything in run_dir changed.
        with _writing(run_dir):
            _clear(run_dir, overwrite)
            atomic_write_text(run_dir / CONFIG, config_to_toml(config))

        last: dict = {}
        steps = len(loader)
        bar = tqdm(total=tc.epochs * steps, initial=start * steps, disable=not progress, unit="step", dynamic_ncols=True)
        with bar:
            for epoch in range(start, tc.epochs):
                t0 = time.perf_counter()
                means, skipped, bad_in_a_row = _run_epoch(model, optimizer, loader, tc, device, bar, epoch,
                                                          bad_in_a_row)
                last = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 3),
                        "device": device.type, "threads": torch.get_num_threads(),
                        "lam": lam_at(tc, epoch + 1), **means,
                        "skipped_steps": skipped, **_monitor(model, monitor_x, config.data.eval_seed)}
                history.append(json.dumps(last))
                with _writing(run_dir):
                    atomic_write_text(run_dir / METRICS, "".join(line + "\n" for line in history))
                    save_checkpoint(
                        run_dir / CHECKPOINT, model=model, optimizer=optimizer, rng=_rng_state(device, loader),
                        progress={"epoch": epoch + 1, "bad_steps_in_a_row": bad_in_a_row},
                        config=config.model_dump(mode="json"),
                    )
        return TrainResult(run_dir, max(start, tc.epochs), last)


def _adam(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel where this torch has it for the device (same updates up to rounding; a few percent per
    step on CPU: benchmarks/README.md)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The gradients' global 2-norm (non-finite if any entry is), without the clipping pass."""
    get = getattr(torch.nn.utils, "get_total_norm", None)
    return get(grads) if get is not None else torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))


def lam_at(tc, epoch: float) -> float:
    """λ after ``epoch`` (fractional) epochs: ``tc.lam``, ramped linearly from 0 during ``tc.lam_warmup_epochs``."""
    if tc.lam_warmup_epochs <= 0:
        return tc.lam
    return tc.lam * min(1.0, epoch / tc.lam_warmup_epochs)


def _run_epoch(model, optimizer, loader, tc, device, bar, epoch, bad_in_a_row) -> tuple[dict[str, float], int, int]:
    """One pass over the data; returns the example-weighted means of the terms, the number of skipped steps and the
    number of non-finite steps in a row at its end (``bad_in_a_row`` is that count at its start)."""
    sums: dict[str, float] = {}
    seen = skipped = 0
    params = list(model.parameters())
    steps = len(loader)
    for i, x in enumerate(loader.epoch()):
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
            terms = training_objective(model, x, objective=tc.objective, lam=lam_at(tc, epoch + i / steps),
                                       beta=tc.beta, iwae_k=tc.iwae_k, n_samples=tc.n_samples)
        loss = terms.loss.mean()
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            norm = (torch.nn.utils.clip_grad_norm_(params, tc.grad_clip) if tc.grad_clip
                    else _total_norm([p.grad for p in params if p.grad is not None]))
            ok = bool(torch.isfinite(norm))
        if not ok:
            skipped += 1
            bad_in_a_row += 1
            if bad_in_a_row >= tc.max_bad_steps:
                raise TrainingDiverged(_diverged(f"{bad_in_a_row} consecutive non-finite steps", epoch, tc))
            bar.update(1)
            continue
        bad_in_a_row = 0
        optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise TrainingDiverged(_diverged("an update made the parameters non-finite", epoch, tc))
        n = x.shape[0]
        seen += n
        for k, v in terms.means().items():
            sums[k] = sums.get(k, 0.0) + v * n
        bar.update(1)
        bar.set_postfix({"epoch": epoch + 1, **{k: f"{v:.4g}" for k, v in terms.means().items() if k != "loss"}},
                        refresh=False)
    if seen == 0:
        raise TrainingDiverged(_diverged(f"all {steps} steps were non-finite", epoch, tc))
    return {k: v / seen for k, v in sums.items()}, skipped, bad_in_a_row


def _diverged(what: str, epoch: int, tc) -> str:
    """A one-line message for :class:`TrainingDiverged` naming the likely cause and the fix."""
    if tc.lam != 0:
        cause = (f"λ={tc.lam} is likely too large for lr={tc.lr}: lower train.lr, set train.grad_clip "
                 "or ramp λ up with train.lam_warmup_epochs")
    else:
        cause = f"lr={tc.lr} is likely too large: lower train.lr or set train.grad_clip"
    return f"{what} in epoch {epoch + 1}: {cause}; the last good checkpoint is kept"


@torch.no_grad()
def _monitor(model, x: torch.Tensor, seed: int) -> dict[str, float]:
    """ELBO and D_SM on a fixed binarized test subset, with a fixed seed and without touching the training RNG."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        terms = smvi_objective(model, x, lam=0.0, compute_d_sm=True)
    m = terms.means()
    return {"test_elbo": m["elbo"], "test_d_sm": m["d_sm"]}


def _metrics_history(path: Path, epochs: int) -> list[str]:
    """The metrics lines of epochs ≤ ``epochs`` from the run being resumed.

    A line for epoch ``epochs + 1`` (written just before a checkpoint that a kill prevented) is dropped; anything else
    past the checkpoint, or a line that is not a metrics record, is refused rather than silently discarded.
    """
    if not path.exists():
        return []
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read {path} ({e}); repair or remove it to resume") from None
    keep, beyond = [], []
    for i, ln in enumerate(lines, 1):
        try:
            epoch = int(json.loads(ln)["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RunError(f"{path}: line {i} is not a metrics record; repair or remove it to resume") from None
        (keep if epoch <= epochs else beyond).append(ln)
    if len(beyond) > 1 or (beyond and json.loads(beyond[0])["epoch"] != epochs + 1):
        raise RunError(f"{path} records epochs past the checkpoint's {epochs}: the checkpoint is older than the "
                       "metrics; start over with --overwrite")
    return keep


def _saved_model_config(saved) -> ModelConfig | None:
    """A checkpoint's model config with today's defaults filled in (checkpoints written before a setting existed lack
    its key), or None if it is not a valid one."""
    try:
        return ModelConfig.model_validate(saved)
    except ValueError:
        return None


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
    if _saved_model_config(ck.config.get("model")) != config.model:
        raise CheckpointError(f"{run_dir}: {CHECKPOINT} was written with another model config than {CONFIG}")
    first = ck.model.get("encoder.0.weight")
    if first is None:
        raise CheckpointError(f"{run_dir / CHECKPOINT}: no encoder weights; not a VAE checkpoint")
    model = VAE(first.shape[1], config.model)
    load_weights(model, ck.model, run_dir / CHECKPOINT)
    model = model.to(resolve_device(device)).eval().requires_grad_(False)
    return LoadedRun(run_dir, config, model, int(ck.progress["epoch"]))
