"""AIS and IWAE at the hardware limit (issue 26), every ratio measured side by side in one run, on one trained model.

    .venv/bin/python benchmarks/evaluation.py --run-dir RUN [--out FILE]   # ≈ 2 min of one idle core
    .venv/bin/python benchmarks/evaluation.py --quick                      # seconds: a tiny model on synthetic data

Sections (CPU time at one thread, medians over interleaved rounds; nothing asserts on time):

- ``transition``: AIS as ``smvi evaluate`` runs it (a batch of points × (4 + 2 pilot) chains × 5 leapfrogs, from the
  encoder) three ways: the *autograd reference* (smvi's own sampler with the model's explicit pass hidden, so the force
  comes from ``torch.autograd.grad`` in fp32), smvi in fp32 and smvi in bf16 (explicit decoder pass,
  :mod:`smvi.core.explicit`). Throughput in leapfrog gradient evaluations per CPU second, and the rate those
  evaluations' FLOPs reach against a layer-shaped matrix product (rows × 1024 · 1024 × 1024) in the same precision,
  measured in the same rounds. Equal estimates: the paired difference of log p̂(x) against the reference over the
  points (the same seeds, so fp32 differs from it by rounding only), at ``steps`` with dual averaging.
- ``potential``: one force evaluation alone (value and z-gradient, the same rows) by autograd and by the explicit pass,
  fp32 and bf16 (bf16 autograd = autocast), and the bf16 explicit pass through ``torch.compile`` (inductor).
- ``step_size``: time to the same converged estimate with the old rule (``ratio``) and dual averaging: AIS at a ladder
  of lengths on the same points, each run's CPU seconds and its mean distance to the reference value (the mean of
  the longest dual-averaging run); "converged" = within 0.1 nats of it.
- ``iwae``: the IWAE bound at k samples on a batch of points, fp32 and bf16, chunks of 64 samples (the old default)
  and of ≈ 1024 rows (the new default): time and the paired bf16 − fp32 difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import flops_per_gradient, interleaved, machine, mean_se, timed  # noqa: E402

from smvi.core.estimators import ais, iwae_bound  # noqa: E402

FULL = dict(
    points=50,
    chains=4,
    leapfrog=5,
    steps=20,
    rounds=2,
    equal_steps=50,
    ladder=(30, 100, 300),
    ladder_points=16,
    reference_steps=1000,
    iwae_points=50,
    iwae_k=128,
    width=1024,
)
QUICK = dict(
    points=8,
    chains=4,
    leapfrog=2,
    steps=4,
    rounds=2,
    equal_steps=6,
    ladder=(4, 8),
    ladder_points=4,
    reference_steps=16,
    iwae_points=8,
    iwae_k=16,
    width=32,
)
ENCODER = dict(start="encoder")


class AutogradOnly:
    """The model with its explicit decoder pass hidden: every estimator falls back to autograd (the reference)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        if name == "log_likelihood_and_grad":
            raise AttributeError(name)
        return getattr(self.model, name)


