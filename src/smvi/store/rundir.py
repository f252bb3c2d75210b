"""The run directory: the only code that knows its layout, its lock and the run's identity (torch-free).

A run directory holds::

    config.toml              the resolved RunConfig, ending with a ``# smvi fingerprint ...`` line (marks it complete)
    checkpoint.safetensors   after the last finished epoch (:mod:`smvi.store.checkpoint`)
    metrics.jsonl            one JSON line per finished epoch
    eval.json, ssl.json, convergence.json, gaps.json, pictures.json, ssl_refined.json    result records
                             (:mod:`smvi.store.records`)
    eval.partial.json        an unfinished ``smvi evaluate``'s scored points (resumed, then removed with eval.json)
    samples.png, reconstructions.png, latents.png    the pictures that pictures.json describes (``smvi pictures``)
    ssl_features.npz         the encoder means the robust SSL protocol scored (named, with its SHA-256, in ssl.json)
    ssl_refined_encoder.npz, ssl_refined_refined.npz    the encoder means and refined posteriors' means smvi
                             ssl-refined scored (named in ssl_refined.json)
    data.json                what training used (records.DataIdentity: kind, location, content digest); absent in
                             runs trained before it existed
    .lock                    held (flock) by the one process writing the run

**Identity.** :func:`fingerprint` is the SHA-256 of the canonical JSON (sorted keys, compact) of the run's config dumped
without its default values, minus the settings that may change without changing the run: ``train.epochs``,
``train.device``, ``train.tensorboard`` (where curves are logged) and, for ``data.dataset = "mnist"`` (MD5-verified
wherever it lies), ``data.data_dir``. Leaving out defaults keeps the fingerprint of existing runs when a new setting
with a default is added. Checkpoints and result records carry it; a checkpoint written before it existed gets it from
the config in its header.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smvi.settings.run import ConfigError, RunConfig, build_config, config_to_toml, dotted_items
from smvi.store.atomic import atomic_write_bytes, atomic_write_text, temporary_files
from smvi.store.records import (
    DataIdentity,
    Integrity,
    PictureKind,
    R,
    Record,
    RecordError,
    dump_record,
    parse_record,
    record_integrity,
    staleness,
)

__all__ = [
    "RunError",
    "RunDamaged",
    "RunBusy",
    "RunDir",
    "hold_lock",
    "path_text",
    "fingerprint",
    "identity",
    "identity_change",
    "identity_diff",
    "config_from_dump",
    "read_bounded",
    "config_files",
    "sweep_paths",
    "MAX_READ",
]

_CONFIG, _CHECKPOINT, _METRICS, _LOCK = "config.toml", "checkpoint.safetensors", "metrics.jsonl", ".lock"
_DATA = "data.json"  # the training data's identity (records.DataIdentity); not part of the fingerprint
_RECORDS = {
    "eval": "eval.json",
    "ssl": "ssl.json",
    "convergence": "convergence.json",
    "gaps": "gaps.json",
    "pictures": "pictures.json",
    "ssl_refined": "ssl_refined.json",
}
_PARTIALS = {"eval": "eval.partial.json"}  # a stage's progress so far (records.EvalPartial), gone with its record
_PICTURES: dict[PictureKind, str] = {
    "samples": "samples.png",
    "reconstructions": "reconstructions.png",
    "latents": "latents.png",
}
_ARRAYS = {  # arrays a record names with its SHA-256
    "ssl_features": "ssl_features.npz",
    "ssl_refined_encoder": "ssl_refined_encoder.npz",
    "ssl_refined_refined": "ssl_refined_refined.npz",
}
_TRAINING = (_CONFIG, _CHECKPOINT, _METRICS)
_TRAINING = (_CONFIG, _CHECKPOINT, _METRICS)  # data.json goes with them on --overwrite (clear)
_MARK = re.compile(r"^# smvi fingerprint ([0-9a-f]{64})\s*$")
_NOT_IDENTITY = {"train.epochs", "train.device", "train.tensorboard"}
# The keys every config.toml written before the fingerprint line had: such a file missing one was truncated.
_LEGACY_KEYS = {
    "model": (
        "z_dim",
        "encoder_hidden",
        "decoder_hidden",
        "activation",
        "likelihood",
        "decoder_last_scale",
        "encoder_last_scale",
    ),
    "data": ("dataset", "monitor_size", "eval_seed"),
    "train": (
        "lam",
        "lam_warmup_epochs",
        "epochs",
        "batch_size",
        "lr",
        "n_samples",
        "seed",
        "device",
        "precision",
        "max_bad_steps",
    ),
}
_SWEEP_CONFIG, _SWEEP_STATUS, _SWEEP_RUNS = "sweep.toml", "sweep_status.json", "runs"
MAX_READ = 64 << 20  # bytes; no run file smvi reads is larger (checkpoint headers: see epochs_done)


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (exists, missing, locked, damaged, mismatched, unwritable);
    one-line message naming the problem and the fix."""


