"""Opening a file never runs code, damaged or foreign checkpoints are refused with one clear line, and every artifact
is written atomically.

A checkpoint is safetensors plus a SHA-256 in its header (see smvi.store.checkpoint): pickles are refused unopened, any
edited byte is caught by the digest, and a checkpoint of another architecture or run is named as such.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import stat
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import smvi
import smvi.store.checkpoint as C
from conftest import make_idx_dir, tiny_config
from smvi.settings.run import RunConfig, load_config
from smvi.stages.train import load_run, train
from smvi.store.rundir import RunDir, RunError, fingerprint

SRC = Path(smvi.__file__).parent

CHECKPOINT, CONFIG, METRICS = "checkpoint.safetensors", "config.toml", "metrics.jsonl"  # the run directory's files


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished one-epoch run (copied by the tests that damage it)."""
    root = tmp_path_factory.mktemp("safe")
    data = make_idx_dir(root / "idx")
    train(tiny_config(data), root / "run", progress=False)
    return root / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def resign(path: Path, tensors: dict, meta: dict) -> None:
    """Write tensors and header fields as a checkpoint with a *valid* digest (a crafted file, not a damaged one)."""
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    save_file(tensors, path, metadata={**meta, "sha256": C._digest(tensors, meta)})


def contents(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# ---- no code runs ---------------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this writes a file: the classic code-execution attack on pickle-based checkpoints."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"with open({str(self.marker)!r}, 'w') as f: f.write('pwned')",)


@pytest.mark.parametrize("container", ["pickle", "torch.save"])
def test_a_crafted_pickle_is_refused_and_never_runs(run, tmp_path, container):
    marker, control = tmp_path / "pwned", tmp_path / "control"
    ck = run / CHECKPOINT
    if container == "pickle":
        ck.write_bytes(pickle.dumps(Payload(marker)))
        pickle.loads(pickle.dumps(Payload(control)))
    else:
        torch.save({"model": Payload(marker)}, ck)
        torch.save({"model": Payload(control)}, tmp_path / "c.pt")
        torch.load(tmp_path / "c.pt", weights_only=False)
    assert control.exists()  # the payload is live: unpickling it would run it
    with pytest.raises(C.CheckpointError) as err:
        C.load_checkpoint(ck)
    assert "not a readable safetensors checkpoint" in one_line(err)
    with pytest.raises(C.CheckpointError):
        load_run(run)
    assert not marker.exists()


def test_nothing_in_the_package_can_unpickle():
    """No loader that can run code is even imported or called: pickle and friends, torch.load, yaml.load, numpy's
    allow_pickle, eval/exec."""
    modules = {"pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                hits += [f"{where} imports {n}" for n in names if n and n.split(".")[0] in modules]
            elif isinstance(node, ast.Call):
                f = node.func
                name = ast.unparse(f)
                if name in ("eval", "exec", "torch.load", "yaml.load") or name.endswith("unsafe_load"):
                    hits.append(f"{where} calls {name}")
                if any(k.arg == "allow_pickle" for k in node.keywords):
                    hits.append(f"{where} passes allow_pickle to {name}")
    assert hits == []


# ---- damaged or tampered files --------------------------------------------------------------------------------------
def flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def edit_header_epoch(path: Path) -> None:
    raw = path.read_bytes()
    i = raw.index(b'epoch\\": 1')
    path.write_bytes(raw[:i] + b'epoch\\": 7' + raw[i + len(b'epoch\\": 1') :])


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def huge_header_length(path: Path) -> None:
    path.write_bytes((2**62).to_bytes(8, "little") + path.read_bytes()[8:])


def plain_safetensors(path: Path) -> None:
    save_file({"w": torch.zeros(3)}, path)


def old_format_without_digest(path: Path) -> None:
    tensors, meta = contents(path)
    meta.pop("sha256")
    save_file(tensors, path, metadata={**meta, "format": "smvi-checkpoint-1"})


def stripped_digest(path: Path) -> None:
    tensors, meta = contents(path)
    meta.pop("sha256")
    save_file(tensors, path, metadata=meta)


def nan_weight_with_valid_digest(path: Path) -> None:
    tensors, meta = contents(path)
    tensors["model.decoder.0.weight"][0, 0] = float("nan")
    resign(path, tensors, meta)


def unknown_tensor_with_valid_digest(path: Path) -> None:
    tensors, meta = contents(path)
    resign(path, {**tensors, "evil.x": torch.zeros(1)}, meta)


def header_not_json_with_valid_digest(path: Path) -> None:
    tensors, meta = contents(path)
    resign(path, tensors, {**meta, "progress": "{epoch: 1"})


def missing(path: Path) -> None:
    path.unlink()


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    "damage, message",
    [
        (flip_last_byte, "checksum mismatch"),
        (edit_header_epoch, "checksum mismatch"),
        (stripped_digest, "checksum mismatch"),
        (truncate, "not a readable safetensors checkpoint"),
        (empty, "not a readable safetensors checkpoint"),
        (random_bytes, "not a readable safetensors checkpoint"),
        (huge_header_length, "not a readable safetensors checkpoint"),
        (plain_safetensors, "not an smvi checkpoint"),
        (old_format_without_digest, "not an smvi checkpoint"),
        (nan_weight_with_valid_digest, "non-finite values"),
        (unknown_tensor_with_valid_digest, "unexpected tensor 'evil.x'"),
        (header_not_json_with_valid_digest, "damaged checkpoint header"),
        (missing, "is missing"),
        (directory, "is missing"),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_one_line(run, damage, message):
    damage(run / CHECKPOINT)
    with pytest.raises((C.CheckpointError, smvi.stages.train.RunError)) as err:
        load_run(run)
    assert message in one_line(err) or "not a trained run" in str(err.value)
    with pytest.raises(C.CheckpointError) as err:
        C.load_checkpoint(run / CHECKPOINT)
    assert message in one_line(err) and CHECKPOINT in str(err.value)


def test_resume_refuses_a_damaged_checkpoint_and_changes_nothing(run):
    flip_last_byte(run / CHECKPOINT)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    config = load_config(run / CONFIG, overrides={"train.epochs": 2})
    with pytest.raises(C.CheckpointError, match="checksum mismatch"):
        train(config, run, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_refuses_damaged_rng_state_with_a_clear_message(run):
    tensors, meta = contents(run / CHECKPOINT)
    del tensors["rng.data"]
    resign(run / CHECKPOINT, tensors, meta)
    with pytest.raises(C.CheckpointError, match="damaged optimizer, RNG or progress state") as err:
        train(load_config(run / CONFIG, overrides={"train.epochs": 2}), run, resume=True, progress=False)
    one_line(err)


# ---- another architecture or another run ----------------------------------------------------------------------------
def test_weights_of_another_architecture_are_named(run):
    ck = C.load_checkpoint(run / CHECKPOINT)
    other = smvi.VAE(784, smvi.ModelConfig(z_dim=3, encoder_hidden=(8,), decoder_hidden=(16,)))
    with pytest.raises(C.CheckpointError, match="do not fit this model's architecture") as err:
        C.load_weights(other, ck.model, run / CHECKPOINT)
    assert "shape differs" in one_line(err) and "encoder.0.weight" in str(err.value)
    deeper = smvi.VAE(784, smvi.ModelConfig(z_dim=3, encoder_hidden=(16, 16), decoder_hidden=(16,)))
    with pytest.raises(C.CheckpointError, match="missing"):
        C.load_weights(deeper, ck.model, run / CHECKPOINT)


def test_a_run_whose_config_and_checkpoint_disagree_is_refused(run):
    """An identity edited by hand breaks config.toml's fingerprint line; a consistent config.toml of another run
    (model or λ: the whole identity, not only the model) is refused against the checkpoint."""
    text = (run / CONFIG).read_text()
    (run / CONFIG).write_text(text.replace('activation = "softplus"', 'activation = "tanh"'))
    with pytest.raises(RunError, match="fingerprint line") as err:
        load_run(run)
    one_line(err)
    for change in ({"model": {"activation": "tanh"}}, {"train": {"lam": 0.5}}):
        good = RunConfig.model_validate(
            {**tomllib.loads(text), **{s: {**tomllib.loads(text)[s], **d} for s, d in change.items()}}
        )
        RunDir(run).write_config(good)
        with pytest.raises(C.CheckpointError, match="belongs to another run") as err:
            load_run(run)
        assert next(iter(change)) in one_line(err)


@pytest.mark.parametrize(
    "setting, message", [("model.encoder_hidden=[8]", "model.encoder_hidden"), ("train.lam=0.3", "train.lam")]
)
def test_resuming_with_another_runs_checkpoint_is_refused(run, tmp_path, setting, message):
    """A checkpoint copied in from another run (same shapes or not) is named as foreign, not silently continued."""
    other = tmp_path / "other"
    data = Path(load_config(run / CONFIG).data.data_dir)
    train(tiny_config(data, setting), other, progress=False)
    shutil.copy(other / CHECKPOINT, run / CHECKPOINT)
    with pytest.raises(C.CheckpointError, match="belongs to another run") as err:
        train(load_config(run / CONFIG, overrides={"train.epochs": 2}), run, resume=True, progress=False)
    assert message in one_line(err)


# ---- atomic artifacts -----------------------------------------------------------------------------------------------
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    C.atomic_write_json(target, {"ok": 1})

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        C.atomic_write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert C.temporary_files(target) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_non_finite_json_is_refused_before_anything_is_written(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(ValueError):
        C.atomic_write_json(target, {"elbo": float("nan")})
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_artifacts_are_readable_like_any_new_file(trained):
    """mkstemp makes files private (0600); artifacts get the mode open() would give them (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for name in (CONFIG, CHECKPOINT, METRICS):
        assert stat.S_IMODE((trained / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_non_finite_model_is_never_written(run, tmp_path):
    model = smvi.VAE(784, smvi.ModelConfig(z_dim=3, encoder_hidden=(16,), decoder_hidden=(16,)))
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = float("inf")
    before = (run / CHECKPOINT).read_bytes()
    with pytest.raises(C.CheckpointError, match="refusing to save non-finite values"):
        C.save_checkpoint(
            run / CHECKPOINT,
            model=model,
            optimizer=torch.optim.Adam(model.parameters()),
            rng={"torch": torch.get_rng_state()},
            progress={"epoch": 9},
            config={},
        )
    assert (run / CHECKPOINT).read_bytes() == before and C.temporary_files(run / CHECKPOINT) == []


def test_checkpoint_round_trip_is_exact(run):
    """What load_checkpoint returns is what was saved: weights, Adam state, RNG states, progress and config."""
    ck = C.load_checkpoint(run / CHECKPOINT)
    tensors, meta = contents(run / CHECKPOINT)
    assert all(torch.equal(ck.model[k[6:]], v) for k, v in tensors.items() if k.startswith("model."))
    assert torch.equal(ck.rng["torch"], tensors["rng.torch"]) and ck.progress["epoch"] == 1
    assert ck.config == load_config(run / CONFIG).model_dump(mode="json")
    assert set(meta) == {"format", "progress", "param_groups", "config", "fingerprint", "sha256"}
    assert ck.fingerprint == fingerprint(load_config(run / CONFIG))
    assert {k.split(".")[0] for k in tensors} == {"model", "optim", "rng"}
