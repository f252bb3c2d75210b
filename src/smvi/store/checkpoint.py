"""Safe checkpoints (atomic writes live in :mod:`smvi.store.atomic`, re-exported here).

A checkpoint is one safetensors file — the model's weights (``model.*``), Adam's state (``optim.*``) and the RNG states
(``rng.*``) as tensors, and the progress, optimizer hyper-parameters and config as JSON strings in its header — so
loading it never unpickles anything. The header also holds a SHA-256 of everything else: an integrity check that refuses
a damaged (truncated, bit-flipped, half-copied) checkpoint, not authentication -- anyone can edit a checkpoint and
recompute the digest. A checkpoint never holds a non-finite weight or optimizer moment (writing one is refused, and so
is loading one). Since the run-directory layer (:mod:`smvi.store.rundir`), the header may also hold the run's
``fingerprint``; older checkpoints without it stay valid (their fingerprint is computed from the config in their
header).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from smvi.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, temporary_files  # noqa: F401

FORMAT = "smvi-checkpoint-2"  # 2: with a SHA-256 digest


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, damaged, foreign or of another architecture); one-line message."""


@dataclass(frozen=True)
class Checkpoint:
    model: dict[str, Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    rng: dict[str, Tensor]
    progress: dict[str, Any]
    config: dict[str, Any]
    fingerprint: str | None = None  # absent in checkpoints written before the run-directory layer


def _digest(tensors: dict[str, Tensor], meta: dict[str, str]) -> str:
    """SHA-256 of the header fields and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(meta):
        h.update(f"{key}={meta[key]}\n".encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{list(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _nonfinite(tensors: dict[str, Tensor]) -> list[str]:
    return sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, Tensor],
    progress: dict[str, Any],
    config: dict[str, Any],
    fingerprint: str | None = None,
) -> None:
    """Write a checkpoint atomically (see the module docstring for the layout); ``fingerprint`` is the run's identity
    (:func:`smvi.store.rundir.fingerprint`), stored in the header when given.

    Raises :class:`CheckpointError`, writing nothing, if a weight or optimizer moment is not finite.
    """
    tensors: dict[str, Tensor] = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    bad = _nonfinite(tensors)
    if bad:
        raise CheckpointError(
            f"{path}: refusing to save non-finite values in {bad[:3]}; the previous checkpoint is kept"
        )
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    meta = {
        "format": FORMAT,
        "progress": json.dumps(progress, allow_nan=False),
        "param_groups": json.dumps(opt["param_groups"]),
        "config": json.dumps(config),
    }
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    meta["sha256"] = _digest(tensors, meta)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint without unpickling (a pickle is never opened, let alone run).

    Raises :class:`CheckpointError` on anything but an intact smvi checkpoint: a pickle or other foreign file, a
    truncated, damaged or edited one (its SHA-256 no longer matches), or one holding non-finite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an smvi checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    digest = meta.pop("sha256", None)
    if digest != _digest(tensors, meta):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint was damaged or edited; do not trust it")
    try:
        progress = json.loads(meta["progress"])
        groups = json.loads(meta["param_groups"])
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint header ({e})") from None
    if not (isinstance(progress, dict) and isinstance(groups, list) and isinstance(config, dict)):
        raise CheckpointError(f"{path}: damaged checkpoint header (progress, param_groups or config of the wrong type)")
    model, rng, opt_state = {}, {}, {}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        idx, _, name = rest.partition(".")
        if kind == "model":
            model[rest] = value
        elif kind == "rng":
            rng[rest] = value
        elif kind == "optim" and idx.isdigit() and name:
            opt_state.setdefault(int(idx), {})[name] = value
        else:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} in checkpoint")
    bad = _nonfinite({**model, **{f"optim.{i}.{n}": v for i, s in opt_state.items() for n, v in s.items()}})
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {bad[:3]}; this checkpoint cannot be used")
    return Checkpoint(
        model, {"state": opt_state, "param_groups": groups}, rng, progress, config, meta.get("fingerprint")
    )


def load_weights(model: torch.nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model``, turning key and shape mismatches into one clear :class:`CheckpointError`."""
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    shapes = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        detail = ", ".join(
            f"{label}: {sorted(keys)[:3]}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes))
            if keys
        )
        raise CheckpointError(f"{source}: weights do not fit this model's architecture ({detail})")
    model.load_state_dict(state)
