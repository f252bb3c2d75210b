"""A small synthetic image set for examples, smoke tests and documentation that must run without MNIST.

Ten classes, each a fixed random 28×28 "prototype" (sparse bright strokes: uniform³), plus Gaussian pixel noise,
clipped to [0, 1] and quantized to 8 bits like IDX files. Labelled, so the semi-supervised evaluation runs on it too.
It only exercises the code paths: its numbers say nothing about MNIST.
"""

from __future__ import annotations

import numpy as np
import torch

from smvi.data.loading import ImageData

__all__ = ["synthetic_images"]


def synthetic_images(n_train: int = 1000, n_test: int = 500, *, seed: int = 0, noise: float = 0.15) -> ImageData:
    """``n_train`` + ``n_test`` labelled 28×28 gray images (``[n, 784]`` float32 in [0, 1], multiples of 1/255) from
    10 class prototypes plus N(0, ``noise``²) pixel noise; classes balanced and shuffled; deterministic in ``seed``."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 784)) ** 3

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        pixels = np.round(np.clip(protos[labels] + noise * rng.standard_normal((n, 784)), 0, 1) * 255)
        return torch.from_numpy((pixels / 255).astype(np.float32)), torch.from_numpy(labels.astype(np.int64))

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    return ImageData(train_x, train_y, test_x, test_y)
