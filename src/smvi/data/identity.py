"""What data is: a content digest of loaded images and labels, and digests of the files they came from.

A run records what it was trained on (``data.json``, :class:`smvi.store.records.DataIdentity`); every stage compares
the data it is about to score with it (:func:`smvi.stages.trained.open_stage`). Comparing the loaded arrays rather than
file names makes every source compare the same way: MNIST (its published MD5s, verified on load), IDX files (their
SHA-256 names the files that changed) and arrays passed through the Python API.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from smvi.data.loading import MNIST_FILES, ImageData, file_hexdigest, idx_file

__all__ = ["content_digest", "file_digests"]


def content_digest(data: ImageData) -> str:
    """SHA-256 (hex) of the images and labels of both splits as loaded: each array's name, shape and bytes (images
    float32, labels int64), in a fixed order. The same images give the same digest wherever they came from."""
    h = hashlib.sha256()
    for name, dtype in (("train_x", np.float32), ("train_y", np.int64), ("test_x", np.float32), ("test_y", np.int64)):
        a = np.ascontiguousarray(getattr(data, name).detach().cpu().numpy(), dtype=dtype)
        h.update(f"{name}:{list(a.shape)}:{a.dtype.str};".encode())
        h.update(memoryview(a).cast("B"))  # pyright: ignore[reportArgumentType] -- numpy arrays are buffers; its stubs omit it
    return h.hexdigest()


def file_digests(dataset: str, directory: str | Path | None) -> dict[str, str]:
    """Each source file's digest by file name: MNIST's published MD5s (``md5:...``; :func:`smvi.data.loading.load_mnist`
    refuses any other file) or, for ``idx``, the SHA-256 of each IDX file's bytes as stored (``sha256:...``, plain or
    ``.gz``). A file that cannot be read is left out (loading it reports why)."""
    if dataset == "mnist":
        return {name: f"md5:{spec.md5}" for name, spec in MNIST_FILES.items()}
    out = {}
    if directory:
        for name in MNIST_FILES:
            path = idx_file(directory, name)
            try:
                out[path.name] = "sha256:" + file_hexdigest(path, "sha256")
            except OSError:
                pass
    return out
