"""The Gaussian decoder's scale on background and foreground pixels (the README's continuous-data notes).

    python scripts/decoder_sigma.py runs/gaussian/runs/lam0_seed0 [RUN ...] [--n 500]

For each run (model.likelihood = "gaussian"): the decoder at the encoder means of the first ``n`` test images, as
dequantized by the run (data.transform with data.eval_seed); the median log σ and the mean decoder mean over background
pixels (gray level 0) and over the others, beside the others' mean input value.
"""

from __future__ import annotations

import argparse

import torch

import smvi


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories of Gaussian-decoder runs")
    ap.add_argument("--n", type=int, default=500, help="test images [500]")
    args = ap.parse_args(argv)
    for path in args.runs:
        run = smvi.load_run(path)
        if run.config.model.likelihood != "gaussian":
            raise SystemExit(f"error: {path} has model.likelihood = {run.config.model.likelihood!r}, not gaussian")
        d = run.config.data
        data = smvi.load_data(d.dataset, d.data_dir)  # as every stage loads a run's data (trained.open_stage)
        gray = data.test_x[: args.n]
        x = smvi.fixed_inputs(gray, d.transform, d.eval_seed)
        with torch.no_grad():
            mean, log_std = run.model.decoder(run.model.encode(x).mean).chunk(2, -1)
        bg = gray == 0
        med = lambda t: float(t.median()) if t.numel() else float("nan")  # noqa: E731  (nan: no such pixel)
        avg = lambda t: float(t.mean()) if t.numel() else float("nan")  # noqa: E731
        print(
            f"{path}: log σ median background {med(log_std[bg]):.2f}, foreground {med(log_std[~bg]):.2f}; "
            f"decoder mean background {avg(mean[bg]):.3f}, foreground {avg(mean[~bg]):.3f} "
            f"(input {avg(x[~bg]):.3f})"
        )


if __name__ == "__main__":
    main()
