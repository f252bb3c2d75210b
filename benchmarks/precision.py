"""The ``precision`` section of benchmarks/run.py: smvi's estimators in fp32 and with ``precision="bf16"``, side by
side on one trained model.

- AIS: throughput in leapfrog gradient evaluations per second (points × (chains + pilots) × ((steps − 1) × leapfrog
  steps + 1)), that count × the FLOPs of one evaluation ÷ the measured rate of a layer-shaped matrix product of the same
  precision, and the paired difference bf16 − fp32 of the estimates on the same images and seeds (mean ± SE over
  images). The bf16 time includes its one full-precision forward pass per trajectory (the exact energies).
- BDMC on data simulated from the model, at a few step counts, both precisions, with the sampler ``smvi evaluate``
  uses (from the encoder, 4 chains): the gap upper − lower (mean ± SE) and the paired difference
  (benchmarks/bdmc_precision.py's ``paired_bdmc``; that script is the larger measurement).
- IWAE: time and the paired difference bf16 − fp32 on the same samples.

Runs alternate the precision first in each round, one process, the same thread count. Nothing asserts on time.
"""

from __future__ import annotations

from statistics import median

import torch
from bdmc_precision import paired_bdmc
from harness import flops_per_gradient, interleaved, mean_se, timed

from smvi.core.estimators import ais, iwae_bound, native_bf16, simulate
from smvi.data.loading import binarize_fixed

PRECISIONS = ("fp32", "bf16")
IWAE_TOL = 0.05  # nats: the accuracy bf16 IWAE must show to be used (well below the ≈ 1 nat IWAE − AIS differences)


def _matmul_rates(s: dict, width: int) -> dict:
    """GFLOP/s (CPU and wall) of a layer-shaped product (rows × w · w × w) in each precision."""
    rows = s["prec_points"] * (s["prec_chains"] + 2)
    cases, flops = {}, 2 * rows * width * width
    for tag, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, w = torch.randn(rows, width).to(dtype), torch.randn(width, width).to(dtype)
        cases[tag] = lambda a=a, w=w: torch.nn.functional.linear(a, w)
    res = interleaved(cases, max(2, s["rounds"]), s["per_round"] * 2)
    return {
        k: {
            "rows": rows,
            "gflops_per_s_cpu": flops / v["cpu_ms"] / 1e6,
            "gflops_per_s_wall": flops / v["wall_ms"] / 1e6,
        }
        for k, v in res.items()
    }


def bench_precision(s: dict, model, data) -> dict:
    model = model.eval().requires_grad_(False)
    x = binarize_fixed(data.test_x[: s["prec_points"]], seed=1234)
    kw = dict(steps=s["prec_steps"], chains=s["prec_chains"], leapfrog_steps=s["prec_leapfrog"])
    out: dict = {"points": x.shape[0], **kw, "rounds": s["prec_rounds"], "native_bf16": native_bf16("cpu")}
    est = {p: [] for p in PRECISIONS}
    wall = {p: [] for p in PRECISIONS}
    cpu = {p: [] for p in PRECISIONS}
    acc = {p: [] for p in PRECISIONS}
    for r in range(s["prec_rounds"]):
        for p in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
            res, w, c = timed(lambda p=p, r=r: ais(model, x, seed=r, precision=p, **kw))
            est[p].append(res.log_px)
            wall[p].append(w)
            cpu[p].append(c)
            acc[p].append(res.acceptance)
    evals = x.shape[0] * (kw["chains"] + 2) * ((kw["steps"] - 1) * kw["leapfrog_steps"] + 1)
    flops = flops_per_gradient(model, x)
    rates = _matmul_rates(s, model.decoder[0].out_features if hasattr(model, "decoder") else 1024)
    out["gradient_evaluations"], out["gflop_per_evaluation"], out["matmul"] = evals, flops / 1e9, rates
    for p in PRECISIONS:
        e = torch.stack(est[p]).mean(0)
        thr_cpu, thr_wall = evals / median(cpu[p]), evals / median(wall[p])
        out[p] = {
            "wall_s": median(wall[p]),
            "cpu_s": median(cpu[p]),
            "evals_per_s_cpu": thr_cpu,
            "evals_per_s_wall": thr_wall,
            "acceptance": sum(acc[p]) / len(acc[p]),
            "fraction_of_matmul_rate_cpu": thr_cpu * flops / 1e9 / rates[p]["gflops_per_s_cpu"],
            "fraction_of_matmul_rate_wall": thr_wall * flops / 1e9 / rates[p]["gflops_per_s_wall"],
            "log_px_mean": float(e.mean()),
            "log_px_se": mean_se(e)[1],
        }
    d, se = mean_se(torch.stack(est["bf16"]).mean(0) - torch.stack(est["fp32"]).mean(0))
    out["bf16_minus_fp32"], out["bf16_minus_fp32_se"] = d, se
    out["bf16_over_fp32_throughput_cpu"] = out["bf16"]["evals_per_s_cpu"] / out["fp32"]["evals_per_s_cpu"]
    out["bf16_over_fp32_throughput_wall"] = out["bf16"]["evals_per_s_wall"] / out["fp32"]["evals_per_s_wall"]

    xs, zs = simulate(model, s["bdmc_points"], seed=7)  # BDMC with the evaluation's sampler
    out["bdmc"] = paired_bdmc(model, xs, zs, steps=tuple(s["bdmc_steps"]), seed=0, log=lambda line: None)

    iw = {}
    for p in PRECISIONS:
        v, w, c = timed(lambda p=p: iwae_bound(model, x, k=s["iwae_k"], seed=0, precision=p))
        iw[p] = {"value": v, "cpu_s": c, "wall_s": w}
    d, se = mean_se(iw["bf16"]["value"] - iw["fp32"]["value"])
    out["iwae"] = {
        "k": s["iwae_k"],
        **{
            p: {"mean": float(iw[p]["value"].mean()), "cpu_s": iw[p]["cpu_s"], "wall_s": iw[p]["wall_s"]}
            for p in PRECISIONS
        },
        "bf16_minus_fp32": d,
        "bf16_minus_fp32_se": se,
        "bf16_minus_fp32_max_abs": float((iw["bf16"]["value"] - iw["fp32"]["value"]).abs().max()),
        "fp32_over_bf16_time_cpu": iw["fp32"]["cpu_s"] / iw["bf16"]["cpu_s"],
    }
    return out


