"""Training with a learned λ (``--target-dsm`` / ``--target-gap``) on the synthetic fixture: λ's state is logged every
epoch and checkpointed so that resuming is exact; slack and unreachable targets are reported; bad combinations of
options are one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke, tiny_train_args
from smvi.stages.train import load_run
from smvi.store.checkpoint import load_checkpoint

FAST = ["--set", "train.constraint.step_size=0.3"]  # the fixture has 4 steps per epoch: let λ move quickly


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def state(run_dir):
    return load_file(run_dir / "checkpoint.safetensors")


@pytest.mark.parametrize("measure, target", [("dsm", 3.0), ("gap", 0.5)])
def test_learned_lambda_is_logged_every_epoch_and_resumes_bit_identically(idx_dir, tmp_path, measure, target):
    a, b = tmp_path / "a", tmp_path / "b"
    args = [f"--target-{measure}", target, *FAST, *tiny_train_args(idx_dir)]
    r = invoke("train", "--out", a, "--epochs", 4, *args)
    assert r.exit_code == 0, r.output
    assert "λ" in r.output and f"target {target:g}" in r.output
    assert invoke("train", "--out", b, "--epochs", 2, *args).exit_code == 0
    assert load_checkpoint(b / "checkpoint.safetensors").progress["dual"]["steps"] == 8
    r = invoke("train", "--out", b, "--epochs", 4, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    m = metrics(a)
    for e in m:
        assert e["constraint_measure"] == measure and e["constraint_target"] == target
        assert e["constraint_status"] in ("active", "slack", "unreachable")
        assert all(math.isfinite(e[k]) and e[k] > 0 for k in ("lam", "lam_mean", "constraint_avg"))
    assert len({e["lam"] for e in m}) == 4  # λ moves
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    progress = [load_checkpoint(d / "checkpoint.safetensors").progress for d in (a, b)]
    assert progress[0] == progress[1] and progress[0]["dual"]["steps"] == 16
    drop = ("seconds", "device", "threads")
    assert [{k: v for k, v in e.items() if k not in drop} for e in metrics(b)] == [
        {k: v for k, v in e.items() if k not in drop} for e in m
    ]
    assert load_run(b).config.train.constraint.target == target


def test_a_fixed_lambda_run_has_no_constraint_state(idx_dir, tmp_path):
    r = invoke("train", "--out", tmp_path / "r", "--epochs", 1, "--lam", 0.1, *tiny_train_args(idx_dir))
    assert r.exit_code == 0
    assert "dual" not in load_checkpoint(tmp_path / "r" / "checkpoint.safetensors").progress
    (m,) = metrics(tmp_path / "r")
    assert m["lam"] == 0.1 and not any(k.startswith("constraint") for k in m)


def test_slack_target_sends_lambda_to_its_floor(idx_dir, tmp_path):
    out = tmp_path / "r"
    r = invoke("train", "--out", out, "--epochs", 3, "--target-dsm", 1e6, *FAST, *tiny_train_args(idx_dir))
    assert r.exit_code == 0, r.output
    last = metrics(out)[-1]
    assert last["lam"] == 1e-5 and last["constraint_status"] == "slack" and last["constraint_avg"] < 1e6


def test_unreachable_target_is_reported_and_lambda_stays_capped_and_finite(idx_dir, tmp_path):
    out = tmp_path / "r"
    r = invoke(
        "train",
        "--out",
        out,
        "--epochs",
        3,
        "--target-dsm",
        1e-9,
        "--set",
        "train.constraint.lam_max=2",
        "--set",
        "train.constraint.step_size=0.5",
        *tiny_train_args(idx_dir),
    )
    assert r.exit_code == 0, r.output
    m = metrics(out)
    assert [e["constraint_status"] for e in m[1:]] == ["unreachable"] * 2
    assert all(e["lam"] == 2.0 and e["lam_at_max_steps"] == 4 for e in m[1:])
    assert "warning: epoch 3: the dsm target 1e-09 is not reached with λ at its cap 2" in r.output
    assert "unreachable" in r.output.splitlines()[-2]  # the final summary says so too
    assert all(math.isfinite(v) for e in m for v in e.values() if isinstance(v, float))
    assert all(torch.isfinite(v).all() for k, v in state(out).items() if k.startswith(("model.", "optim.")))


def test_gap_target_trains_on_the_iwae_gap_estimate(idx_dir, tmp_path):
    out = tmp_path / "r"
    r = invoke(
        "train",
        "--out",
        out,
        "--epochs",
        2,
        "--target-gap",
        0.5,
        "--set",
        "train.constraint.gap_k=4",
        *tiny_train_args(idx_dir),
    )
    assert r.exit_code == 0, r.output
    for e in metrics(out):
        assert e["constraint_measure"] == "gap" and e["constraint_target"] == 0.5
        assert e["gap_est"] >= 0 and math.isfinite(e["gap_est"]) and math.isfinite(e["constraint_avg"])
    assert load_run(out).config.train.constraint.measure == "gap"


def test_the_toml_equivalent_gives_the_same_config(idx_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 1\n[train.constraint]\ntarget = 3.0\nstep_size = 0.3\n")
    assert invoke("train", "--out", tmp_path / "toml", "--config", cfg, *tiny_train_args(idx_dir)).exit_code == 0
    assert (
        invoke(
            "train", "--out", tmp_path / "cli", "--epochs", 1, "--target-dsm", 3, *FAST, *tiny_train_args(idx_dir)
        ).exit_code
        == 0
    )
    assert load_run(tmp_path / "toml").config == load_run(tmp_path / "cli").config
    assert "[train.constraint]\ntarget = 3.0" in (tmp_path / "toml" / "config.toml").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lam", "0.1", "--target-dsm", "5"], "--lam 0.1 fixes λ and --target-dsm 5 learns it"),
        (["--target-dsm", "5", "--target-gap", "1"], "--target-dsm 5 and --target-gap 1 both given"),
        (["--target-dsm", "0"], "train.constraint.target"),
        (["--target-gap", "nan"], "train.constraint.target"),
        (["--set", "train.constraint.step_size=0.1"], "step_size is set but target is not"),
        (["--set", "train.lam=0.1", "--target-dsm", "5"], "train.lam and train.constraint.target are both set"),
        (["--set", "train.lam_warmup_epochs=2", "--target-dsm", "5"], "train.lam_warmup_epochs and"),
        (["--target-dsm", "5", "--set", "train.constraint.lam_init=100"], "lam_min <= lam_init <= lam_max"),
        (["--target-dsm", "5", "--set", "train.constraint.ema_decay=1"], "train.constraint.ema_decay"),
        (["--set", "train.constraint.target=5", "--set", "train.constraint.measure='kl'"], "train.constraint.measure"),
        (["--target-dsm", "5", "--set", "train.constraint.tolerance=1"], "unknown key"),
    ],
)
def test_bad_constraint_settings_are_one_clear_line(idx_dir, tmp_path, args, message):
    out = tmp_path / "r"
    r = invoke("train", "--out", out, "--epochs", 1, *tiny_train_args(idx_dir), *args)
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error:") and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists() or not (out / "checkpoint.safetensors").exists()


def test_resume_refuses_a_changed_target(idx_dir, tmp_path):
    out = tmp_path / "r"
    assert invoke("train", "--out", out, "--epochs", 1, "--target-dsm", 3, *tiny_train_args(idx_dir)).exit_code == 0
    r = invoke("train", "--out", out, "--resume", "--epochs", 2, "--target-dsm", 4, "--no-progress")
    assert r.exit_code == 1 and "train.constraint" in r.output and len(r.output.strip().splitlines()) == 1
    r = invoke("train", "--out", out, "--resume", "--epochs", 2, "--lam", 0.1, "--no-progress")
    assert r.exit_code == 1 and r.output.startswith("error:")


def test_evaluate_shows_the_target_next_to_what_the_run_reached(idx_dir, tmp_path):
    out = tmp_path / "r"
    assert invoke("train", "--out", out, "--epochs", 1, "--target-gap", 2, *tiny_train_args(idx_dir)).exit_code == 0
    tiny = [
        "n_test=16",
        "n_train=0",
        "elbo_samples=10",
        "dsm_samples=4",
        "iwae_k=10",
        "ais.steps=8",
        "ais.chains=2",
        "ais.leapfrog_steps=2",
        "batch_size=8",
    ]
    r = invoke("evaluate", out, "--no-progress", *[a for t in tiny for a in ("--set", t)])
    assert r.exit_code == 0, r.output
    assert "target: gap <= 2 during training (IWAE_k - ELBO, a lower bound: AIS gap above)" in r.output
