"""Training: a resumable loop over the SMVI objective.

The run directory's layout, lock and identity belong to :mod:`smvi.store.rundir`; training writes its config (pass it
back with --config to rerun), the checkpoint (weights, Adam state, RNG states and progress after the last finished
epoch) and the metrics (one JSON line per finished epoch: every term, seconds, device and threads, skipped steps, test
monitor).

Every file is replaced atomically; after each epoch the metrics are written first, then the checkpoint, so a run
killed at any point holds a checkpoint and at most one metrics line past it (dropped on resume). Resuming restores
the model, Adam, the global torch RNG (z sampling) and the data generator (shuffling and binarization), so an
interrupted run continues bit-identically on the same device and thread count.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from smvi.core.constraint import DualState, EpochDual, batch_measure, dual_update, initial_state
from smvi.core.diagnostics import active_units
from smvi.core.models import VAE
from smvi.core.objectives import SMVITerms, backward, smvi_objective, training_objective
from smvi.data.loading import DynamicBinarizer, ImageData, cache_dir, fixed_inputs, load_data
from smvi.progress import Progress, note, training_note
from smvi.settings.objectives import objective_arguments
from smvi.settings.run import ConfigError, RunConfig
from smvi.stages.tracking import NullTracker, open_tracker
from smvi.stages.trained import LoadedRun, check_checkpoint, check_inputs, data_identity, load_run, resolve_device
from smvi.store.atomic import atomic_write_text
from smvi.store.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from smvi.store.rundir import RunDir, RunError, fingerprint, identity_change, path_text

__all__ = ["train", "load_run", "LoadedRun", "RunError", "TrainingDiverged", "resolve_device"]


class TrainingDiverged(RuntimeError):
    """Training cannot go on: ``train.max_bad_steps`` non-finite steps in a row, an epoch without one finite step, or
    an update that made the parameters non-finite. The message names the likely cause; the last good checkpoint is
    kept."""


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


def _check_dir(config: RunConfig, rd: RunDir, resume: bool, overwrite: bool) -> None:
    """Refuse what ``resume`` / ``overwrite`` do not allow in the run directory (nothing is changed here)."""
    if resume:
        if not rd.config_path.exists():
            if rd.checkpoint_path.exists():
                raise RunError(
                    f"{rd.path} has a checkpoint but no config.toml: the run directory is damaged; "
                    "restore config.toml or start over with --overwrite"
                )
            raise RunError(f"nothing to resume in {rd.path}: no config.toml; drop --resume to start a new run")
        change = identity_change(rd.read_config(), config)
        if change:
            raise ConfigError(
                f"--resume: {change} in {rd.path}; "
                "only train.epochs, train.device and train.tensorboard may change on resume"
            )
    elif rd.has_run() and not overwrite:
        raise RunError(f"{rd.path} already holds a run: pass --resume to continue it or --overwrite to start over")


def _restore(
    path: Path, config: RunConfig, model, optimizer, loader, device, dual: DualState | None
) -> tuple[int, int, DualState | None]:
    """Load the checkpoint at ``path`` into the model, Adam and the RNGs; returns (epochs done, bad steps in a row,
    the learned λ's state when ``dual`` says the run has one)."""
    ck = load_checkpoint(path)
    check_checkpoint(ck, config, path)
    load_weights(model, ck.model, path)
    try:
        optimizer.load_state_dict(ck.optimizer)
        _set_rng_state(ck.rng, device, loader)
        dual = DualState.from_json(ck.progress["dual"]) if dual is not None else None
        return int(ck.progress["epoch"]), int(ck.progress.get("bad_steps_in_a_row", 0)), dual
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{path}: damaged optimizer, RNG or progress state ({type(e).__name__} {detail})"
        ) from None


