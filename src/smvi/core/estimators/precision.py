"""Reduced precision for the estimators: where bf16 may be used without changing what they estimate, and whether the
hardware supports it.

``precision="bf16"`` puts the model's matrix products in bfloat16 in exactly the places that are safe (through the
model's explicit decoder pass, :mod:`smvi.core.explicit`, when it has one; else by bf16 autocast); ``"auto"`` is bf16
where the hardware has bf16 units (:func:`native_bf16`), else fp32 (:func:`resolve_precision`):

- AIS/BDMC (:mod:`.hmc`): the leapfrog *force*, i.e. the z-gradient of the log joint (the decoder's forward and
  input-gradient pass). Positions, momenta, the energies of the Metropolis–Hastings test and the importance weights
  stay in the model's dtype (fp32) or fp64, so the estimator stays exact: see :func:`smvi.core.estimators.hmc.hmc_step`.
- IWAE (:mod:`.iwae`): the decoder's log-likelihood pass. Here the bf16 value enters the estimate itself, so this is
  an approximation whose error is measured (tests/test_estimators_precision.py, benchmarks/run.py); the log-weights are
  summed and combined in fp64.

Detection: CPU autocast to bfloat16 always works in torch (without native bf16 units, i.e. no ``avx512_bf16`` or AMX,
``torch.cpu._is_avx512_bf16_supported()`` / ``_is_amx_tile_supported()`` are False and the products are emulated:
correct, but not faster; :func:`check_precision` then warns once per call site). CUDA needs
``torch.cuda.is_bf16_supported(including_emulation=False)``; other device types need
``torch.amp.is_autocast_available``. A model computing in float64 is refused too: autocast leaves float64 alone, so
"bf16" would be silently ignored.

Everything that is meant to be exact (fp32 energies, fp32 forces, IWAE's fp32 passes) runs under :func:`exact_matmul`,
so a global ``torch.set_float32_matmul_precision("medium")`` (bf16-input fp32 products, much faster for training on
CPUs with AMX) cannot leak into the estimators.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Literal

import torch

__all__ = [
    "Precision",
    "PRECISIONS",
    "check_precision",
    "native_bf16",
    "resolve_precision",
    "force_autocast",
    "exact_matmul",
]

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")  # what the estimators compute in; "auto" resolves to one of them


def resolve_precision(precision: Precision, device: torch.device | str) -> Literal["fp32", "bf16"]:
    """``"auto"`` as the precision it stands for on ``device``: ``"bf16"`` where the hardware has bf16 units
    (:func:`native_bf16`), else ``"fp32"``; any other value unchanged. Where bf16 is allowed at all, and why it keeps
    AIS exact and IWAE within its measured error, is this module's docstring."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bf16 products in hardware (CPU: AVX512-BF16 or AMX; CUDA: compute capability ≥ 8)."""
    device = torch.device(device)
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        )
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return False


def _bf16_unsupported(device: torch.device) -> str | None:
    """Why bf16 autocast cannot run on ``device``, or None when it can."""
    if device.type == "cpu":
        return None  # torch's CPU autocast always supports bfloat16 (emulated where the CPU lacks bf16 units)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} has no bf16 support (torch.cuda.is_bf16_supported() is False)"
        return None
    if not torch.amp.is_autocast_available(device.type):
        return f"torch has no autocast for device type {device.type!r}"
    return None


def check_precision(precision: str, device: torch.device, dtype: torch.dtype) -> None:
    """Validate ``precision`` for a model computing in ``dtype`` on ``device``; raise a one-line ValueError if not."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return
    why = _bf16_unsupported(torch.device(device))
    if why is not None:
        raise ValueError(f"precision='bf16' cannot run on {device}: {why}; use precision='fp32'")
    if dtype != torch.float32:
        raise ValueError(
            f"precision='bf16' needs a float32 model (autocast leaves {dtype} alone), got {dtype}; "
            "use precision='fp32' or model.float()"
        )
    if torch.device(device).type == "cpu" and not native_bf16("cpu"):
        warnings.warn(
            "precision='bf16' on a CPU without bf16 units (no avx512_bf16 or AMX): the result is as exact, "
            "but bf16 is emulated and usually slower than fp32",
            RuntimeWarning,
            stacklevel=3,
        )


@contextlib.contextmanager
def exact_matmul():
    """Full-precision float32 matrix products inside, whatever ``torch.set_float32_matmul_precision`` says outside
    ("medium" lets oneDNN/cuBLAS round fp32 products' inputs to bf16/TF32). Restores the caller's setting."""
    before = torch.get_float32_matmul_precision()
    if before == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def force_autocast(precision: str, device: torch.device | str):
    """The context the reduced-precision passes run in: bf16 autocast for ``"bf16"``; for ``"fp32"`` autocast
    *disabled*, so that "fp32" holds even inside a caller's autocast region."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
