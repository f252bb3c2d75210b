"""A short training check of the rejection family on MNIST (issue 27): does the trainer's objective go up?

    .venv/bin/python benchmarks/rejection_stability.py --steps 120 [--acceptance 0.5] [--lam 0] [--precision fp32]

The paper's model (2×1024 softplus, z = 50) with ``posterior="rejection"`` at a target acceptance (or ``--posterior
diagonal`` for the reference), Adam 1e-3, batches of 256 images drawn from the first 8192 training images and
binarized, one thread; every 10 steps the batch's terms (ELBO, log p(x|z), KL, acceptance, T, D_SM). It found the
divergence a constant T caused (log p(x|z) from −206 to −3800 nats within 60 steps at acceptance 0.5), and checks the
fix (:func:`smvi.core.rejection.implicit_threshold`). Needs MNIST (``smvi data fetch``); nothing is timed.
"""

from __future__ import annotations

import argparse

import torch

import smvi
from smvi.core.objectives import backward, training_objective
from smvi.data.loading import load_mnist


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--posterior", default="rejection", choices=["rejection", "diagonal"])
    ap.add_argument("--acceptance", type=float, default=0.5)
    ap.add_argument("--lam", type=float, default=0.0)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x_all = load_mnist(download=False, progress=False).train_x[:8192].float()
    x_all = x_all / 255 if x_all.max() > 1 else x_all
    torch.manual_seed(0)
    extra = {"rejection_acceptance": args.acceptance} if args.posterior == "rejection" else {}
    model = smvi.VAE(x_dim=784, config=smvi.ModelConfig(posterior=args.posterior, **extra))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    rows = []
    for step in range(args.steps):
        x = torch.bernoulli(x_all[torch.randint(0, len(x_all), (256,), generator=g)], generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            terms = training_objective(model, x, objective="smvi", lam=args.lam)
        opt.zero_grad()
        backward(model, terms, lam=args.lam)
        opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            row = {"step": step, **{k: round(v, 2) for k, v in terms.means().items() if k != "loss"}}
            rows.append(row)
            print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
