"""Budget of test-time refined-q SSL features (issue 25): how many steps of the gap split's local fit
(:func:`smvi.stages.gaps.fit_local`) close most of the amortization gap, and what a step costs per image.

Two measurements, printed as JSON:

1. **Gap closed against steps**, on a small trained model (``--run-dir``, or a VAE with 2×256 hidden units and z = 20
   trained here for ``--epochs`` on MNIST): for ``--images`` test images, the ELBO of the encoder's q and of the local
   fit after S steps (each S its own fit: the learning rate's cosine schedule depends on S), with 1000 common draws;
   the fraction closed is (ELBO_S − ELBO_enc) / (ELBO_Smax − ELBO_enc).
2. **Cost per image and step** of the paper's architecture (2×1024 softplus, z = 50; random weights: the cost does
   not depend on them) at the local fit's settings (16 draws per image and step), over a batch of ``--batch`` images.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/refined_q_budget.py [--run-dir RUN] [--threads 1] [--draws 16]
[--lr 0.01] [--dtype float64] [--no-cost]``. Times depend
on the machine's load; the script prints the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from smvi.core.models import VAE
from smvi.data.loading import fixed_inputs, load_data
from smvi.settings.run import ModelConfig, RunConfig
from smvi.stages.gaps import elbo_estimate, fit_local
from smvi.stages.train import load_run, train


def small_model(epochs: int, out: Path):
    cfg = RunConfig.model_validate(
        {
            "model": {"z_dim": 20, "encoder_hidden": [256, 256], "decoder_hidden": [256, 256]},
            "train": {"epochs": epochs, "batch_size": 256, "seed": 0},
        }
    )
    train(cfg, out, progress=False)
    return load_run(out)


def gap_closed(run, images: int, steps: list[int], *, draws: int = 16, lr: float = 1e-2, dtype=torch.float64) -> dict:
    data = load_data(run.config.data.dataset, run.config.data.data_dir)
    x = fixed_inputs(data.test_x[:images], run.config.data.transform, run.config.data.eval_seed).to(dtype)
    model = run.model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    enc = elbo_estimate(model, model.encode(x), x, seed=1)
    out = {
        "images": images,
        "draws": draws,
        "lr": lr,
        "dtype": str(dtype),
        "elbo_encoder": float(enc.mean()),
        "fits": [],
    }
    for s in steps:
        t0 = time.perf_counter()
        fit = fit_local(model, x, steps=s, n_samples=draws, lr=lr)
        seconds = time.perf_counter() - t0
        after = elbo_estimate(model, fit.q, x, seed=1)
        out["fits"].append(
            {
                "steps": s,
                "elbo": float(after.mean()),
                "gain": float((after - enc).mean()),
                "converged": fit.converged,
                "seconds_per_image": seconds / images,
            }
        )
    top = out["fits"][-1]["gain"]
    for f in out["fits"]:
        f["fraction_closed"] = f["gain"] / top if top > 0 else None
    return out


def paper_step_cost(batch: int, steps: int = 20) -> dict:
    torch.manual_seed(0)
    model = VAE(784, ModelConfig())
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.bernoulli(torch.rand(batch, 784))
    fit_local(model, x, steps=2, window=1)  # warm-up
    t0 = time.perf_counter()
    fit_local(model, x, steps=steps, window=steps)
    per = (time.perf_counter() - t0) / (steps * batch)
    return {"batch": batch, "seconds_per_image_step": per, "dtype": "float32"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000, 3000])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", type=int, default=16, help="draws per image and step of the local fit")
    ap.add_argument("--lr", type=float, default=1e-2, help="the local fit's initial learning rate")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="of the gap measurement")
    ap.add_argument("--no-cost", action="store_true", help="skip the paper-architecture cost measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        run = load_run(args.run_dir) if args.run_dir else small_model(args.epochs, Path(tmp) / "run")
        dtype = getattr(torch, args.dtype)
        result["gap_closed"] = gap_closed(
            run, args.images, sorted(args.steps), draws=args.draws, lr=args.lr, dtype=dtype
        )
    if not args.no_cost:
        result["paper_cost"] = paper_step_cost(args.batch)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