def precision_report(p: dict) -> list[str]:
    lines = [
        f"precision: AIS {p['points']} points × {p['chains']} chains × {p['steps']} steps × {p['leapfrog_steps']} "
        f"leapfrog, {p['rounds']} seed(s); native bf16: {p['native_bf16']}"
    ]
    for k in PRECISIONS:
        a = p[k]
        lines.append(
            f"  AIS {k}: {a['evals_per_s_cpu']:.0f} gradient evals/s cpu ({a['evals_per_s_wall']:.0f} wall), "
            f"{a['fraction_of_matmul_rate_cpu']:.2f} of the {k} matmul rate, acceptance {a['acceptance']:.3f},"
            f" log p(x) {a['log_px_mean']:.3f}"
        )
    lines.append(
        f"  AIS bf16 / fp32 throughput {p['bf16_over_fp32_throughput_cpu']:.2f}x cpu, "
        f"{p['bf16_over_fp32_throughput_wall']:.2f}x wall; bf16 − fp32 {p['bf16_minus_fp32']:+.4f} ± "
        f"{p['bf16_minus_fp32_se']:.4f} nats"
    )
    for steps, row in p["bdmc"].items():
        if isinstance(row, dict) and "fp32" in row:
            lines.append(
                f"  BDMC {steps:>6} steps: gap fp32 {row['fp32']['gap']:.3f} ± {row['fp32']['gap_se']:.3f}, "
                f"bf16 {row['bf16']['gap']:.3f} ± {row['bf16']['gap_se']:.3f} (paired "
                f"{row['gap_bf16_minus_fp32']:+.3f} ± {row['gap_bf16_minus_fp32_se']:.3f})"
            )
    i = p["iwae"]
    lines.append(
        f"  IWAE k={i['k']}: bf16 − fp32 {i['bf16_minus_fp32']:+.4f} ± {i['bf16_minus_fp32_se']:.4f} "
        f"(max |·| {i['bf16_minus_fp32_max_abs']:.4f}), fp32/bf16 time {i['fp32_over_bf16_time_cpu']:.2f}x"
    )
    return lines


def precision_targets(p: dict) -> list[tuple[str, str, bool | None]]:
    r, d, se = p["bf16_over_fp32_throughput_cpu"], p["bf16_minus_fp32"], p["bf16_minus_fp32_se"]
    rows = [
        (
            "AIS bf16 force >= 2x fp32 throughput, estimates within 2 SE",
            f"{r:.2f}x, {d:+.3f} ± {se:.3f}",
            r >= 2 and abs(d) <= 2 * se,
        )
    ]
    wider = [
        k
        for k, row in p["bdmc"].items()
        if isinstance(row, dict)
        and "fp32" in row
        and row["gap_bf16_minus_fp32"] > max(2 * row["gap_bf16_minus_fp32_se"], 1e-9)
    ]
    rows.append(("BDMC gaps in bf16 no wider than fp32 (paired, 2 SE)", f"wider at {wider or 'none'}", not wider))
    i = p["iwae"]
    rows.append(
        (
            f"IWAE bf16 within {IWAE_TOL} nats of fp32 (paired mean, same samples)",
            f"{i['bf16_minus_fp32']:+.4f} ± {i['bf16_minus_fp32_se']:.4f}",
            abs(i["bf16_minus_fp32"]) <= IWAE_TOL,
        )
    )
    return rows
