"""Training through the CLI on the synthetic fixture: it learns, writes its artifacts, resumes exactly, and refuses to
clobber existing runs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke, tiny_train_args
from smvi.settings.run import load_config
from smvi.stages.train import TrainingDiverged, load_run, train


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir):
    return {k: v for k, v in load_file(run_dir / "checkpoint.safetensors").items() if k.startswith("model.")}


def test_tiny_run_learns_and_writes_its_artifacts(idx_dir, tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--out", out, "--epochs", 6, "--lam", 0.1, *tiny_train_args(idx_dir))
    assert r.exit_code == 0, r.output
    assert {"config.toml", "checkpoint.safetensors", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    m = metrics(out)
    assert [e["epoch"] for e in m] == list(range(1, 7))
    assert m[-1]["loss"] < m[0]["loss"] - 10  # it learns
    for key in ("loss", "elbo", "log_likelihood", "kl", "d_sm", "seconds", "test_elbo", "test_d_sm"):
        assert all(isinstance(e[key], float) for e in m), key
    cfg = (out / "config.toml").read_text()
    assert "lam = 0.1" in cfg and "z_dim = 4" in cfg and 'dataset = "idx"' in cfg
    loaded = load_run(out)
    assert loaded.epoch == 6 and loaded.config.train.lam == 0.1 and loaded.model.z_dim == 4
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_resume_continues_bit_identically(idx_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("train", "--out", a, "--epochs", 4, "--lam", 0.5, *tiny_train_args(idx_dir)).exit_code == 0
    assert invoke("train", "--out", b, "--epochs", 2, "--lam", 0.5, *tiny_train_args(idx_dir)).exit_code == 0
    r = invoke("train", "--out", b, "--epochs", 4, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert [e["epoch"] for e in metrics(b)] == [1, 2, 3, 4]
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [e["loss"] for e in metrics(a)] == [e["loss"] for e in metrics(b)]


def test_resume_of_a_finished_run_does_nothing(idx_dir, tmp_path):
    out = tmp_path / "r"
    invoke("train", "--out", out, "--epochs", 1, *tiny_train_args(idx_dir))
    before = (out / "checkpoint.safetensors").read_bytes()
    r = invoke("train", "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0 and "nothing to do" in r.output
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_existing_run_is_never_clobbered_without_overwrite(idx_dir, tmp_path):
    out = tmp_path / "r"
    invoke("train", "--out", out, "--epochs", 1, *tiny_train_args(idx_dir))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = invoke("train", "--out", out, "--epochs", 1, *tiny_train_args(idx_dir))
    assert r.exit_code == 1 and "already holds a run" in r.output and "--overwrite" in r.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    r = invoke("train", "--out", out, "--epochs", 1, "--seed", 5, "--overwrite", *tiny_train_args(idx_dir))
    assert r.exit_code == 0 and "seed = 5" in (out / "config.toml").read_text()


def test_resume_refuses_a_changed_config(idx_dir, tmp_path):
    out = tmp_path / "r"
    invoke("train", "--out", out, "--epochs", 1, *tiny_train_args(idx_dir))
    r = invoke("train", "--out", out, "--resume", "--lam", 2.0, "--no-progress")
    assert r.exit_code == 1 and "train.lam" in r.output and "only train.epochs" in r.output


def inject_nonfinite(monkeypatch, bad_steps):
    """Make the objective's loss NaN at the given (0-based, global) step numbers."""
    import smvi.stages.train as T

    real, step = T.training_objective, iter(range(10**9))

    def faulty(*args, **kwargs):
        terms = real(*args, **kwargs)
        if next(step) in bad_steps:
            return dataclasses.replace(terms, loss=terms.loss * float("nan"))
        return terms

    monkeypatch.setattr(T, "training_objective", faulty)


def tiny_config(idx_dir, **train):
    return load_config(
        sets=[
            "model.encoder_hidden=[32]",
            "model.decoder_hidden=[32]",
            "model.z_dim=4",
            "data.dataset='idx'",
            f"data.data_dir='{idx_dir}'",
            "data.monitor_size=64",
            "train.batch_size=64",
        ],
        overrides={f"train.{k}": v for k, v in train.items()},
    )


