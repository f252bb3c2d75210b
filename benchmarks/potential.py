"""The ``ais_potential`` section of benchmarks/run.py: one HMC potential evaluation (the decoder's value and
z-gradient) per row at several row counts, by autograd, by a graph-free explicit pass, and by autograd in bf16."""

from __future__ import annotations

import torch
from harness import interleaved

from smvi.data.loading import ImageData, binarize_fixed


def _explicit_value_and_grad(model, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(z) + log p(x|z) and its z-gradient by smvi's explicit decoder pass (smvi.core.explicit), no graph."""
    value, grad = model.log_likelihood_and_grad(x, z)
    return model.log_prior(z) + value, grad - z


def bench_ais_potential(s: dict, model, data: ImageData) -> dict:
    """One evaluation of log p(x|z) and ∇_z log p(x|z) (an AIS leapfrog step's cost) at several numbers of rows
    (points × chains): autograd as smvi's HMC does it, an explicit graph-free pass, and autograd in bf16 autocast."""
    rows_list = (16, 128, 1024, 4096) if s["data"] == "mnist" else (4, 16)
    gray = data.test_x[: max(rows_list)]
    cases = {}
    for rows in rows_list:
        x = binarize_fixed(gray[torch.arange(rows) % len(gray)], seed=0)
        z = torch.randn(rows, model.z_dim)

        def autograd_pass(x=x, z=z, bf16=False):
            with torch.no_grad(), torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                zz = z.detach().requires_grad_(True)
                value = model.log_prior(zz) + model.log_likelihood(x, zz)
                return torch.autograd.grad(value.sum(), zz)

        cases[f"autograd_rows{rows}"] = autograd_pass
        cases[f"explicit_rows{rows}"] = torch.no_grad()(lambda x=x, z=z: _explicit_value_and_grad(model, x, z))
        cases[f"autograd_bf16_rows{rows}"] = lambda f=autograd_pass: f(bf16=True)
    res = interleaved(cases, max(2, s["rounds"] // 2), s["per_round"] * 2)
    r = rows_list[0]
    res["explicit_minus_autograd_grad_max_abs"] = float(
        (cases[f"explicit_rows{r}"]()[1] - cases[f"autograd_rows{r}"]()[0]).abs().max()
    )
    for k, v in res.items():
        if not isinstance(v, dict):
            continue
        v["us_per_row_cpu"] = v["cpu_ms"] * 1e3 / int(k.rsplit("rows", 1)[1])
    return res