def bench_transition(s: dict, model, x: torch.Tensor) -> dict:
    rows = x.shape[0] * (s["chains"] + 2)
    kw = dict(steps=s["steps"], chains=s["chains"], leapfrog_steps=s["leapfrog"], seed=0, **ENCODER)
    ref = AutogradOnly(model)
    a = torch.randn(rows, s["width"])
    w = torch.randn(s["width"], s["width"])
    ab, wb = a.bfloat16(), w.bfloat16()
    cases = {
        "reference_fp32_autograd": lambda: ais(ref, x, **kw),
        "smvi_fp32": lambda: ais(model, x, **kw),
        "smvi_bf16": lambda: ais(model, x, precision="bf16", **kw),
        "matmul_fp32": lambda: torch.nn.functional.linear(a, w),
        "matmul_bf16": lambda: torch.nn.functional.linear(ab, wb),
    }
    res = interleaved({k: v for k, v in cases.items() if k.startswith("matmul")}, s["rounds"] * 2, 5)
    res.update(interleaved({k: v for k, v in cases.items() if not k.startswith("matmul")}, s["rounds"], 1))
    mm_flops = 2 * rows * s["width"] ** 2
    for p in ("fp32", "bf16"):
        res[f"matmul_{p}"]["gflops_per_s_cpu"] = mm_flops / res[f"matmul_{p}"]["cpu_ms"] / 1e6
    evals = rows * ((s["steps"] - 1) * s["leapfrog"] + 1)
    flops = flops_per_gradient(model, x[:1].expand(rows, -1)) * rows
    out = {"rows": rows, "gradient_evaluations": evals, "gflop_per_evaluation_row": flops / rows / 1e9, **res}
    for k in ("reference_fp32_autograd", "smvi_fp32", "smvi_bf16"):
        r = res[k]
        r["evals_per_s_cpu"] = evals / (r["cpu_ms"] / 1e3)
        rate = res["matmul_bf16" if k.endswith("bf16") else "matmul_fp32"]["gflops_per_s_cpu"]
        r["fraction_of_matmul_rate"] = r["evals_per_s_cpu"] * flops / rows / 1e9 / rate
    for k in ("smvi_fp32", "smvi_bf16"):
        out[f"{k}_over_reference"] = res[k]["evals_per_s_cpu"] / res["reference_fp32_autograd"]["evals_per_s_cpu"]
    # equal estimates: the same points and seed at a longer length with dual averaging, paired per point
    kw = dict(kw, steps=s["equal_steps"], adapt="dual_averaging")
    est = {
        "reference_fp32_autograd": ais(ref, x, **kw),
        "smvi_fp32": ais(model, x, **kw),
        "smvi_bf16": ais(model, x, precision="bf16", **kw),
    }
    out["equal"] = {
        "steps": s["equal_steps"],
        "adapt": "dual_averaging",
        **{k: {"log_px_mean": r.mean, "acceptance": r.acceptance} for k, r in est.items()},
    }
    for k in ("smvi_fp32", "smvi_bf16"):
        d, se = mean_se(est[k].log_px - est["reference_fp32_autograd"].log_px)
        out["equal"][f"{k}_minus_reference"], out["equal"][f"{k}_minus_reference_se"] = d, se
    return out


def bench_potential(s: dict, model, x: torch.Tensor) -> dict:
    rows = x.shape[0] * (s["chains"] + 2)
    xr = x.repeat(s["chains"] + 2, 1)
    z = torch.randn(rows, model.z_dim)

    def autograd(bf16: bool):
        with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            zz = z.detach().requires_grad_(True)
            return torch.autograd.grad((model.log_prior(zz) + model.log_likelihood(xr, zz)).sum(), zz)

    cases = {
        "autograd_fp32": lambda: autograd(False),
        "explicit_fp32": lambda: model.log_likelihood_and_grad(xr, z),
        "autograd_bf16": lambda: autograd(True),
        "explicit_bf16": lambda: model.log_likelihood_and_grad(xr, z, precision="bf16"),
    }
    compiled, why = _compiled_explicit(model, xr, z)
    if compiled is not None:
        cases["explicit_bf16_compiled"] = compiled
    return {"rows": rows, "compile_error": why, **interleaved(cases, s["rounds"] * 2, 3)}


def _compiled_explicit(model, xr: torch.Tensor, z: torch.Tensor):
    """The bf16 explicit pass through ``torch.compile`` (inductor; a first-order function, so the double-backward
    limitation of the training step does not apply), compiled by its first call; (None, the error's last line) where
    this machine cannot compile it."""
    fn = torch.compile(lambda zz: model.log_likelihood_and_grad(xr, zz, precision="bf16"), dynamic=False)
    try:
        fn(z)
    except Exception as e:  # no C++ compiler, an unsupported op: recorded, the other cases still run
        return None, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return (lambda: fn(z)), None


