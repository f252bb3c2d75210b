"""``smvi convergence``: are given AIS settings converged for a trained model?

Two checks, written to the run's :class:`~smvi.store.records.ConvergenceRecord`:

- **BDMC** (Grosse et al. 2015; Wu et al. 2017): on data simulated from the model itself (z ~ p(z), x ~ p(x|z)),
  forward AIS gives a stochastic lower bound on log p(x) and reverse AIS started at the true z a stochastic upper
  bound. Their gap bounds the error of AIS at those settings on such data.
- **Ladder** (the paper's check): AIS on real test points at log-spaced numbers of steps; converged when successive
  estimates agree within a tolerance.
"""

from __future__ import annotations

import time
from pathlib import Path

from smvi.core.estimators import ais_ladder, bdmc, simulate
from smvi.data.loading import ImageData
from smvi.progress import Progress
from smvi.settings.stages import ConvergenceConfig
from smvi.stages.evaluate import evaluation_set
from smvi.stages.trained import check_inputs, holds_run_lock, open_stage
from smvi.store.records import BDMCRow, ConvergenceRecord, LadderRecord, make_header
from smvi.store.rundir import RunError
from smvi.store.stats import mean_se

__all__ = ["ConvergenceConfig", "check_convergence"]


@holds_run_lock
def check_convergence(
    run_dir: str | Path,
    cfg: ConvergenceConfig = ConvergenceConfig(),
    *,
    data: ImageData | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    other_data: bool = False,
) -> ConvergenceRecord:
    """BDMC on ``cfg.n_points`` simulated points and an AIS ladder on as many test points, at each of ``cfg.steps``,
    with the sampler ``cfg.ais``. Checks the run, an existing record (an error unless ``overwrite``) and writability
    before any work; writes and returns the run's convergence record. ``device``: auto (a GPU when torch sees one),
    cpu or cuda. Arguments and data are checked as for every stage (:func:`smvi.stages.evaluate.evaluate_run`)."""
    cfg = check_inputs(run_dir, cfg, ConvergenceConfig, data=data, device=device)
    rd, run, data = open_stage(
        run_dir, "convergence", data=data, overwrite=overwrite, device=device, other_data=other_data
    )
    if cfg.n_points > len(data.test_x):
        raise RunError(f"n_points = {cfg.n_points} but the test split has {len(data.test_x)} images; lower it")
    opts = dict(**cfg.ais.kwargs(), seed=cfg.seed)
    t0 = time.perf_counter()
    x_sim, z_sim = simulate(run.model, cfg.n_points, seed=cfg.seed)
    rows = []
    label = f"convergence {rd.path.name}"
    # BDMC at s steps anneals twice (forward, reverse), the ladder once: the units are AIS steps, so the ETA is fair
    with Progress(f"{label}: BDMC on simulated data", 3 * sum(cfg.steps), unit="AIS step", enabled=progress) as bar:
        for s in cfg.steps:
            r = bdmc(run.model, x_sim, z_sim, steps=s, **opts)
            gap = mean_se(float(g) for g in r.gap.double())
            rows.append(
                BDMCRow(
                    steps=s,
                    lower=r.lower_mean,
                    upper=r.upper_mean,
                    gap=r.gap_mean,
                    gap_se=gap.se,
                    seconds=round(r.forward.seconds + r.reverse.seconds, 2),
                )
            )
            bar.update(2 * s)
        bar.relabel(f"{label}: AIS ladder on test data")
        x = evaluation_set(
            data.test_x, cfg.n_points, cfg.subset_seed, run.config.data.eval_seed, run.config.data.transform
        ).to(next(run.model.parameters()).device)
        lad = ais_ladder(run.model, x, steps=tuple(cfg.steps), tol=cfg.tol, **opts)
        bar.update(sum(cfg.steps))
    ladder = LadderRecord(
        steps=list(cfg.steps),
        means=[float(m) for m in lad.means],
        sems=[float(s) for s in lad.sems],
        diffs=[float(d) for d in lad.diffs],
        diff_sems=[float(d) for d in lad.diff_sems],
        agree=[bool(a) for a in lad.agree],
        converged=bool(lad.converged),
    )
    device = str(next(run.model.parameters()).device)
    header = make_header("convergence", run.fingerprint, run.epoch, cfg, device=device, data=run.other_data)
    record = ConvergenceRecord(
        header=header, run=rd.path.name, bdmc=rows, ladder=ladder, seconds=round(time.perf_counter() - t0, 2)
    )
    return rd.write_record("convergence", record)
