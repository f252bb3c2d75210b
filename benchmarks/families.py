"""Extra cost per training step of each posterior family and baseline objective, as ratios to the diagonal VAE step
measured side by side (benchmarks/harness.py's interleaved rounds; CPU time is the robust clock on a shared machine).

    .venv/bin/python benchmarks/families.py            # the paper's model (784-2x1024-50), batch 512 (a few minutes)
    .venv/bin/python benchmarks/families.py --quick    # tiny model: the smoke test (tests/test_benchmarks.py)
    .venv/bin/python benchmarks/families.py --precision both    # each step in fp32 and in bf16 autocast, side by side

With ``--precision bf16`` the objective runs in bf16 autocast as `train.precision = "bf16"` runs it (weights and Adam
fp32); ``both`` times every case in each precision in the same rounds (bf16 cases are named ``CASE@bf16``) and adds
each case's fp32 ÷ bf16 time, the speed-up `make frontier` trains with.

A step = the objective, its backward pass and one Adam update, on one batch of binary images; flow q with the
default settings (4 coupling layers, 256 hidden, context 32). Prints and (with --out) writes the ratios.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from harness import interleaved, machine, step_ratios, training_step

CASES = {  # name -> (posterior, objective settings)
    "diagonal": ("diagonal", dict(objective="smvi", lam=0.0)),
    "full": ("full", dict(objective="smvi", lam=0.0)),
    "flow": ("flow", dict(objective="smvi", lam=0.0)),
    "diagonal_smvi": ("diagonal", dict(objective="smvi", lam=0.01)),
    "full_smvi": ("full", dict(objective="smvi", lam=0.01)),
    "flow_smvi": ("flow", dict(objective="smvi", lam=0.01)),
    "beta": ("diagonal", dict(objective="beta", beta=2.0)),
    "iwae5": ("diagonal", dict(objective="iwae", iwae_k=5)),
    "iwae50": ("diagonal", dict(objective="iwae", iwae_k=50)),
}
FULL = dict(x_dim=784, hidden=(1024, 1024), z_dim=50, batch=512, rounds=5, per_round=3)
QUICK = dict(x_dim=784, hidden=(32,), z_dim=4, batch=32, rounds=2, per_round=1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model: a smoke test in seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16", "both"),
        default="fp32",
        help="the objective in fp32, in bf16 autocast, or both side by side [fp32]",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    name = {"fp32": "{}", "bf16": "{}@bf16"} if args.precision == "both" else {args.precision: "{}"}
    steps = {
        name[pr].format(k): training_step({"posterior": p}, o, s, pr)
        for k, (p, o) in CASES.items()
        for pr in precisions
    }
    times = interleaved(steps, s["rounds"], s["per_round"])

    def base(k: str) -> str:  # the diagonal step at the same λ and precision
        case, _, pr = k.partition("@")
        return ("diagonal_smvi" if case.endswith("_smvi") else "diagonal") + (f"@{pr}" if pr else "")

    ratios = step_ratios(times, base, 20)
    res = {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()} | {"precision": precisions},
        "machine": machine(),
        "times": times,
        "ratios_to_diagonal": ratios,
    }
    if args.precision == "both":
        res["bf16_speedup"] = {k: times[k]["cpu_ms"] / times[f"{k}@bf16"]["cpu_ms"] for k in CASES}
        print("fp32 ÷ bf16 CPU time per step: " + ", ".join(f"{k} {v:.2f}x" for k, v in res["bf16_speedup"].items()))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