def test_nonfinite_steps_are_skipped_and_counted(idx_dir, tmp_path, monkeypatch):
    inject_nonfinite(monkeypatch, {1, 5, 6})  # 4 steps per epoch
    train(tiny_config(idx_dir, epochs=2, lam=0.5), tmp_path / "r", progress=False)
    assert [e["skipped_steps"] for e in metrics(tmp_path / "r")] == [1, 2]
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "r").values())


def test_repeated_nonfinite_steps_stop_and_keep_the_last_good_checkpoint(idx_dir, tmp_path, monkeypatch):
    out = tmp_path / "r"
    inject_nonfinite(monkeypatch, set(range(4, 100)))  # epoch 1 is clean, everything after is NaN
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps in epoch 2"):
        train(tiny_config(idx_dir, epochs=3, max_bad_steps=3), out, progress=False)
    assert [e["epoch"] for e in metrics(out)] == [1]
    assert load_run(out).epoch == 1
    assert all(torch.isfinite(v).all() for v in weights(out).values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lam", "nan"], "train.lam"),
        (["--batch-size", "0"], "train.batch_size"),
        (["--set", "model.encoder_hidden=[-3]"], "positive"),
        (["--set", "train.lamda=0.1"], "unknown key"),
        (["--set", "nosuchsection.x=1"], "unknown key"),
        (["--set", "garbage"], "expected section.key=value"),
        (["--epochs", "-1"], "train.epochs"),
    ],
)
def test_bad_settings_are_one_clear_line(idx_dir, tmp_path, args, message):
    out = tmp_path / "r"
    r = invoke("train", "--out", out, *tiny_train_args(idx_dir), *args)
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error:") and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not (out / "checkpoint.safetensors").exists()


def test_config_file_and_overrides(idx_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlam = 0.3\nepochs = 1\n[model]\nz_dim = 3\nencoder_hidden = [8]\ndecoder_hidden = []\n")
    out = tmp_path / "r"
    r = invoke(
        "train",
        "--out",
        out,
        "--config",
        cfg,
        "--lam",
        0.2,
        "--dataset",
        "idx",
        "--data-dir",
        idx_dir,
        "--no-progress",
        "--set",
        "data.monitor_size=32",
    )
    assert r.exit_code == 0, r.output
    loaded = load_run(out)
    assert loaded.config.train.lam == 0.2 and loaded.config.model.z_dim == 3
    assert loaded.config.model.decoder_hidden == ()


def test_missing_config_file_and_bad_toml(tmp_path):
    r = invoke("train", "--out", tmp_path / "r", "--config", tmp_path / "none.toml")
    assert r.exit_code != 0 and "none.toml" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlam=")
    r = invoke("train", "--out", tmp_path / "r", "--config", bad)
    assert r.exit_code == 1 and "not valid TOML" in r.output


def test_lambda_warmup_ramps_linearly():
    from smvi.settings.run import TrainConfig
    from smvi.stages.train import lam_at

    assert lam_at(TrainConfig(lam=0.2), 0.0) == 0.2
    tc = TrainConfig(lam=0.2, lam_warmup_epochs=4)
    assert [lam_at(tc, e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.05, 0.1, 0.2, 0.2]


def test_bf16_precision_trains_and_keeps_float32_weights(idx_dir, tmp_path):
    out = tmp_path / "bf16"
    r = invoke(
        "train", "--out", out, "--epochs", 4, "--lam", 0.1, "--set", "train.precision='bf16'", *tiny_train_args(idx_dir)
    )
    assert r.exit_code == 0, r.output
    m = metrics(out)
    assert m[-1]["loss"] < m[0]["loss"] - 10 and all(math.isfinite(e["d_sm"]) for e in m)
    assert all(v.dtype == torch.float32 for v in weights(out).values())
