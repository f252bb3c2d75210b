"""Numerical robustness of training: a huge λ, saturated images or an injected NaN never put a non-finite value into
the parameters or a checkpoint. Bad steps are skipped and counted; repeated ones stop the run with one line naming
the likely cause; gradient-norm clipping bounds every update."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import smvi.stages.train as T
from conftest import invoke, make_idx_dir, tiny_config, tiny_train_args
from smvi.data.loading import ImageData, load_idx_dir
from smvi.stages.train import TrainingDiverged, train
from smvi.store.checkpoint import load_checkpoint

STEPS = 4  # per epoch: 256 training images in batches of 64

CHECKPOINT, METRICS = "checkpoint.safetensors", "metrics.jsonl"  # the run directory's files


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_idx_dir(tmp_path_factory.mktemp("robust") / "idx")


@pytest.fixture(scope="module")
def data(data_dir) -> ImageData:
    return load_idx_dir(data_dir)


def config(data_dir: Path, **train_options):
    """:func:`conftest.tiny_config`, two epochs unless told."""
    return tiny_config(data_dir, **{"epochs": 2, **train_options})


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / CHECKPOINT).model  # load_checkpoint itself refuses non-finite weights


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


# ---- injecting faults at chosen (0-based, global) training steps ---------------------------------------------------
class _NaNGradient(torch.autograd.Function):
    """Adds 0 to the loss, but its gradient is NaN: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def inject(monkeypatch, where: str, steps: set[int]) -> None:
    """Make training step ``n`` (for ``n`` in ``steps``) go wrong ``where``: 'loss', 'gradient' or 'input'."""
    count = iter(range(10**9))
    if where == "input":
        real_epoch = T.DynamicBinarizer.epoch

        def epoch(self):
            for x in real_epoch(self):
                yield x * math.nan if next(count) in steps else x

        monkeypatch.setattr(T.DynamicBinarizer, "epoch", epoch)
        return
    real = T.training_objective  # the trainer's one dispatch point, whatever the objective

    def objective(model, x, **kwargs):
        terms = real(model, x, **kwargs)
        if not torch.is_grad_enabled() or next(count) not in steps:
            return terms
        if where == "loss":
            return dataclasses.replace(terms, loss=terms.loss * math.nan)
        return dataclasses.replace(terms, loss=terms.loss + _NaNGradient.apply(next(model.parameters()).sum()))

    monkeypatch.setattr(T, "training_objective", objective)


# ---- a huge λ and saturated images ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lam, grad_clip, images",
    [(1e4, None, "gray"), (1e6, None, "gray"), (1e4, 1.0, "gray"), (1e4, None, "all ones"), (1e4, None, "all zeros")],
)
def test_extreme_settings_never_put_a_nan_in_the_parameters(data_dir, data, tmp_path, lam, grad_clip, images):
    if images != "gray":
        fill = torch.ones_like if images == "all ones" else torch.zeros_like
        data = ImageData(fill(data.train_x), data.train_y, fill(data.test_x), data.test_y)
    run = tmp_path / "r"
    diverged = None
    try:
        train(config(data_dir, lam=lam, grad_clip=grad_clip, epochs=3), run, progress=False, data=data)
    except TrainingDiverged as e:  # allowed, with a one-line message; the checkpoint must still be good
        diverged = e
        assert "\n" not in str(e) and "λ=" in str(e)
    if diverged is None:  # finished: three epochs, each checkpointed and recorded
        assert load_checkpoint(run / CHECKPOINT).progress["epoch"] == 3 and len(metrics(run)) == 3
    if (run / CHECKPOINT).exists():  # whatever happened, what was kept is finite and consistent
        assert all_finite(weights(run).values())
        done = load_checkpoint(run / CHECKPOINT).progress["epoch"]
        assert [m["epoch"] for m in metrics(run)] == list(range(1, done + 1))
        assert all(isinstance(m["skipped_steps"], int) and math.isfinite(m["loss"]) for m in metrics(run))
    else:  # diverged within the first epoch: nothing was recorded for it
        assert diverged is not None and "epoch 1" in str(diverged) and not (run / METRICS).exists()


# ---- injected NaNs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["loss", "gradient", "input"])
def test_an_injected_nan_is_skipped_and_counted(data_dir, data, tmp_path, monkeypatch, where):
    with monkeypatch.context() as m:
        inject(m, "loss", {1, 5, 6})
        train(config(data_dir, lam=0.5), tmp_path / "reference", progress=False, data=data)
    inject(monkeypatch, where, {1, 5, 6})
    train(config(data_dir, lam=0.5), tmp_path / "r", progress=False, data=data)
    assert [m["skipped_steps"] for m in metrics(tmp_path / "r")] == [1, 2]
    got = weights(tmp_path / "r")
    assert all_finite(got.values())
    # a skipped step is skipped entirely, whatever went wrong in it: same weights as skipping by a NaN loss
    ref = weights(tmp_path / "reference")
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_bad_steps_in_a_row_are_counted_across_epochs(data_dir, data, tmp_path, monkeypatch):
    inject(monkeypatch, "loss", {2, 3, 4, 5})  # the last two steps of epoch 1, the first two of epoch 2
    with pytest.raises(TrainingDiverged, match="4 consecutive non-finite steps in epoch 2"):
        train(config(data_dir, max_bad_steps=4, epochs=3), tmp_path / "r", progress=False, data=data)
    assert [m["epoch"] for m in metrics(tmp_path / "r")] == [1]


