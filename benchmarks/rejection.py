"""Cost per training step of the rejection-sampling posterior (smvi.core.rejection), as ratios to the diagonal VAE step
at the same λ, measured side by side (benchmarks/harness.py's interleaved rounds; CPU time is the robust clock on a
shared machine).

    .venv/bin/python benchmarks/rejection.py                      # the paper's / cpu preset's model, batch 512
    .venv/bin/python benchmarks/rejection.py --precision bf16     # the objective in bf16 autocast (as the study trains)
    .venv/bin/python benchmarks/rejection.py --quick              # tiny model: the smoke test (tests/test_rejection.py)

A step = the objective, its backward pass and one Adam update on one batch of binary images. A rejection step
reweights M = model.rejection_proposals reparameterized proposals per example (a decoder pass on M·batch rows, and
with λ ≠ 0 the second-order D_SM pass on them), so its cost is set by M, not by T: the cases vary the target
acceptance (T chosen per x) at the default M = 16, a fixed T, and M at one acceptance. Exact sampling's cost is
1/acceptance proposals per draw by construction (reported per epoch in metrics.jsonl as ``proposals_per_sample``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from harness import interleaved, machine, step_ratios, training_step

CASES = {  # name -> (model settings, objective settings)
    "diagonal": ({}, dict(objective="smvi", lam=0.0)),
    "diagonal_smvi": ({}, dict(objective="smvi", lam=0.01)),
    **{
        f"accept{a}{s}": (dict(posterior="rejection", rejection_acceptance=a), dict(objective="smvi", lam=lam))
        for a in (0.5, 0.2, 0.05)
        for s, lam in (("", 0.0), ("_smvi", 0.01))
    },
    "T0_smvi": (dict(posterior="rejection", rejection_threshold=0.0), dict(objective="smvi", lam=0.01)),
    "accept0.2_M4_smvi": (
        dict(posterior="rejection", rejection_acceptance=0.2, rejection_proposals=4),
        dict(objective="smvi", lam=0.01),
    ),
    "accept0.2_M64_smvi": (
        dict(posterior="rejection", rejection_acceptance=0.2, rejection_proposals=64),
        dict(objective="smvi", lam=0.01),
    ),
}
FULL = dict(x_dim=784, hidden=(1024, 1024), z_dim=50, batch=512, rounds=3, per_round=2)
QUICK = dict(x_dim=784, hidden=(32,), z_dim=4, batch=32, rounds=2, per_round=1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model: a smoke test in seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="the objective's precision [fp32]")
    ap.add_argument("--only", nargs="*", default=None, help="these cases (and the diagonal ones) only")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    names = [k for k in CASES if args.only is None or k in args.only or k.startswith("diagonal")]
    times = interleaved({k: training_step(*CASES[k], s, args.precision) for k in names}, s["rounds"], s["per_round"])
    base = lambda k: "diagonal_smvi" if CASES[k][1]["lam"] else "diagonal"  # noqa: E731  (same λ)
    ratios = step_ratios(times, base, 22)
    res = {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}
        | {"precision": args.precision, "threads": args.threads},
        "machine": machine(),
        "times": times,
        "ratios_to_diagonal": ratios,
    }
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
