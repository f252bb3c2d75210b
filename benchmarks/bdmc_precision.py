"""BDMC in fp32 and with ``precision="bf16"``, paired, on a trained model: does a bf16 leapfrog force widen the gap?

    .venv/bin/python benchmarks/bdmc_precision.py --run-dir RUN --out FILE   # 100 points, 200/500/1000 steps, 1 thread
    .venv/bin/python benchmarks/bdmc_precision.py --quick      # tiny untrained model, seconds: the smoke test

On ``--points`` points simulated from the model (z ~ p(z), x ~ p(x|z): the true log p(x) is sandwiched), BDMC
(forward AIS lower bound, reverse AIS upper bound from the true z; :func:`smvi.core.estimators.bdmc`) runs at each of
``--steps`` with the sampler ``smvi evaluate`` and ``smvi convergence`` use (:class:`smvi.settings.stages.AISSampler`'s
defaults: 4 chains, 5 leapfrog steps, sigmoid schedule, from the encoder), once per precision, on the same points
and seed, all points in one batch. Per step count and precision: the gap upper − lower (mean ± SE over points), both
bounds, the weighted chains' acceptance and the pilot-adapted step sizes (forward and reverse), CPU and wall time;
paired over points: the gap, lower and upper bf16 − fp32 (mean ± SE) and the step-size ratio. The precision that runs
first alternates between step counts. A bf16 gap counts as wider when its paired excess is more than 2 SE.

The ``force`` section is the diagnostic for *why* a gap could widen: the bf16 force's error against the fp32 force at
the true latents (β = 1, the sharpest distribution of the path), how rough it is (the force's change under a 10⁻³
move of z), and the acceptance of one HMC transition (5 leapfrog steps) at fixed step sizes with each force. The
accept/reject always uses fp32 energies (exact either way); a worse force can only lower acceptance, which the pilot
adaptation answers with a smaller step and so slower mixing.

The ``throughput`` section times forward AIS alone with the same sampler on one batch of ``--throughput-points``
points (100 = one ``smvi evaluate`` batch, 600 rows), both precisions, alternating, median of 3. Nothing asserts on
time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from statistics import median

import torch

from smvi.core.estimators import bdmc, simulate
from smvi.core.estimators.hmc import hmc_step, init_state, path_potential, point_ids, stream_key
from smvi.settings.stages import AISSampler

PRECISIONS = ("fp32", "bf16")
SECTIONS = ("force", "bdmc", "throughput")
FULL = dict(
    points=100,
    steps=(200, 500, 1000),
    eps=(0.02, 0.05, 0.08, 0.1, 0.12),
    force_rows=16,
    throughput_points=(100, 200),
    throughput_steps=100,
    throughput_rounds=3,
)
QUICK = dict(
    points=6,
    steps=(5, 10),
    eps=(0.05, 0.2),
    force_rows=2,
    throughput_points=(4,),
    throughput_steps=5,
    throughput_rounds=2,
)


def mean_se(d: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over the first dimension (float64); SE is NaN for one value."""
    d = d.double()
    return float(d.mean()), float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else float("nan")