def test_bad_steps_in_a_row_are_counted_across_a_resume(data_dir, data, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        inject(m, "loss", {2, 3})  # the last two steps of epoch 1
        train(config(data_dir, max_bad_steps=3, epochs=1), tmp_path / "r", progress=False, data=data)
    inject(monkeypatch, "loss", {0})  # the first step after resuming
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps in epoch 2"):
        train(config(data_dir, max_bad_steps=3, epochs=2), tmp_path / "r", resume=True, progress=False, data=data)


def test_an_epoch_without_one_finite_step_stops_the_run(data_dir, data, tmp_path, monkeypatch):
    inject(monkeypatch, "loss", set(range(STEPS, 100)))
    with pytest.raises(TrainingDiverged, match=f"all {STEPS} steps were non-finite in epoch 2"):
        train(config(data_dir, max_bad_steps=50, epochs=3), tmp_path / "r", progress=False, data=data)
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT).progress["epoch"] == 1


@pytest.mark.parametrize(
    "lam, cause", [(0.5, "λ=0.5 is likely too large for lr=0.001"), (0.0, "lr=0.001 is likely too large")]
)
def test_the_stop_message_names_the_likely_cause(data_dir, data, tmp_path, monkeypatch, lam, cause):
    inject(monkeypatch, "loss", set(range(100)))
    with pytest.raises(TrainingDiverged) as err:
        train(config(data_dir, lam=lam, max_bad_steps=3), tmp_path / "r", progress=False, data=data)
    assert cause in str(err.value) and "train.grad_clip" in str(err.value) and "\n" not in str(err.value)


def test_an_update_that_makes_the_parameters_nonfinite_stops_before_any_checkpoint(
    data_dir, data, tmp_path, monkeypatch
):
    out = tmp_path / "r"
    train(config(data_dir, epochs=1), out, progress=False, data=data)
    before = (out / CHECKPOINT).read_bytes()
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):  # a corrupted update (a hardware fault, an overflow in a custom optimizer)
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = math.inf
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(TrainingDiverged, match="an update made the parameters non-finite in epoch 2"):
        train(config(data_dir, epochs=2), out, resume=True, progress=False, data=data)
    assert (out / CHECKPOINT).read_bytes() == before


def test_a_learning_rate_that_blows_up_stops_with_a_clear_message(data_dir, data, tmp_path):
    """lr=1000 drives σ_φ(x) to 0 or ∞; that must be a skipped step, not a crash inside torch.distributions."""
    with pytest.raises(TrainingDiverged, match="lr=1000.0 is likely too large"):
        train(config(data_dir, lr=1000.0, epochs=5), tmp_path / "r", progress=False, data=data)
    assert all_finite(weights(tmp_path / "r").values())


def test_divergence_is_one_line_and_exit_status_1_on_the_command_line(data_dir, tmp_path, monkeypatch):
    inject(monkeypatch, "loss", set(range(100)))
    out = tmp_path / "r"
    r = invoke(
        "train", "--out", out, "--epochs", 2, "--lam", 0.5, "--set", "train.max_bad_steps=3", *tiny_train_args(data_dir)
    )
    assert r.exit_code == 1 and r.output.startswith("error: 3 consecutive non-finite steps in epoch 1")
    assert len(r.output.strip().splitlines()) == 1 and not (out / CHECKPOINT).exists()


# ---- gradient clipping ----------------------------------------------------------------------------------------------
def test_gradient_clipping_bounds_every_update(data_dir, data, tmp_path, monkeypatch):
    real_clip, norms = torch.nn.utils.clip_grad_norm_, []

    def clip(params, max_norm, *args, **kwargs):
        params = list(params)
        before = real_clip(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        norms.append((float(before), float(after), max_norm))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    train(config(data_dir, lam=0.5, grad_clip=1.0), tmp_path / "clipped", progress=False, data=data)
    assert len(norms) == 2 * STEPS and all(c == 1.0 for _, _, c in norms)
    assert all(after <= 1.0 + 1e-4 for _, after, _ in norms)
    assert all(before > 1.0 for before, _, _ in norms)  # clipping was active at every step of this run
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    train(config(data_dir, lam=0.5), tmp_path / "unclipped", progress=False, data=data)
    a, b = weights(tmp_path / "clipped"), weights(tmp_path / "unclipped")
    assert any(not torch.equal(a[k], b[k]) for k in a)