def with_data_dir(config: RunConfig) -> RunConfig:
    """``config`` with MNIST's directory resolved from ``$SMVI_DATA_DIR`` / ``$SMVI_CACHE_DIR`` (where
    :func:`~smvi.data.loading.load_data` just found it), so the saved config says where the data came from and later
    stages do not depend on the environment. MNIST's location is not part of the run's identity (its files are
    MD5-checked), so this changes no fingerprint; an ``idx`` run names its directory itself."""
    if config.data.dataset != "mnist" or config.data.data_dir:
        return config
    where = os.environ.get("SMVI_DATA_DIR") or str(cache_dir())
    return config.model_copy(update={"data": config.data.model_copy(update={"data_dir": str(Path(where).resolve())})})


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
    """Train a :class:`~smvi.core.models.VAE` with ``train.objective`` (SMVI by default), checkpointing after every
    epoch.

    ``resume`` continues the run in ``run_dir`` (its saved config must have ``config``'s identity: only ``train.epochs``
    and ``train.device`` may change, see :func:`smvi.store.rundir.fingerprint`); without it an existing run is an error
    unless ``overwrite``, which also removes the run's result records. ``data`` skips loading. What the run is trained
    on is recorded in ``data.json`` (:func:`smvi.stages.trained.data_identity`: the source and a digest of the images
    and labels); resuming on other data (IDX files replaced in place, other arrays) is a one-line :class:`RunError`
    naming the files that changed. ``config`` is validated anew first, like every argument
    (:func:`smvi.stages.trained.check_inputs`). Non-finite steps (loss or gradient) are skipped and counted;
    ``train.max_bad_steps`` consecutive ones raise :class:`TrainingDiverged`, leaving the last good checkpoint in place.
    Nothing in ``run_dir`` changes before the data, the device and (when resuming) the checkpoint have been checked.
    """
    config = check_inputs(run_dir, config, RunConfig, data=data, what="config")  # model_copy(update=) skips checks
    run_dir = path_text(run_dir)  # not empty (the current folder), valid UTF-8 (records and reports hold it as text)
    given = data is not None  # arrays through the Python API, else config.data's files
    rd = RunDir(run_dir)
    tracker = open_tracker(config.train.tensorboard, run_dir.resolve().name)  # TensorBoard, if asked and installed
    if resume and not run_dir.is_dir():
        raise RunError(f"nothing to resume: run directory {run_dir} does not exist")
    if data is None and not run_dir.exists():  # a data error must not leave a new, empty run directory behind
        data = load_data(config.data.dataset, config.data.data_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run directory {run_dir} ({e.strerror}); choose another --out") from None
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run directory {run_dir} is not writable; choose another --out")
    with rd.lock():
        _check_dir(config, rd, resume, overwrite)
        tc = config.train
        device = resolve_device(tc.device)
        if data is None:
            data = load_data(config.data.dataset, config.data.data_dir)
            config = with_data_dir(config)
        trained_on = rd.read_data() if resume else None
        now = data_identity(config, data, given=given)
        if trained_on is not None and (why := trained_on.difference(now)):
            raise RunError(
                f"--resume {run_dir}: the data changed since the run was trained: it was {why}; put the "
                "original data back, or start over with --overwrite"
            )

        torch.manual_seed(tc.seed)
        model = VAE(data.train_x.shape[1], config.model).to(device)
        optimizer = _adam(model, tc.lr)
        loader = DynamicBinarizer(data.train_x, tc.batch_size, seed=tc.seed + 1, transform=config.data.transform)
        monitor_x = fixed_inputs(
            data.test_x[: config.data.monitor_size], config.data.transform, config.data.eval_seed
        ).to(device)

        start, bad_in_a_row, history = 0, 0, []
        dual = initial_state(tc)  # the learned λ's state; None for a fixed λ
        if resume:
            if rd.checkpoint_path.exists():
                start, bad_in_a_row, dual = _restore(rd.checkpoint_path, config, model, optimizer, loader, device, dual)
            history = _metrics_history(rd.metrics_path, start)
        # Everything is checked: only now is anything in run_dir changed.
        with rd.writing("the files there are intact, --resume continues"):
            rd.clear(overwrite=overwrite)
            if start < tc.epochs:  # a finished run keeps its config (--resume --epochs 1 must not record epochs = 1)
                rd.write_config(config)
            if start == 0 and trained_on is None:  # what it is trained on (a run from before data.json stays without)
                rd.write_data(now)

        last: dict = {}
        steps = len(loader)
        if start < tc.epochs:
            note(training_note(run_dir.resolve().name, config, start, len(data.train_x)), progress)
        bar = Progress(
            f"train {run_dir.resolve().name}",
            tc.epochs * steps,
            unit="step",
            initial=start * steps,
            epoch_steps=steps,
            enabled=progress,
        )
        with bar, tracker:
            for epoch in range(start, tc.epochs):
                t0 = time.perf_counter()
                means, skipped, bad_in_a_row, dual = _run_epoch(
                    model, optimizer, loader, tc, device, bar, epoch, bad_in_a_row, dual, tracker
                )
                last = {
                    "epoch": epoch + 1,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "device": device.type,
                    "threads": torch.get_num_threads(),
                    "lam": dual.lam if dual else lam_at(tc, epoch + 1),
                    **means,
                    "skipped_steps": skipped,
                    **_monitor(model, monitor_x, config.data.eval_seed),
                }
                if last.get("constraint_status") == "unreachable":
                    bar.write(_unreachable(last, tc), always=True)
                history.append(json.dumps(last))
                with rd.writing("the files there are intact, --resume continues"):
                    atomic_write_text(rd.metrics_path, "".join(line + "\n" for line in history))
                    save_checkpoint(
                        rd.checkpoint_path,
                        model=model,
                        optimizer=optimizer,
                        rng=_rng_state(device, loader),
                        progress={
                            "epoch": epoch + 1,
                            "bad_steps_in_a_row": bad_in_a_row,
                            **({"dual": dual.to_json()} if dual else {}),
                        },
                        config=config.model_dump(mode="json"),
                        fingerprint=fingerprint(config),
                    )
                tracker.epoch(epoch + 1, last, model, monitor_x)
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


def _run_epoch(
    model, optimizer, loader, tc, device, bar, epoch, bad_in_a_row, dual: DualState | None = None, tracker=NullTracker()
) -> tuple[dict, int, int, DualState | None]:
    """One pass over the data; returns the example-weighted means of the terms (with the constraint's fields when λ
    is learned), the number of skipped steps, the number of non-finite steps in a row at its end (``bad_in_a_row`` is
    that count at its start) and the learned λ's state (``dual``, updated after every finite step; None: fixed λ).
    ``tracker`` receives every finished step (TensorBoard, :mod:`smvi.stages.tracking`)."""
    sums: dict[str, float] = {}
    seen = skipped = 0
    params = list(model.parameters())
    steps = len(loader)
    log = EpochDual(tc.constraint) if dual else None
    for i, x in enumerate(loader.epoch()):
        x = x.to(device, non_blocking=True)
        lam = dual.lam if dual else lam_at(tc, epoch + i / steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
            terms = training_objective(
                model, x, objective=tc.objective, n_samples=tc.n_samples, **{**objective_arguments(tc), "lam": lam}
            )
        loss = terms.loss.mean()
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok and dual:  # the constraint's value on this batch, at the parameters the loss was evaluated at
            assert isinstance(terms, SMVITerms)  # a learned λ is SMVI's (RunConfig checks)
            measure = batch_measure(tc.constraint, terms, model, x)
            ok = math.isfinite(measure)
        if ok:
            backward(model, terms, lam=lam, dsm_grad=tc.dsm_grad)
            norm = (
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                if tc.grad_clip
                else _total_norm([p.grad for p in params if p.grad is not None])
            )
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
        batch = terms.means()
        tracker.step(epoch * steps + i + 1, batch, lam=lam, grad_norm=float(norm), lr=optimizer.param_groups[0]["lr"])
        n = x.shape[0]
        seen += n
        if dual and log:
            dual = dual_update(dual, measure, tc.constraint)
            log.record(lam, dual)
            if tc.constraint.measure == "gap":
                batch["gap_est"] = measure
        for k, v in batch.items():
            sums[k] = sums.get(k, 0.0) + v * n
        bar.update(1)
        shown = {k: f"{v:.4g}" for k, v in batch.items() if k != "loss"}
        if dual:
            shown |= {"λ": f"{dual.lam:.3g}", "avg": f"{dual.avg:.4g}"}
        bar.postfix(shown)
    if seen == 0:
        raise TrainingDiverged(_diverged(f"all {steps} steps were non-finite", epoch, tc))
    means = {k: v / seen for k, v in sums.items()}
    return (means | log.metrics(dual) if log and dual else means), skipped, bad_in_a_row, dual


def _unreachable(m: dict, tc) -> str:
    """The warning for an epoch spent with λ at its cap and the constraint still violated."""
    c = tc.constraint
    return (
        f"warning: epoch {m['epoch']}: the {c.measure} target {c.target:g} is not reached with λ at its cap "
        f"{c.lam_max:g} (moving average {m['constraint_avg']:.4g}): it may be unreachable for this model; "
        "relax the target or raise train.constraint.lam_max"
    )


def _diverged(what: str, epoch: int, tc) -> str:
    """A one-line message for :class:`TrainingDiverged` naming the likely cause and the fix."""
    if tc.constraint.target is not None:
        cause = (
            f"the learned λ (up to train.constraint.lam_max={tc.constraint.lam_max}) is likely too large for "
            f"lr={tc.lr}: lower train.lr or lam_max, or set train.grad_clip"
        )
    elif tc.lam != 0:
        cause = (
            f"λ={tc.lam} is likely too large for lr={tc.lr}: lower train.lr, set train.grad_clip "
            "or ramp λ up with train.lam_warmup_epochs"
        )
    else:
        cause = f"lr={tc.lr} is likely too large: lower train.lr or set train.grad_clip"
    return f"{what} in epoch {epoch + 1}: {cause}; the last good checkpoint is kept"


@torch.no_grad()
def _monitor(model, x: torch.Tensor, seed: int) -> dict[str, float]:
    """ELBO, D_SM, KL(q ‖ prior) and active units on a fixed binarized test subset, with a fixed seed and without
    touching the training RNG."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        terms = smvi_objective(model, x, lam=0.0, compute_d_sm=True)
    m = terms.means()
    return {
        "test_elbo": m["elbo"],
        "test_d_sm": m["d_sm"],
        "test_kl": m["kl"],
        "test_active_units": active_units(model, x),
    }


def _metrics_history(path: Path, epochs: int) -> list[str]:
    """The metrics lines of epochs ≤ ``epochs`` from the run being resumed.

    A line for epoch ``epochs + 1`` (written just before a checkpoint that a kill prevented) is dropped; anything else
    past the checkpoint, a line that is not a metrics record, and epochs that are not whole numbers rising from 1
    (non-finite, repeated or out of order: a damaged or hand-edited file) are refused rather than silently discarded
    or carried forward, in one line naming the line.
    """
    if not path.exists():
        return []
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read {path} ({e}); repair or remove it to resume") from None
    keep, beyond, last = [], [], 0
    for i, ln in enumerate(lines, 1):
        try:
            epoch = json.loads(ln)["epoch"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RunError(f"{path}: line {i} is not a metrics record; repair or remove it to resume") from None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= last:
            raise RunError(
                f"{path}: line {i} has epoch {epoch!r} after epoch {last}: epochs must be whole numbers "
                "rising from 1; the file is damaged: repair it or start over with --overwrite"
            )
        last = epoch
        (keep if epoch <= epochs else beyond).append(ln)
    if len(beyond) > 1 or (beyond and json.loads(beyond[0])["epoch"] != epochs + 1):
        raise RunError(
            f"{path} records epochs past the checkpoint's {epochs}: the checkpoint is older than the "
            "metrics; start over with --overwrite"
        )
    return keep