def _run(model, xs, zs, steps: int, seed: int, sampler: dict) -> tuple[dict, torch.Tensor, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    b = bdmc(model, xs, zs, steps=steps, seed=seed, **sampler)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gap, se = mean_se(b.gap)
    row = {
        "gap": gap,
        "gap_se": se,
        "lower": b.lower_mean,
        "upper": b.upper_mean,
        "acceptance_forward": b.forward.acceptance,
        "acceptance_reverse": b.reverse.acceptance,
        "step_size_forward": float(b.forward.step_sizes.double().log().mean().exp()),
        "step_size_reverse": float(b.reverse.step_sizes.double().log().mean().exp()),
        "cpu_s": cpu,
        "wall_s": wall,
    }
    per_point = {
        "lower": b.lower.tolist(),
        "upper": b.upper.tolist(),
        "step_forward": b.forward.step_sizes.tolist(),
        "step_reverse": b.reverse.step_sizes.tolist(),
    }
    return row, b, per_point


def paired_bdmc(
    model,
    xs: torch.Tensor,
    zs: torch.Tensor,
    *,
    steps: tuple[int, ...],
    seed: int = 0,
    sampler: dict | None = None,
    log=lambda line: print(line, flush=True),
) -> dict:
    """BDMC at each of ``steps`` in fp32 and bf16 on the same simulated points (``xs``, ``zs``) and seed.

    Returns per step count (key ``str(steps)``): ``fp32`` and ``bf16`` summaries (gap ± SE, bounds, acceptance,
    step sizes as geometric means over points, CPU/wall seconds), the paired differences bf16 − fp32 of the gap, the
    lower and the upper bound (mean ± SE over points), the paired geometric-mean step-size ratios, the CPU and wall
    time ratios fp32 / bf16, and the per-point values.
    """
    base = AISSampler().kwargs() if sampler is None else dict(sampler)
    out: dict = {
        "points": int(xs.shape[0]),
        "seed": seed,
        "sampler": {k: v for k, v in base.items() if k != "precision"},
    }
    for i, s in enumerate(steps):
        rows, runs, per_point = {}, {}, {}
        for p in PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]:
            rows[p], runs[p], per_point[p] = _run(model, xs, zs, s, seed, {**base, "precision": p})
            r = rows[p]
            log(
                f"  {s:>5} steps {p}: gap {r['gap']:.3f} ± {r['gap_se']:.3f}, acceptance "
                f"{r['acceptance_forward']:.3f}/{r['acceptance_reverse']:.3f}, step "
                f"{r['step_size_forward']:.4f}/{r['step_size_reverse']:.4f}, {r['cpu_s']:.0f} s cpu"
            )
        row = {p: rows[p] for p in PRECISIONS}
        a, b = runs["fp32"], runs["bf16"]
        for name, d in (("gap", b.gap - a.gap), ("lower", b.lower - a.lower), ("upper", b.upper - a.upper)):
            row[f"{name}_bf16_minus_fp32"], row[f"{name}_bf16_minus_fp32_se"] = mean_se(d)
        for side in ("forward", "reverse"):
            ratio = getattr(b, side).step_sizes.double() / getattr(a, side).step_sizes.double()
            row[f"step_size_{side}_bf16_over_fp32"] = float(ratio.log().mean().exp())
        row["time_fp32_over_bf16_cpu"] = rows["fp32"]["cpu_s"] / rows["bf16"]["cpu_s"]
        row["time_fp32_over_bf16_wall"] = rows["fp32"]["wall_s"] / rows["bf16"]["wall_s"]
        row["per_point"] = per_point
        out[str(s)] = row
        log(
            f"  {s:>5} steps: gap bf16 − fp32 {row['gap_bf16_minus_fp32']:+.3f} ± "
            f"{row['gap_bf16_minus_fp32_se']:.3f}, time fp32/bf16 {row['time_fp32_over_bf16_cpu']:.2f}x cpu"
        )
    return out


@torch.no_grad()
def force_check(
    model, xs: torch.Tensor, zs: torch.Tensor, *, eps: tuple[float, ...], rows: int, leapfrog_steps: int, seed: int = 0
) -> dict:
    """At the true latents (β = 1: log p(x, z)): the bf16 force's error against fp32, its roughness, and the
    acceptance of one HMC transition at each fixed step size in ``eps`` with each force (``rows`` chains per point,
    the same momenta and uniforms for both; exact fp32 energies in both)."""
    log_joint = lambda z: model.log_prior(z) + model.log_likelihood(xs, z)  # noqa: E731
    pot = {p: path_potential(log_joint, precision=p) for p in PRECISIONS}
    f = {p: pot[p].force(zs)[0].double() for p in PRECISIONS}
    err = (f["bf16"] - f["fp32"]).norm(dim=-1)
    move = 1e-3 * torch.randn(zs.shape, generator=torch.Generator().manual_seed(seed), dtype=zs.dtype)
    change = {p: float((pot[p].force(zs + move)[0].double() - f[p]).norm(dim=-1).median()) for p in PRECISIONS}
    out = {
        "force_norm_median": float(f["fp32"].norm(dim=-1).median()),
        "error_norm_median": float(err.median()),
        "relative_error_median": float((err / f["fp32"].norm(dim=-1)).median()),
        "change_under_1e-3_move_median": change,
        "leapfrog_steps": leapfrog_steps,
        "rows": rows,
        "acceptance": {},
    }
    z = zs.expand(rows, *zs.shape).contiguous()
    key = stream_key(seed, point_ids(xs), torch.arange(rows))
    for e in eps:
        acc = {}
        for p in PRECISIONS:
            _, info = hmc_step(
                init_state(pot[p], z),
                key,
                potential=pot[p],
                beta=1.0,
                step_size=torch.full(z.shape[:-1], e, dtype=z.dtype),
                n_leapfrog=leapfrog_steps,
            )
            acc[p] = float(info.accept_prob.mean())
        out["acceptance"][str(e)] = acc
    return out