def bench_step_size(s: dict, model, x: torch.Tensor) -> dict:
    kw = dict(chains=s["chains"], leapfrog_steps=s["leapfrog"], seed=0, precision="bf16", **ENCODER)
    ref, _, ref_s = timed(lambda: ais(model, x, steps=s["reference_steps"], adapt="dual_averaging", **kw))
    out = {
        "points": x.shape[0],
        "reference": {
            "steps": s["reference_steps"],
            "log_px_mean": ref.mean,
            "acceptance": ref.acceptance,
            "cpu_s": ref_s,
        },
        "ladder": {},
    }
    for adapt in ("ratio", "dual_averaging"):
        rows = []
        for steps in s["ladder"]:
            r, _, c = timed(lambda steps=steps, adapt=adapt: ais(model, x, steps=steps, adapt=adapt, **kw))
            d, se = mean_se(r.log_px - ref.log_px)
            rows.append(
                {
                    "steps": steps,
                    "cpu_s": c,
                    "log_px_mean": r.mean,
                    "minus_reference": d,
                    "minus_reference_se": se,
                    "acceptance": r.acceptance,
                }
            )
        done = [r for r in rows if abs(r["minus_reference"]) <= 0.1]
        out["ladder"][adapt] = {
            "runs": rows,
            "first_within_0.1": done[0]["steps"] if done else None,
            "cpu_s_to_within_0.1": done[0]["cpu_s"] if done else None,
        }
    return out


def bench_iwae(s: dict, model, x: torch.Tensor) -> dict:
    k = s["iwae_k"]
    vals, cases = {}, {}
    for p in ("fp32", "bf16"):
        for chunk, tag in ((64, "chunk64"), (None, "rows1024")):

            def run(p=p, chunk=chunk, tag=tag):
                vals[(p, tag)] = iwae_bound(model, x, k=k, seed=0, chunk_size=chunk, precision=p)

            cases[f"{p}_{tag}"] = run
    out = {"k": k, "points": x.shape[0], **interleaved(cases, s["rounds"], 1)}
    d, se = mean_se(vals[("bf16", "rows1024")] - vals[("fp32", "rows1024")])
    out["bf16_minus_fp32"], out["bf16_minus_fp32_se"] = d, se
    out["bf16_minus_fp32_max_abs"] = float((vals[("bf16", "rows1024")] - vals[("fp32", "rows1024")]).abs().max())
    out["fp32_chunk64_over_bf16_rows1024"] = out["fp32_chunk64"]["cpu_ms"] / out["bf16_rows1024"]["cpu_ms"]
    return out


def report(res: dict) -> str:
    m, t, lines = res["machine"], res["transition"], []
    lines.append(
        f"{m['cpu']} | torch {m['torch']} | {m['torch_threads']} thread | avx512_bf16 {m['avx512_bf16']} | "
        f"load {m['load_average_start'][0]:.1f} -> {res['load_average_end'][0]:.1f} | {res['note']}"
    )
    lines.append(
        f"transition: {t['rows']} rows (points × (chains + 2 pilots)), {res['settings']['steps']} steps × "
        f"{res['settings']['leapfrog']} leapfrogs, from the encoder; matmul fp32 "
        f"{t['matmul_fp32']['gflops_per_s_cpu']:.0f} GFLOP/s, bf16 {t['matmul_bf16']['gflops_per_s_cpu']:.0f}"
    )
    for k in ("reference_fp32_autograd", "smvi_fp32", "smvi_bf16"):
        r = t[k]
        lines.append(
            f"  {k:<24} {r['cpu_ms'] / 1e3:7.2f} s cpu  {r['evals_per_s_cpu']:8.0f} evals/s  "
            f"{r['fraction_of_matmul_rate']:.2f} of its precision's matmul rate"
        )
    e = t["equal"]
    lines.append(
        f"  throughput / reference: fp32 {t['smvi_fp32_over_reference']:.2f}x, bf16 "
        f"{t['smvi_bf16_over_reference']:.2f}x; estimates at {e['steps']} steps (dual averaging) minus the "
        f"reference: fp32 {e['smvi_fp32_minus_reference']:+.3f} ± {e['smvi_fp32_minus_reference_se']:.3f}, "
        f"bf16 {e['smvi_bf16_minus_reference']:+.3f} ± {e['smvi_bf16_minus_reference_se']:.3f} nats"
    )
    p = res["potential"]
    lines.append(
        f"potential alone ({p['rows']} rows, ms cpu): "
        + ", ".join(
            f"{k} {p[k]['cpu_ms']:.1f}"
            for k in ("autograd_fp32", "explicit_fp32", "autograd_bf16", "explicit_bf16", "explicit_bf16_compiled")
            if k in p
        )
        + (f"; torch.compile failed: {p['compile_error']}" if p.get("compile_error") else "")
    )
    st = res["step_size"]
    lines.append(
        f"step size: {st['points']} points, bf16, reference {st['reference']['log_px_mean']:.3f} "
        f"({st['reference']['steps']} steps, dual averaging, acceptance {st['reference']['acceptance']:.2f})"
    )
    for adapt, lad in st["ladder"].items():
        runs = "; ".join(
            f"{r['steps']}: {r['minus_reference']:+.2f} ± {r['minus_reference_se']:.2f} acc "
            f"{r['acceptance']:.2f} {r['cpu_s']:.0f} s"
            for r in lad["runs"]
        )
        lines.append(
            f"  {adapt:<15} {runs}  -> within 0.1 nats at {lad['first_within_0.1']} steps "
            f"({cpu if (cpu := lad['cpu_s_to_within_0.1']) is None else round(cpu)} s)"
        )
    i = res["iwae"]
    lines.append(
        f"IWAE k={i['k']} on {i['points']} points (ms cpu): "
        + ", ".join(
            f"{k} {i[k]['cpu_ms']:.0f}" for k in ("fp32_chunk64", "fp32_rows1024", "bf16_chunk64", "bf16_rows1024")
        )
        + f"; bf16 − fp32 {i['bf16_minus_fp32']:+.4f} ± {i['bf16_minus_fp32_se']:.4f} (max |·| "
        f"{i['bf16_minus_fp32_max_abs']:.4f}); fp32 chunk 64 / bf16 rows 1024 "
        f"{i['fp32_chunk64_over_bf16_rows1024']:.2f}x"
    )
    return "\n".join(lines)


