"""How gray levels become model inputs: binarization for a Bernoulli decoder, dequantization for a Gaussian one.

Binarization (``data.transform = "binarize"``, for a Bernoulli decoder): training images are re-sampled
x ~ Bernoulli(gray level) every time they are used (:class:`DynamicBinarizer`, driven by a seeded generator whose
state is checkpointed); evaluation sets are binarized once with a fixed seed (:func:`binarize_fixed`) so that every
estimate for one data point sees the same binary image.

Dequantization (``data.transform = "dequantize"``, for a Gaussian decoder on gray levels): the standard uniform
dequantization of 8-bit pixels, x = (pixel + u)/256 with u ~ U[0, 1) per pixel (Theis et al. 2016, "A note on the
evaluation of generative models"), re-drawn every time an image is used in training and drawn once with a fixed seed
for evaluation sets (:func:`dequantize_fixed`). Log-likelihoods are then densities in nats per image on [0, 1]^D; by
Jensen's inequality the discrete 8-bit model P(pixel) = ∫ p(x) dx over the pixel's cube satisfies
log P(pixel) ≥ E_u log p((pixel + u)/256) − D·log 256 (:func:`discrete_log_likelihood_bound`; D = 784 for MNIST:
−4347.4 nats).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "TRANSFORMS",
    "binarize_fixed",
    "dequantize_fixed",
    "fixed_inputs",
    "discrete_log_likelihood_bound",
    "DynamicBinarizer",
]

TRANSFORMS = ("binarize", "dequantize")  # the values of data.transform


def binarize_fixed(images: Tensor, seed: int) -> Tensor:
    """One fixed binarization x ~ Bernoulli(images) drawn with ``seed`` (for evaluation sets)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images, generator=g)


def dequantize_fixed(images: Tensor, seed: int) -> Tensor:
    """One fixed uniform dequantization x = (pixel + u)/256, u ~ U[0, 1), drawn with ``seed`` (for evaluation sets).

    ``images`` are gray levels pixel/255 (as loaded); the result lies in [pixel/256, (pixel + 1)/256) ⊂ [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return _dequantize(images, g)


def _dequantize(images: Tensor, generator: torch.Generator) -> Tensor:
    """(pixel + u)/256; a sum that rounds up to pixel + 1 in floating point (u within an ulp of 1) is put back just
    below the bin's upper edge, so x always lies in [pixel/256, (pixel + 1)/256)."""
    pixels = torch.round(images * 255.0)
    x = (pixels + torch.rand(images.shape, generator=generator, dtype=images.dtype)) / 256.0
    top = (pixels + 1.0) / 256.0  # exact: a power-of-two division
    return torch.minimum(x, torch.nextafter(top, torch.zeros_like(top)))


def fixed_inputs(images: Tensor, transform: str, seed: int) -> Tensor:
    """The fixed evaluation inputs for ``data.transform``: :func:`binarize_fixed` or :func:`dequantize_fixed`."""
    if transform == "binarize":
        return binarize_fixed(images, seed)
    if transform == "dequantize":
        return dequantize_fixed(images, seed)
    raise ValueError(f"unknown data.transform {transform!r}: use one of {list(TRANSFORMS)}")


def discrete_log_likelihood_bound(log_density: Tensor | float, dim: int) -> Tensor | float:
    """A lower bound on the discrete 8-bit log-likelihood from a density on dequantized data: for
    x = (pixel + u)/256, log P(pixel) ≥ E_u log p(x) − D·log 256 (Jensen; D = ``dim`` pixels). Nats per image."""
    return log_density - dim * math.log(256.0)


class DynamicBinarizer:
    """Shuffled mini-batches of a gray-level training set, re-binarized (or, with ``transform="dequantize"``,
    re-dequantized: x = (pixel + u)/256) each time an image is used.

    All randomness (the order of each epoch and the Bernoulli or uniform draws) comes from one CPU generator seeded
    with ``seed``; its state (:meth:`state` / :meth:`set_state`) is all that is needed to resume exactly.
    """

    def __init__(
        self, images: Tensor, batch_size: int, seed: int, *, drop_last: bool = False, transform: str = "binarize"
    ):
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}: use one of {list(TRANSFORMS)}")
        self.images = images
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def epoch(self):
        """Yield the batches of one epoch (``[batch, 784]`` float32 on the CPU; binary, or dequantized in [0, 1))."""
        order = torch.randperm(len(self.images), generator=self.generator)
        for i in range(len(self)):
            gray = self.images[order[i * self.batch_size : (i + 1) * self.batch_size]]
            if self.transform == "dequantize":
                yield _dequantize(gray, self.generator)
            else:
                yield torch.bernoulli(gray, generator=self.generator)

    def state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)
