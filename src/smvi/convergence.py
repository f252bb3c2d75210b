"""``smvi convergence``: are given AIS settings converged for a trained model?

Two checks, written to ``convergence.json`` in the run directory:

- **BDMC** (Grosse et al. 2015; Wu et al. 2017): on data simulated from the model itself (z ~ p(z), x ~ p(x|z)),
  forward AIS gives a stochastic lower bound on log p(x) and reverse AIS started at the true z a stochastic upper
  bound. Their gap bounds the error of AIS at those settings on such data.
- **Ladder** (the paper's check): AIS on real test points at log-spaced numbers of steps; converged when successive
  estimates agree within a tolerance.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from .checkpoint import atomic_write_json
from .data import load_data
from .estimators import ais_ladder, bdmc, simulate
from .evaluate import EvalConfig, evaluation_set
from .train import RunError, load_run

__all__ = ["check_convergence", "CONVERGENCE_FILE"]

CONVERGENCE_FILE = "convergence.json"


def check_convergence(
    run_dir: str | Path,
    *,
    steps: tuple[int, ...] = (100, 300, 1000),
    n_points: int = 100,
    eval_config: EvalConfig = EvalConfig(),
    tol: float = 0.1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """BDMC on ``n_points`` simulated points and an AIS ladder on ``n_points`` test points, at each of ``steps``,
    with the chains, leapfrogs, start and schedule of ``eval_config``. Writes and returns ``convergence.json``."""
    run_dir = Path(run_dir)
    out = run_dir / CONVERGENCE_FILE
    if out.exists() and not overwrite:
        raise RunError(f"{out} exists: pass --overwrite to recompute it")
    run = load_run(run_dir)
    cfg = eval_config
    opts = dict(chains=cfg.ais_chains, leapfrog_steps=cfg.ais_leapfrog, start=cfg.ais_start,
                schedule=cfg.ais_schedule, seed=cfg.seed)
    t0 = time.perf_counter()
    x_sim, z_sim = simulate(run.model, n_points, seed=cfg.seed)
    result: dict = {"run": run_dir.name, "epoch": run.epoch, "n_points": n_points, "tol": tol,
                    "settings": dict(opts), "bdmc": [], "ladder": None}
    for s in tqdm(steps, desc="BDMC", disable=not progress):
        r = bdmc(run.model, x_sim, z_sim, steps=s, **opts)
        result["bdmc"].append({"steps": s, "lower": r.lower_mean, "upper": r.upper_mean, "gap": r.gap_mean,
                               "gap_se": float(r.gap.std() / len(r.gap) ** 0.5),
                               "seconds": round(r.forward.seconds + r.reverse.seconds, 2)})
    data = load_data(run.config.data.dataset, run.config.data.data_dir)
    x = evaluation_set(data.test_x, n_points, cfg.subset_seed, run.config.data.eval_seed)
    ladder = ais_ladder(run.model, x, steps=tuple(steps), tol=tol, **opts)
    result["ladder"] = {"steps": list(steps), "means": [float(m) for m in ladder.means],
                        "sems": [float(s) for s in ladder.sems], "diffs": [float(d) for d in ladder.diffs],
                        "diff_sems": [float(d) for d in ladder.diff_sems],
                        "agree": [bool(a) for a in ladder.agree], "converged": bool(ladder.converged)}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out, result)
    return result