class RunDamaged(RunError):
    """A run file that is damaged (truncated, unreadable, edited): ``problem`` says what, the message adds the fix
    for ``smvi train`` (a sweep, which never deletes a run, names its own)."""

    def __init__(self, problem: str, fix: str = "restore it or start over with --overwrite"):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


class RunBusy(RunError):
    """A run or sweep directory whose lock another live process holds."""


def path_text(path: str | Path, what: str = "run directory") -> Path:
    """``path`` as a Path, refusing (one line) an empty one (which would mean the current folder) and one whose name
    is not valid UTF-8 (records, checkpoints and reports store it as text)."""
    if str(path) == "":
        raise RunError(f"the {what} is empty: give a folder name")
    try:
        os.fsdecode(os.fsencode(path)).encode("utf-8")
    except UnicodeError:
        raise RunError(f"the {what} {os.fsencode(path)!r} is not valid UTF-8: choose a UTF-8 name") from None
    return Path(path)


_HELD: set[int] = set()  # the file descriptors of the locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child: let go of the parent's locks (the fd now points at /dev/null), so that they end with the
    parent even while the child (a pool worker) lives on."""
    for fd in list(_HELD):
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, fd)
            os.close(null)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def hold_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created if needed, never followed through a symbolic link)
    for the ``with`` block. The kernel drops it when its holder dies, however it dies, so a lock of a dead process is
    never in the way; a forked child does not keep it (:func:`_drop_inherited_locks`); the holder's pid is written in
    the file for the message. One-line :class:`RunBusy` while a live process holds it, :class:`RunError` if it
    cannot be created."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if os.path.islink(path):
            raise RunError(f"{path} is a symbolic link, not smvi's lock file: remove it and rerun") from None
        raise RunError(
            f"cannot create {path} ({e.strerror or e}): {what} is not writable; choose another folder"
        ) from None
    with os.fdopen(fd, "r+") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path} is not a regular file, not smvi's lock file: remove it and rerun")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunBusy(
                f"{what} is in use by another smvi process{pid}; wait for it to finish or use another folder"
            ) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        except OSError:
            pass  # the pid is for messages only
        _HELD.add(fd)
        try:
            yield
        finally:
            _HELD.discard(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)


# ---- identity -------------------------------------------------------------------------------------------------------
def _non_identity(cfg: RunConfig) -> set[str]:
    return set(_NOT_IDENTITY) | ({"data.data_dir"} if cfg.data.dataset == "mnist" else set())


def identity(cfg: RunConfig) -> dict[str, Any]:
    """What identifies a run: ``cfg`` dumped without defaults, minus the non-identity settings (module docstring)."""
    drop = _non_identity(cfg)
    tree = cfg.model_dump(mode="json", exclude_defaults=True)
    out = {}
    for section, values in tree.items():
        kept = {k: v for k, v in values.items() if f"{section}.{k}" not in drop}
        if kept:
            out[section] = kept
    return out


def fingerprint(cfg: RunConfig) -> str:
    """The run's identity as 64 hex digits (SHA-256 of :func:`identity` as canonical JSON); show ``[:16]``."""
    text = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def identity_diff(a: RunConfig, b: RunConfig) -> tuple[str, Any, Any] | None:
    """The first identity setting on which two configs differ, as ``(key, value in a, value in b)``; None when both
    are the same run (exactly when their fingerprints agree)."""
    fa, fb = dotted_items(a.model_dump(mode="json")), dotted_items(b.model_dump(mode="json"))
    drop = _non_identity(a) & _non_identity(b)
    for key in sorted(fa.keys() | fb.keys()):
        if key not in drop and fa.get(key) != fb.get(key):
            return key, fa.get(key), fb.get(key)
    return None


