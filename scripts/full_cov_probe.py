"""Why the full-covariance family trains more slowly than the diagonal one (the README's frontier notes).

    python scripts/full_cov_probe.py [--steps 1000] [--scales 0,0.02,0.1414,1] [--every 200]

Trains the paper's VAE (2x1024 softplus, z = 50, Bernoulli decoder, ELBO, Adam 1e-3, batch 512, fp32, one seed) on
dynamically binarized MNIST from the same seed, once with the diagonal family and once with the full family
per off-diagonal scale s (``FullGaussian.off_scale``: L's strictly-lower entries are the encoder's outputs times s;
the family uses 1/√d). s = 0 is the diagonal family computed through the full family's code (its off-diagonal
outputs get no gradient and never move), so it isolates the cost of *learning* the off-diagonal entries from that of
the code path. Prints the ELBO and KL(q ‖ p(z)) on 1000 fixed binarized test images every ``--every`` steps, and the
share of q's variance that the off-diagonal entries carry at the end.
"""

from __future__ import annotations

import argparse

import torch

import smvi
from smvi.core.models import VAE
from smvi.settings.run import ConfigError, ModelConfig, build_config


def _test_terms(model: VAE, x: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        t = smvi.smvi_objective(model, x, lam=0.0)
    return float(t.elbo.mean()), float(t.kl.mean())


def probe(
    data, posterior: str, scale: float | None, *, steps: int, every: int, batch: int, model: ModelConfig, seed: int = 0
) -> list[str]:
    """One training run; the lines it prints."""
    torch.manual_seed(seed)
    m = VAE(data.train_x.shape[1], model.model_copy(update={"posterior": posterior}))
    if scale is not None:
        m.family.off_scale.fill_(scale)
    optimizer = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed + 1)
    x_test = torch.bernoulli(data.test_x[:1000], generator=g)
    name = posterior if scale is None else f"full, off_scale {scale:g}"
    lines = []
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            elbo, kl = _test_terms(m, x_test)
            lines.append(f"{name:24s} step {step:5d}: test ELBO {elbo:8.2f}  KL {kl:6.2f}")
            print(lines[-1], flush=True)
        if step == steps:
            break
        x = torch.bernoulli(data.train_x[torch.randint(0, len(data.train_x), (batch,), generator=g)], generator=g)
        optimizer.zero_grad()
        smvi.smvi_objective(m, x, lam=0.0).loss.mean().backward()
        optimizer.step()
    if posterior == "full":
        with torch.no_grad():
            L = m.family.scale_tril(m.encoder_params(x_test))
            share = float(L.tril(-1).pow(2).sum() / L.pow(2).sum())
        lines.append(f"{name:24s} off-diagonal share of q's variance at the end: {share:.3f}")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="Adam steps per run [1000, about 8.5 epochs]")
    ap.add_argument("--every", type=int, default=200, help="print the test terms every this many steps [200]")
    ap.add_argument(
        "--scales",
        default="0,0.02,0.1414,1",
        help="off-diagonal scales of the full family, comma-"
        "separated [0,0.02,0.1414,1]; the diagonal family always runs first",
    )
    ap.add_argument("--batch-size", type=int, default=512, help="examples per step [512]")
    ap.add_argument("--dataset", default="mnist", help="mnist, or idx with --data-dir [mnist]")
    ap.add_argument("--data-dir", default=None, help="directory of the data set")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="model setting, e.g. z_dim=4")
    args = ap.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --scales {args.scales!r} is not a comma-separated list of numbers") from None
    if args.steps < 1 or args.every < 1 or any(s < 0 for s in scales):
        raise SystemExit("error: --steps and --every take a whole number ≥ 1 and --scales numbers ≥ 0")
    try:
        model = build_config(ModelConfig, sets=tuple(args.sets))
    except ConfigError as e:
        raise SystemExit(f"error: --set: {e}") from None
    data = smvi.load_data(args.dataset, args.data_dir)
    torch.set_num_threads(1)
    probe(data, "diagonal", None, steps=args.steps, every=args.every, batch=args.batch_size, model=model)
    for s in scales:
        probe(data, "full", s, steps=args.steps, every=args.every, batch=args.batch_size, model=model)


if __name__ == "__main__":
    main()
