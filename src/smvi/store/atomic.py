"""Atomic files (torch-free): every artifact smvi writes goes to a temporary file in the same directory, is flushed
and fsynced, and is renamed into place, so a crash never leaves a partial file that is later trusted."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_dir", "temporary_files"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp alone makes it private, 0o600)


def temporary_files(path: str | Path) -> list[Path]:
    """Temporary files a killed :func:`atomic_write_bytes` to ``path`` may have left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def fsync_dir(path: str | Path) -> None:
    """Make renames in directory ``path`` durable (best effort: some file systems refuse a directory fsync)."""
    try:
        dir_fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_write_dir(out: str | Path, files: dict[str, bytes]) -> None:
    """Make ``files`` (name -> bytes) the whole content of directory ``out`` as one set: written into a temporary
    sibling directory, fsynced, then swapped in by renames; the old set is removed only once the new one is in place,
    and put back if the swap fails. Raises OSError (the previous directory intact) on failure."""
    out = Path(out)
    tmp = old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
        os.chmod(tmp, 0o777 & ~_umask())
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        tmp = None
        fsync_dir(out.parent)
    except OSError:
        if old is not None and not out.exists():
            os.replace(old / out.name, out)  # put the previous set back
        raise
    finally:
        for d in (tmp, old):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)
