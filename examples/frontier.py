"""Train a small VAE at a few λ, score each model, and plot its learning/inference frontier: log p(x) against the ELBO
gap (AIS − ELBO ≈ KL(q(z|x) ‖ p(z|x))). Uses only smvi's public Python API.

    python examples/frontier.py --synthetic --out frontier          # about a minute; synthetic images (smoke test)
    python examples/frontier.py --out frontier-mnist --epochs 10     # MNIST (fetched and verified on first use)

Writes OUT/frontier.png, OUT/frontier.json (per λ: mean ± SE of log p(x) and of the gap) and one run directory per λ.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import smvi


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--synthetic", action="store_true", help="synthetic images instead of MNIST (smoke test)")
    ap.add_argument("--dataset", choices=["mnist", "idx"], default="mnist", help="without --synthetic [mnist]")
    ap.add_argument("--data-dir", default=None, help="IDX directory (--dataset idx)")
    ap.add_argument("--lams", default="0,0.1", help="comma-separated λ values [0,0.1]")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs per λ [5]")
    ap.add_argument("--z-dim", type=int, default=16, help="latent dimension [16]")
    ap.add_argument("--hidden", type=int, default=256, help="width of the hidden layer of encoder and decoder [256]")
    ap.add_argument("--n-eval", type=int, default=64, help="test images scored [64]")
    ap.add_argument("--ais-steps", type=int, default=200, help="AIS steps (4 chains, 5 leapfrogs, from q) [200]")
    return ap.parse_args(argv)


def train_at(lam: float, args: argparse.Namespace, data: smvi.ImageData) -> Path:
    """Train one model with weight ``lam`` on D_SM; returns its run directory."""
    config = smvi.load_config(
        sets=[
            f"model.encoder_hidden=[{args.hidden}]",
            f"model.decoder_hidden=[{args.hidden}]",
            "train.batch_size=128",
            "data.monitor_size=256",
        ],
        overrides={
            "train.lam": lam,
            "train.epochs": args.epochs,
            "model.z_dim": args.z_dim,
            "data.dataset": args.dataset,
            "data.data_dir": args.data_dir,
        },
    )
    run_dir = args.out / f"lam{lam:g}"
    smvi.train_run(config, run_dir, data=data, overwrite=True, progress=False)
    return run_dir


def score(run_dir: Path, data: smvi.ImageData, args: argparse.Namespace) -> dict[str, float]:
    """log p(x) (AIS) and the ELBO gap on a fixed subset of test images: means and standard errors over images."""
    run = smvi.load_run(run_dir)
    idx = smvi.fixed_subset(len(data.test_x), args.n_eval, seed=0)
    x = smvi.fixed_inputs(data.test_x[idx], run.config.data.transform, run.config.data.eval_seed)
    elbo = smvi.elbo(run.model, x, n_samples=200).double()
    log_px = smvi.ais(run.model, x, steps=args.ais_steps, chains=4, leapfrog_steps=5, start="encoder", seed=0).log_px
    gap = log_px - elbo

    def mean_se(v):
        return float(v.mean()), float(v.std() / math.sqrt(len(v)))

    (lp, lp_se), (g, g_se), (e, e_se) = mean_se(log_px), mean_se(gap), mean_se(elbo)
    return {
        "lam": run.config.train.lam,
        "epochs": run.epoch,
        "n": len(x),
        "log_px": lp,
        "log_px_se": lp_se,
        "gap": g,
        "gap_se": g_se,
        "elbo": e,
        "elbo_se": e_se,
    }


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    ax.errorbar(
        [p["gap"] for p in points],
        [p["log_px"] for p in points],
        xerr=[p["gap_se"] for p in points],
        yerr=[p["log_px_se"] for p in points],
        fmt="o-",
        capsize=3,
    )
    for p in points:
        ax.annotate(f"λ = {p['lam']:g}", (p["gap"], p["log_px"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("ELBO gap, AIS − ELBO (nats)")
    ax.set_ylabel("log p(x), AIS (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = smvi.synthetic_images(2000, 500) if args.synthetic else smvi.load_data(args.dataset, args.data_dir)
    lams = [float(v) for v in args.lams.split(",")]
    points = []
    for lam in lams:
        points.append(score(train_at(lam, args, data), data, args))
        p = points[-1]
        print(
            f"λ = {lam:g}: log p(x) {p['log_px']:.2f} ± {p['log_px_se']:.2f}, gap {p['gap']:.2f} ± {p['gap_se']:.2f} "
            f"nats ({p['n']} test images, {p['epochs']} epochs)",
            flush=True,
        )
    what = "synthetic images" if args.synthetic else args.dataset
    plot(points, args.out / "frontier.png", f"{what}, {args.epochs} epochs: learning vs inference")
    (args.out / "frontier.json").write_text(json.dumps(points, indent=1) + "\n")
    print(f"-> {args.out / 'frontier.png'}, {args.out / 'frontier.json'}")
    return points


if __name__ == "__main__":
    main()
