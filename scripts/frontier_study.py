"""The trade-off frontier study: every way of moving between learning and inference, at the cpu preset's settings.

    python scripts/frontier_study.py runs/frontier [--executor process --workers 2]    # or: make frontier

One `smvi sweep` per arm (train → evaluate → ssl, the cpu preset: 30 epochs, the paper's model, AIS with 500 steps on
100 + 100 images), each in DIR/<arm>/, then `smvi gaps` on the runs whose gap is split:

    smvi      the cpu preset's λ grid (diagonal q)          gaps at λ = 0, 0.01, 0.1
    beta0.5, beta2, beta4   β-VAE (λ = 0)
    iwae5, iwae50           IWAE training with k = 5, 50
    full, flow              full-covariance / flow q at λ = 0, 0.01, 0.1   gaps at λ = 0

Rerunning the same command resumes: sweeps skip finished work and a run with a current gaps record (its run, epoch and
the ``--gaps-set`` settings) is not redone; a stale one is recomputed.
``--smvi-sweep PATH`` reuses an existing sweep of the SMVI grid (e.g. runs/cpu from `make reproduce`, checkpoints
needed) instead of training it again. ``--set`` goes to every sweep (after the arm's own settings), ``--gaps-set`` to
every `smvi gaps`; ``--only ARM`` runs some arms. `smvi report DIR` collects DIR/*/runs/*/ and draws the frontier.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from smvi.config import ConfigError, build_config
from smvi.rundir import RunDir, RunError
from smvi.settings import GapConfig
from smvi.sweep import run_name

ARMS: dict[str, tuple[list[float] | None, list[str]]] = {  # name -> (λ grid, None: the preset's; sweep --set options)
    "smvi": (None, []),
    "beta0.5": ([0.0], ["run.train.objective='beta'", "run.train.beta=0.5"]),
    "beta2": ([0.0], ["run.train.objective='beta'", "run.train.beta=2.0"]),
    "beta4": ([0.0], ["run.train.objective='beta'", "run.train.beta=4.0"]),
    "iwae5": ([0.0], ["run.train.objective='iwae'", "run.train.iwae_k=5"]),
    "iwae50": ([0.0], ["run.train.objective='iwae'", "run.train.iwae_k=50"]),
    "full": ([0.0, 0.01, 0.1], ["run.model.posterior='full'"]),
    "flow": ([0.0, 0.01, 0.1], ["run.model.posterior='flow'"]),
}
GAPS: dict[str, list[float]] = {"smvi": [0.0, 0.01, 0.1], "full": [0.0], "flow": [0.0]}


def _smvi(*args: str) -> None:
    cmd = [sys.executable, "-m", "smvi", *args]
    print("+ smvi " + " ".join(args), flush=True)
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"error: `smvi {args[0]}` failed (see above); rerun this command to resume")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="study directory (one sweep per arm inside)")
    ap.add_argument("--only", action="append", choices=sorted(ARMS), help="run only this arm (repeatable)")
    ap.add_argument("--smvi-sweep", type=Path, default=None, help="an existing sweep of the SMVI λ grid to reuse")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="sweep override for every arm")
    ap.add_argument("--gaps-set", action="append", default=[], help="`smvi gaps` override, e.g. steps=5000")
    ap.add_argument("--executor", default="inprocess", help="sweep executor [inprocess]")
    ap.add_argument("--workers", type=int, default=1, help="sweep workers [1]")
    ap.add_argument("--no-gaps", action="store_true", help="only the sweeps")
    args = ap.parse_args(argv)
    try:
        gaps_cfg = build_config(GapConfig, sets=tuple(args.gaps_set))
    except ConfigError as e:
        sys.exit(f"error: --gaps-set: {e}")
    arms = args.only or list(ARMS)
    dirs = {arm: args.out / arm for arm in arms}
    if args.smvi_sweep is not None and "smvi" in dirs:
        if not (args.smvi_sweep / "runs").is_dir():
            sys.exit(f"error: {args.smvi_sweep} is not a sweep directory (no runs/): check --smvi-sweep")
        dirs["smvi"] = args.smvi_sweep
    for arm in arms:
        if arm == "smvi" and args.smvi_sweep is not None:
            continue
        lams, sets = ARMS[arm]
        grid = [] if lams is None else [f"lams=[{', '.join(f'{v:g}' for v in lams)}]"]
        opts = [a for s in grid + sets + args.sets for a in ("--set", s)]
        _smvi("sweep", str(dirs[arm]), "--preset", "cpu", *opts, "--executor", args.executor,
              "--workers", str(args.workers), "--no-report", "--no-progress")
    if args.no_gaps:
        return
    for arm in arms:
        for lam in GAPS.get(arm, []):
            rd = RunDir(dirs[arm] / "runs" / run_name(lam, 0))
            try:
                record, stale = rd.current_record("gaps", gaps_cfg)
            except RunError:  # not a usable run: `smvi gaps` says why in one line
                record, stale = None, "no run"
            if record is None or stale is not None:
                _smvi("gaps", str(rd.path), *[a for s in args.gaps_set for a in ("--set", s)], "--no-progress",
                      *(["--overwrite"] if rd.record_path("gaps").exists() else []))


if __name__ == "__main__":
    main()
