"""log p(x|z) of an MLP decoder and its z-gradient in one explicit pass: the forward keeps each hidden layer's
activation derivative, the backward is one matrix product per layer. No autograd graph, no tape, no hooks.

For a decoder o = W_L·h_{L−1} + b_L, h_i = σ(W_i·h_{i−1} + b_i), h₀ = z, and a likelihood ℓ(x, o):

    ∇_z ℓ = W₁ᵀ (σ'(a₁) ⊙ W₂ᵀ (… σ'(a_{L−1}) ⊙ W_Lᵀ ∂ℓ/∂o))

with ∂ℓ/∂o = x − sigmoid(o) for a Bernoulli decoder (logits o) and, for a Gaussian one (o = [μ, log s]),
∂ℓ/∂μ = (x − μ)/s², ∂ℓ/∂log s = ((x − μ)/s)² − 1. This is what the HMC force and IWAE need from the decoder
(:meth:`smvi.core.models.VAE.log_joint_and_grad`, :meth:`smvi.core.models.VAE.log_likelihood_at`).

``precision="fp32"``: the decoder's own modules in the model's dtype, so the value is the one
:meth:`~smvi.core.models.VAE.log_likelihood` gives, bit for bit. ``"bf16"``: the hidden layers run in bfloat16 as
autocast would run them (products with fp32 accumulation inside the kernel and a bf16 result, the bias, the
activation and its derivative on that bf16 result: each hidden value is rounded to bf16 once more before the next
product anyway), and the output layer's result is taken to fp32 for the likelihood, its derivative and the sum over
pixels. The value is then an approximation (see :mod:`smvi.core.estimators.precision` for where that is allowed).

An activation joins with one entry in :data:`DERIVATIVES` (σ'(a) from a and h = σ(a)); a decoder with any other
layer has no explicit pass (:func:`supports` is False) and callers keep autograd.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DERIVATIVES", "supports", "mlp_log_likelihood"]

_LOG_2PI = math.log(2 * math.pi)

DERIVATIVES = {
    nn.Softplus: lambda a, h: torch.sigmoid(a),  # β = 1; beyond the threshold (a > 20) sigmoid(a) is 1 in fp32
    nn.ReLU: lambda a, h: (a > 0).to(a.dtype),
    nn.Tanh: lambda a, h: 1 - h * h,
    nn.ELU: lambda a, h: torch.where(a > 0, 1.0, h + 1),  # α = 1
    nn.Sigmoid: lambda a, h: h * (1 - h),
}
"""σ'(a) of each supported activation module, from the pre-activation ``a`` and ``h = σ(a)``."""


def supports(decoder: nn.Module) -> bool:
    """Whether ``decoder`` is Linear, (activation, Linear)* with every activation in :data:`DERIVATIVES` at its default
    parameters (the derivatives above assume them)."""
    if not isinstance(decoder, nn.Sequential) or len(decoder) % 2 == 0:
        return False
    for i, m in enumerate(decoder):
        if i % 2 == 0 and not isinstance(m, nn.Linear):
            return False
        if i % 2 == 1 and (
            type(m) not in DERIVATIVES
            or (isinstance(m, nn.Softplus) and m.beta != 1)
            or (isinstance(m, nn.ELU) and m.alpha != 1)
        ):
            return False
    return True


_BF16: weakref.WeakKeyDictionary[nn.Linear, tuple[int, Tensor]] = weakref.WeakKeyDictionary()


def _bf16_weight(lin: nn.Linear) -> Tensor:
    """``lin.weight`` in bfloat16, cached until the weight changes (its version counter moves)."""
    version = lin.weight._version
    hit = _BF16.get(lin)
    if hit is None or hit[0] != version or hit[1].device != lin.weight.device or hit[1].shape != lin.weight.shape:
        hit = (version, lin.weight.detach().to(torch.bfloat16))
        _BF16[lin] = hit
    return hit[1]


def _linear(lin: nn.Linear, h: Tensor, bf16: bool) -> Tensor:
    """The layer's output: in the model's dtype, or in bf16 from bf16 inputs."""
    if not bf16:
        return lin(h)
    bias = None if lin.bias is None else lin.bias.to(torch.bfloat16)
    return F.linear(h.to(torch.bfloat16), _bf16_weight(lin), bias)


def _input_grad(lin: nn.Linear, g: Tensor, bf16: bool) -> Tensor:
    """gW: the gradient with respect to the layer's input, from the gradient ``g`` with respect to its output."""
    return g.to(torch.bfloat16) @ _bf16_weight(lin) if bf16 else g @ lin.weight


def _likelihood(likelihood: str, x: Tensor, o: Tensor, grad: bool) -> tuple[Tensor, Tensor | None]:
    """ℓ(x, o) summed over the last dimension and ∂ℓ/∂o (None unless ``grad``), as VAE.log_likelihood computes ℓ."""
    if likelihood == "bernoulli":
        value = -F.binary_cross_entropy_with_logits(o, x.expand_as(o), reduction="none").sum(-1)
        return value, (x - torch.sigmoid(o)) if grad else None
    mean, log_std = o.chunk(2, dim=-1)
    r = (x - mean) * torch.exp(-log_std)
    value = -(0.5 * r.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)
    return value, torch.cat([r * torch.exp(-log_std), r * r - 1], -1) if grad else None


def mlp_log_likelihood(
    decoder: nn.Sequential,
    likelihood: str,
    x: Tensor,
    z: Tensor,
    *,
    precision: str = "fp32",
    grad: bool = True,
    exact_value: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """log p(x|z) ``[..., N]`` and ∇_z log p(x|z) ``[..., N, z_dim]`` (None unless ``grad``) for x ``[N, x_dim]``,
    z ``[..., N, z_dim]``; ``likelihood`` "bernoulli" or "gaussian" as in :class:`~smvi.core.models.VAE`. Needs
    :func:`supports`; no autograd is involved (call it under ``torch.no_grad()`` or not, the result has no graph).

    ``exact_value=True`` with ``precision="bf16"``: the forward in full precision (the value is ``log_likelihood``'s)
    and only the backward's products in bf16: a different rounding of the gradient than the all-bf16 pass, for the
    trajectory ends of HMC (see :func:`smvi.core.estimators.hmc.hmc_step`)."""
    bf16 = precision == "bf16"
    forward_bf16 = bf16 and not exact_value
    with torch.no_grad():
        # the decoder's items: nn.Linear and activations alternating, which nn.Sequential types as Module (the ignores)
        layers = list(decoder)
        h, derivs = z, []
        for lin, act in zip(layers[0:-1:2], layers[1::2], strict=True):
            a = _linear(lin, h, forward_bf16)  # pyright: ignore[reportArgumentType]
            h = act(a)
            if grad:
                derivs.append(DERIVATIVES[type(act)](a, h))
        value, g = _likelihood(likelihood, x, _linear(layers[-1], h, forward_bf16).to(z.dtype), grad)  # pyright: ignore[reportArgumentType]
        if not grad:
            return value, None
        assert g is not None  # grad: _likelihood gave ∂ℓ/∂o
        for lin, d in zip(reversed(layers[2::2]), reversed(derivs), strict=True):
            g = _input_grad(lin, g, bf16) * d  # pyright: ignore[reportArgumentType]
        return value, _input_grad(layers[0], g, bf16).to(z.dtype)  # pyright: ignore[reportArgumentType]