@torch.no_grad()
def ais_throughput(model, x: torch.Tensor, *, sampler: dict, steps: int, rounds: int, seed: int = 0) -> dict:
    """Forward AIS alone on ``x`` (one batch) with ``sampler``, in each precision, ``rounds`` times, the precision
    that runs first alternating: median CPU and wall seconds, leapfrog gradient evaluations per CPU second
    (rows × ((steps − 1) × leapfrog steps + 1), rows = points × (chains + 2 pilots)) and the ratios fp32 / bf16."""
    from smvi.core.estimators import ais

    rows = x.shape[0] * (sampler["chains"] + 2)
    evals = rows * ((steps - 1) * sampler["leapfrog_steps"] + 1)
    cpu, wall = {p: [] for p in PRECISIONS}, {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for p in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            ais(model, x, steps=steps, seed=seed, **{**sampler, "precision": p})
            wall[p].append(time.perf_counter() - t0)
            cpu[p].append(time.process_time() - c0)
    out: dict = {"points": int(x.shape[0]), "rows": rows, "steps": steps, "rounds": rounds}
    for p in PRECISIONS:
        out[p] = {
            "cpu_s": median(cpu[p]),
            "wall_s": median(wall[p]),
            "cpu_s_rounds": cpu[p],
            "wall_s_rounds": wall[p],
            "evals_per_s_cpu": evals / median(cpu[p]),
        }
    out["fp32_over_bf16_cpu"] = out["fp32"]["cpu_s"] / out["bf16"]["cpu_s"]
    out["fp32_over_bf16_wall"] = out["fp32"]["wall_s"] / out["bf16"]["wall_s"]
    return out


def report(res: dict) -> list[str]:
    lines = []
    for t in res.get("throughput", []):
        lines.append(
            f"AIS alone, {t['points']} points ({t['rows']} rows), {t['steps']} steps, median of "
            f"{t['rounds']}: fp32 {t['fp32']['cpu_s']:.1f} s cpu ({t['fp32']['evals_per_s_cpu']:.0f} "
            f"evals/s), bf16 {t['bf16']['cpu_s']:.1f} s cpu ({t['bf16']['evals_per_s_cpu']:.0f} evals/s): "
            f"fp32 / bf16 {t['fp32_over_bf16_cpu']:.2f}× cpu, {t['fp32_over_bf16_wall']:.2f}× wall"
        )
    if "bdmc" in res:
        lines += _bdmc_report(res)
    if "force" in res:
        lines += _force_report(res["force"])
    return lines + [f"{t['target']}: {t['measured']} -> {'met' if t['met'] else 'NOT met'}" for t in res["targets"]]


def _bdmc_report(res: dict) -> list[str]:
    b = res["bdmc"]
    lines = [
        f"BDMC on {b['points']} simulated points, sampler {b['sampler']}, seed {b['seed']}",
        "| steps | fp32 gap | bf16 gap | bf16 − fp32 (paired) | lower / upper bf16 − fp32 | "
        "acceptance fwd/rev fp32; bf16 | step size bf16 / fp32 fwd; rev | time fp32 / bf16 (cpu; wall) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res["settings"]["steps"]:
        r = b[str(s)]
        f, h = r["fp32"], r["bf16"]
        lines.append(
            f"| {s} | {f['gap']:.3f} ± {f['gap_se']:.3f} | {h['gap']:.3f} ± {h['gap_se']:.3f} | "
            f"{r['gap_bf16_minus_fp32']:+.3f} ± {r['gap_bf16_minus_fp32_se']:.3f} | "
            f"{r['lower_bf16_minus_fp32']:+.3f} ± {r['lower_bf16_minus_fp32_se']:.3f} / "
            f"{r['upper_bf16_minus_fp32']:+.3f} ± {r['upper_bf16_minus_fp32_se']:.3f} | "
            f"{f['acceptance_forward']:.3f}/{f['acceptance_reverse']:.3f}; "
            f"{h['acceptance_forward']:.3f}/{h['acceptance_reverse']:.3f} | "
            f"{r['step_size_forward_bf16_over_fp32']:.3f}; {r['step_size_reverse_bf16_over_fp32']:.3f} | "
            f"{r['time_fp32_over_bf16_cpu']:.2f}×; {r['time_fp32_over_bf16_wall']:.2f}× |"
        )
    return lines


def _force_report(fc: dict) -> list[str]:
    lines = []
    lines.append(
        f"force at the true z (β = 1): |F| median {fc['force_norm_median']:.2f}, bf16 error median "
        f"{fc['error_norm_median']:.3f} ({fc['relative_error_median']:.2%}); change under a 1e-3 move: "
        + ", ".join(f"{p} {v:.3f}" for p, v in fc["change_under_1e-3_move_median"].items())
    )
    lines.append(
        "one HMC transition at β = 1, acceptance fp32 / bf16 at step size: "
        + ", ".join(f"{e}: {a['fp32']:.3f} / {a['bf16']:.3f}" for e, a in fc["acceptance"].items())
    )
    return lines


def targets(res: dict) -> list[dict]:
    out = [
        {
            "target": f"AIS bf16 >= 2x fp32 throughput at {t['rows']} rows (CPU time)",
            "measured": f"{t['fp32_over_bf16_cpu']:.2f}x",
            "met": bool(t["fp32_over_bf16_cpu"] >= 2),
        }
        for t in res.get("throughput", [])
    ]
    for s in res["settings"]["steps"] if "bdmc" in res else ():
        r = res["bdmc"][str(s)]
        d, se = r["gap_bf16_minus_fp32"], r["gap_bf16_minus_fp32_se"]
        out.append(
            {
                "target": f"BDMC gap at {s} steps: bf16 no wider than fp32 (paired excess <= 2 SE)",
                "measured": f"{d:+.3f} ± {se:.3f}",
                "met": bool(d <= max(2 * se, 1e-9)),
            }
        )  # identical runs: d = se = 0
    return out


def _quick_model():
    import smvi

    torch.manual_seed(0)
    cfg = smvi.ModelConfig(encoder_hidden=(16,), decoder_hidden=(16,), z_dim=3)
    model = smvi.VAE(x_dim=20, config=cfg)
    with torch.no_grad():  # weights of a trained model's scale, so that the bf16 force differs from fp32's
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, help="a trained run (smvi train) whose model is checked")
    ap.add_argument("--quick", action="store_true", help="tiny untrained model, seconds (the smoke test)")
    ap.add_argument("--points", type=int, default=None, help="simulated points (default 100)")
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="AIS lengths (default 200 500 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulation and of AIS")
    ap.add_argument(
        "--start",
        choices=["encoder", "prior"],
        default=None,
        help="AIS initial distribution (default: the evaluation's, encoder)",
    )
    ap.add_argument("--chains", type=int, default=None, help="AIS chains per point (default: the evaluation's, 4)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure")
    ap.add_argument(
        "--throughput-points",
        type=int,
        nargs="+",
        default=None,
        help="batch sizes (points) of the throughput section (default 100 200)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: not written)")
    args = ap.parse_args(argv)
    if (args.run_dir is None) == (not args.quick):
        ap.error("give --run-dir or --quick")
    s = dict(QUICK if args.quick else FULL)
    s.update(
        {
            k: v
            for k, v in (("points", args.points), ("steps", args.steps), ("throughput_points", args.throughput_points))
            if v is not None
        }
    )
    s["steps"], s["sections"] = tuple(s["steps"]), list(args.sections)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import machine

    if args.quick:
        model, source = _quick_model(), "untrained tiny VAE"
    else:
        from smvi.stages.trained import load_run

        model, source = load_run(args.run_dir).model.eval().requires_grad_(False), str(args.run_dir)
    res: dict = {
        "command": " ".join(["benchmarks/bdmc_precision.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": source,
        "settings": s,
        "machine": machine(),
    }
    t0 = time.perf_counter()
    xs, zs = simulate(model, s["points"], seed=args.seed)
    changes = {k: v for k, v in (("start", args.start), ("chains", args.chains)) if v is not None}
    sampler = AISSampler(**changes).kwargs()
    if "force" in args.sections:
        res["force"] = force_check(
            model, xs, zs, eps=s["eps"], rows=s["force_rows"], leapfrog_steps=sampler["leapfrog_steps"], seed=args.seed
        )
    if "bdmc" in args.sections:
        res["bdmc"] = paired_bdmc(model, xs, zs, steps=s["steps"], seed=args.seed, sampler=sampler)
    if "throughput" in args.sections:
        res["throughput"] = [
            ais_throughput(
                model,
                simulate(model, n, seed=args.seed + 1)[0],
                sampler=sampler,
                steps=s["throughput_steps"],
                rounds=s["throughput_rounds"],
                seed=args.seed,
            )
            for n in s["throughput_points"]
        ]
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["seconds"] = time.perf_counter() - t0
    res["targets"] = targets(res)
    print("\n".join(report(res)))
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