def identity_change(saved: RunConfig, new: RunConfig) -> str | None:
    """The first identity setting on which ``new`` differs from the run's ``saved`` config, as one phrase; None when
    both are the same run."""
    d = identity_diff(saved, new)
    return None if d is None else f"{d[0]} is {d[2]!r} but the run used {d[1]!r}"


def config_from_dump(tree: dict, source: str) -> RunConfig:
    """A RunConfig from a stored dump (a checkpoint header); one-line :class:`RunError` if it is not one."""
    try:
        return build_config(
            RunConfig,
            {s: {k: v for k, v in sec.items() if v is not None} for s, sec in tree.items() if isinstance(sec, dict)},
            source=f" in {source}",
        )
    except ConfigError as e:
        raise RunError(str(e)) from None


# ---- bounded reads --------------------------------------------------------------------------------------------------
def read_bounded(path: Path, limit: int = MAX_READ) -> bytes:
    """The bytes of the regular file ``path`` (FIFOs, devices and files over ``limit`` bytes are refused with a
    one-line :class:`RunError`; a missing file raises FileNotFoundError)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise RunError(f"{path} is not a regular file; remove or replace it")
    if st.st_size > limit:
        raise RunError(f"{path} is {st.st_size} bytes, more than smvi ever writes there ({limit}); it is not ours")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RunError(f"{path} grew past {limit} bytes while being read")
    return data


# ---- a sweep directory: sweep.toml, runs/<name>/, sweep_status.json, report/ ---------------------------------------
def sweep_paths(sweep_dir: str | Path) -> tuple[Path, Path, Path]:
    """``(sweep.toml, sweep_status.json, runs/)`` of a sweep directory."""
    root = Path(sweep_dir)
    return root / _SWEEP_CONFIG, root / _SWEEP_STATUS, root / _SWEEP_RUNS


def config_files(root: str | Path) -> list[Path]:
    """Every run's ``config.toml`` below ``root``, sorted, following links to directories (a results folder may link
    to another's runs instead of copying them) but entering each real directory once, so a link loop ends."""
    found, seen = [], set()
    for top, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        if _CONFIG in files:
            found.append(Path(top) / _CONFIG)
    return sorted(found)