def _model_and_data(args, s):
    if args.quick:
        import smvi
        from smvi.core.estimators import simulate

        torch.manual_seed(0)
        cfg = smvi.ModelConfig(encoder_hidden=(s["width"],), decoder_hidden=(s["width"], s["width"]), z_dim=4)
        model = smvi.VAE(x_dim=20, config=cfg)
        return model, simulate(model.requires_grad_(False), max(s["points"], s["iwae_points"]), seed=0)[0]
    from smvi.data.loading import load_mnist
    from smvi.stages.evaluate import evaluation_set
    from smvi.stages.trained import load_run

    run = load_run(args.run_dir)
    data = load_mnist(download=False, progress=False)
    n = max(s["points"], s["iwae_points"], s["ladder_points"])
    return run.model, evaluation_set(data.test_x, n, 0, run.config.data.eval_seed, run.config.data.transform)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="a trained run (smvi train); required unless --quick")
    ap.add_argument("--quick", action="store_true", help="tiny model, synthetic data: the smoke test")
    ap.add_argument("--out", type=Path, default=None, help="write the results (JSON) here")
    ap.add_argument("--note", default="", help="a line about the machine's state, printed beside the numbers")
    ap.add_argument("--skip", nargs="*", default=[], choices=["step_size"], help="sections to leave out")
    args = ap.parse_args(argv)
    if not args.quick and not args.run_dir:
        ap.error("--run-dir is required (or --quick)")
    torch.set_num_threads(1)
    s = QUICK if args.quick else FULL
    model, x = _model_and_data(args, s)
    model = model.eval().requires_grad_(False)
    res = {"settings": s, "machine": machine(), "note": args.note, "run_dir": args.run_dir}
    t0 = time.perf_counter()
    res["transition"] = bench_transition(s, model, x[: s["points"]])
    res["potential"] = bench_potential(s, model, x[: s["points"]])
    res["iwae"] = bench_iwae(s, model, x[: s["iwae_points"]])
    if "step_size" not in args.skip:
        res["step_size"] = bench_step_size(s, model, x[: s["ladder_points"]])
    res["load_average_end"], res["wall_s"] = list(__import__("os").getloadavg()), time.perf_counter() - t0
    text = (
        report(res)
        if "step_size" in res
        else report(
            {
                **res,
                "step_size": {
                    "points": 0,
                    "reference": {"log_px_mean": float("nan"), "steps": 0, "acceptance": float("nan")},
                    "ladder": {},
                },
            }
        )
    )
    print(text)
    if args.out:
        args.out.write_text(json.dumps({**res, "printed": text.splitlines()}, indent=2, default=str) + "\n")
    return res


if __name__ == "__main__":
    main()