# ---- the directory --------------------------------------------------------------------------------------------------
class RunDir:
    """One run directory. Every path, the lock, the config and ``epochs_done`` go through here."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / _CONFIG
        self.checkpoint_path = self.path / _CHECKPOINT
        self.metrics_path = self.path / _METRICS

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def record_path(self, kind: str) -> Path:
        """Where the record ``kind`` ∈ {eval, ssl, convergence, gaps, pictures} lives."""
        return self.path / _RECORDS[kind]

    @staticmethod
    def record_kinds() -> tuple[str, ...]:
        return tuple(_RECORDS)

    @staticmethod
    def record_file(kind: str) -> str:
        """The file name of the record ``kind`` (for messages and table headers)."""
        return _RECORDS[kind]

    def picture_path(self, which: PictureKind) -> Path:
        """Where the picture ``which`` ∈ {samples, reconstructions, latents} lives (a PNG; see ``pictures.json``)."""
        return self.path / _PICTURES[which]

    @staticmethod
    def picture_kinds() -> tuple[PictureKind, ...]:
        return tuple(_PICTURES)

    def read_picture(self, which: PictureKind) -> bytes | None:
        """The bytes of the picture ``which`` (None if absent); an unreadable one is a one-line :class:`RunError`."""
        try:
            return read_bounded(self.picture_path(which))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RunError(f"cannot read {self.picture_path(which)} ({e.strerror or e})") from None

    def array_path(self, which: str) -> Path:
        """Where the array file ``which`` ∈ {ssl_features, ssl_refined_encoder, ssl_refined_refined} lives (see the
        record that names it)."""
        return self.path / _ARRAYS[which]

    @staticmethod
    def array_files() -> tuple[str, ...]:
        """The file names of the array files (:meth:`array_path`): large, and rescored from, not reported."""
        return tuple(_ARRAYS.values())

    def write_array(self, which: str, data: bytes) -> None:
        """Write the array file ``which`` atomically; a failed write is a one-line :class:`RunError`."""
        with self.writing(f"{self.array_path(which).name} was not written, the previous one is intact"):
            atomic_write_bytes(self.array_path(which), data)

    def write_picture(self, which: PictureKind, data: bytes) -> None:
        """Write the picture ``which`` atomically; a failed write is a one-line :class:`RunError`."""
        with self.writing(f"{self.picture_path(which).name} was not written, the previous one is intact"):
            atomic_write_bytes(self.picture_path(which), data)

    def has_run(self) -> bool:
        """Whether any training file is present."""
        return any((self.path / n).exists() for n in _TRAINING)

    def require_trained(self) -> None:
        """Refuse (one line) a directory that is not a trained run."""
        if not self.path.is_dir():
            raise RunError(f"run directory {self.path} does not exist")
        if not self.config_path.exists() or not self.checkpoint_path.exists():
            raise RunError(
                f"{self.path} is not a trained run (needs {_CONFIG} and {_CHECKPOINT}); train it with smvi train"
            )

    # -- config
    def write_config(self, cfg: RunConfig) -> None:
        """Write ``config.toml`` atomically, ending with the fingerprint line that marks it complete."""
        atomic_write_text(self.config_path, config_to_toml(cfg) + f"\n# smvi fingerprint {fingerprint(cfg)}\n")

    def read_config(self) -> RunConfig:
        """The run's config. A missing, unreadable, truncated, damaged or hand-edited identity is refused in one line,
        never defaulted: the last line's fingerprint must match (files written before it must have every key)."""
        path = self.config_path
        try:
            text = read_bounded(path, 1 << 20).decode()
        except FileNotFoundError:
            raise RunError(f"{path} is missing: the run directory is damaged or not a run") from None
        except (OSError, UnicodeDecodeError) as e:
            raise RunDamaged(f"cannot read {path} ({e})") from None
        try:
            tree = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RunDamaged(f"{path} is damaged (not valid TOML: {e})") from None
        lines = text.rstrip("\n").splitlines()
        mark = _MARK.match(lines[-1]) if lines else None
        if mark is None:
            missing = [
                f"{s}.{k}"
                for s, keys in _LEGACY_KEYS.items()
                for k in keys
                if not isinstance(tree.get(s), dict) or k not in tree[s]
            ]
            if not missing and "fingerprint" in self.checkpoint_header():  # written by this version: it was cut
                raise RunDamaged(
                    f"{path} lost its last line (its fingerprint) though the checkpoint is of this "
                    "version: it was truncated"
                )
            if missing:
                raise RunDamaged(
                    f"{path} is incomplete (no {missing[0]}; {len(missing)} keys missing): it was truncated or damaged"
                )
        try:
            cfg = build_config(RunConfig, tree, source=f" in {path}")
        except ConfigError as e:
            raise RunDamaged(str(e), f"restore {path} or start over with --overwrite") from None
        if mark is not None and mark.group(1) != fingerprint(cfg):
            raise RunDamaged(
                f"{path} does not match its fingerprint line: it was damaged or its identity edited by "
                "hand (only train.epochs, train.device and train.tensorboard may change)"
            )
        return cfg

    def fingerprint(self) -> str:
        return fingerprint(self.read_config())

    # -- the training data
    @property
    def data_path(self) -> Path:
        return self.path / _DATA

    def read_data(self) -> DataIdentity | None:
        """What the run was trained on (None for a run trained before ``data.json`` existed); a damaged file is a
        one-line :class:`RunError`."""
        try:
            raw = read_bounded(self.data_path, 1 << 20)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RunError(f"cannot read {self.data_path} ({e.strerror or e})") from None
        try:
            return DataIdentity.model_validate_json(raw)
        except ValidationError as e:
            raise RunError(
                f"{self.data_path} is damaged ({e.error_count()} problem(s), first: "
                f"{e.errors()[0]['msg']}); restore it, or delete it to check this run's data as for runs "
                "trained before data.json existed"
            ) from None

    def write_data(self, ident: DataIdentity) -> None:
        """Record (atomically) what the run is trained on."""
        with self.writing(f"{_DATA} was not written"):
            atomic_write_text(self.data_path, ident.model_dump_json(indent=2) + "\n")

    # -- progress
    def checkpoint_header(self) -> dict[str, str]:
        """The checkpoint's safetensors metadata, read without torch and without verifying its digest ({} if none).
        A header that cannot be read, or a file shorter than its header says (truncated), is :class:`RunDamaged`."""
        path = self.checkpoint_path
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): a FIFO would block
                raise RunError(f"{path} is not a regular file; remove or replace it")
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > MAX_READ:
                    raise ValueError(f"length {n}")
                header = json.loads(f.read(n))
                size = os.fstat(f.fileno()).st_size
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except FileNotFoundError:
            return {}
        except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise RunDamaged(f"{path}: damaged checkpoint header ({e})", "start over with --overwrite") from None
        if size < 8 + n + max(ends, default=0):
            raise RunDamaged(
                f"{path} is truncated ({size} of {8 + n + max(ends)} bytes)", "start over with --overwrite"
            )
        meta = header.get("__metadata__")
        return meta if isinstance(meta, dict) else {}

    def epochs_done(self) -> int:
        """Epochs in the checkpoint (0 without one), from its header alone (loading it verifies the digest)."""
        meta = self.checkpoint_header()
        if not meta:
            return 0
        try:
            return int(json.loads(meta["progress"])["epoch"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RunDamaged(
                f"{self.checkpoint_path}: damaged checkpoint header (no progress.epoch)", "start over with --overwrite"
            ) from None

    def metrics_epochs(self) -> int | None:
        """The last epoch in ``metrics.jsonl`` (None without one; a torn last line is ignored)."""
        try:
            text = read_bounded(self.metrics_path).decode(errors="replace")
        except FileNotFoundError:
            return None
        epoch = None
        for line in text.splitlines():
            try:
                epoch = int(json.loads(line)["epoch"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
                break
        return epoch

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records of ``metrics.jsonl`` in order ([] without one); reading stops at the first line that is
        not a JSON object with an ``epoch`` (a torn last line), and a damaged file is a one-line :class:`RunError`."""
        try:
            text = read_bounded(self.metrics_path).decode(errors="replace")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RunError(f"cannot read {self.metrics_path} ({e.strerror or e})") from None
        out = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int):
                break
            out.append(rec)
        return out

    # -- records
    def read_record(self, kind: str) -> Record | None:
        """The record ``kind`` (None if absent); a damaged one raises one-line :class:`~smvi.store.records.RecordError`.
        Old dict-shaped files are upgraded (fingerprint from this run's config.toml)."""
        path = self.record_path(kind)
        try:
            raw = read_bounded(path)
        except FileNotFoundError:
            return None
        except RunError as e:
            raise RecordError(str(e)) from None
        except OSError as e:
            raise RecordError(f"cannot read {path} ({e.strerror or e})") from None
        return parse_record(kind, raw, str(path), self.fingerprint)

    def edited(self, kind: str) -> str | None:
        """The one-line problem of a record ``kind`` whose content no longer matches its digest (edited by hand or
        damaged after it was written: :meth:`record_integrity`), with its fix; None for any other record or none."""
        if self.record_integrity(kind) != "edited":
            return None
        return (
            f"{self.record_file(kind)} does not match its digest (edited or damaged after it was written; the digest "
            "catches accidents, it is no signature): recompute it with --overwrite"
        )

    def record_integrity(self, kind: str) -> Integrity:
        """Whether the record ``kind`` is as written (:func:`smvi.store.records.record_integrity`: ok, edited, or no
        digest -- also for a missing or unreadable file, which :meth:`read_record` reports)."""
        try:
            return record_integrity(read_bounded(self.record_path(kind)))
        except (RunError, OSError):
            return "no digest"

    def current_record(self, kind: str, settings=None) -> tuple[Record | None, str | None]:
        """``(record, why_stale)``: the record ``kind`` and None if it is current for this run (its fingerprint and
        epochs done, and ``settings`` when given), else the reason. A missing or damaged record is ``(None, why)``."""
        try:
            rec = self.read_record(kind)
        except RecordError as e:
            return None, str(e)
        if rec is None:
            return None, "missing"
        return rec, staleness(rec, self.fingerprint(), self.epochs_done() or self.metrics_epochs() or 0, settings)

    # -- a stage's progress
    def partial_path(self, kind: str) -> Path:
        """Where the stage ``kind`` (eval) keeps its progress until it writes its record."""
        return self.path / _PARTIALS[kind]

    def read_partial(self, kind: str, settings) -> tuple[Record | None, str | None]:
        """``(progress, why_not)``: the stage's saved progress and None when it is for this run, its epochs done and
        ``settings``; else None and why it cannot be used (missing, damaged, stale)."""
        path = self.partial_path(kind)
        try:
            rec = parse_record(f"{kind}_partial", read_bounded(path), str(path), self.fingerprint)
        except FileNotFoundError:
            return None, "missing"
        except (RunError, RecordError, OSError) as e:
            return None, str(e)
        why = staleness(rec, self.fingerprint(), self.epochs_done() or self.metrics_epochs() or 0, settings)
        return (rec, None) if why is None else (None, why)

    def write_partial(self, kind: str, progress: R) -> None:
        """Save the stage's progress atomically (a failed write is a one-line :class:`RunError`)."""
        text, _ = dump_record(progress)
        with self.writing(f"{self.partial_path(kind).name} was not written, the previous one is intact"):
            atomic_write_text(self.partial_path(kind), text)

    def drop_partial(self, kind: str) -> None:
        self.partial_path(kind).unlink(missing_ok=True)

    def write_record(self, kind: str, record: R) -> R:
        """Write ``record`` atomically as the run's ``kind`` record (non-finite numbers as null, noted); returns it as
        it reads back. A failed write is a one-line :class:`RunError` (the previous file is intact)."""
        text, written = dump_record(record)
        with self.writing(f"{self.record_path(kind).name} was not written, the previous one is intact"):
            atomic_write_text(self.record_path(kind), text)
        return written

    # -- writing
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's exclusive lock so two processes never write it (:func:`hold_lock`: released on exit or
        death, never followed through a symbolic link)."""
        with hold_lock(self.path / _LOCK, f"run directory {self.path}"):
            yield

    def check_writable(self) -> None:
        """Refuse (one line) a directory where a file cannot be created, before any expensive work."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".write-test.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise RunError(
                f"cannot write in {self.path} ({e.strerror or e}); fix permissions or free space first"
            ) from None

    @contextmanager
    def writing(self, what: str = "the files there are intact") -> Iterator[None]:
        """Turn a failed write (disk full, permissions) into one-line :class:`RunError`."""
        try:
            yield
        except OSError as e:
            raise RunError(
                f"cannot write in {self.path} ({e.strerror or e}); {what}: free space or fix permissions, then rerun"
            ) from None

    def clear(self, *, overwrite: bool) -> None:
        """Remove temporary files left by a killed writer and, with ``overwrite``, the previous run's training files
        and every result record, stage progress, picture and array file (they describe the model being replaced)."""
        names = (
            _TRAINING
            + (_DATA,)
            + tuple(_RECORDS.values())
            + tuple(_PARTIALS.values())
            + tuple(_PICTURES.values())
            + tuple(_ARRAYS.values())
        )
        for name in names:
            for tmp in temporary_files(self.path / name):
                tmp.unlink(missing_ok=True)
            if overwrite:
                (self.path / name).unlink(missing_ok=True)
