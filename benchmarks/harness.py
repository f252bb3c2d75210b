"""Measuring and reporting for the benchmarks: interleaved timing, FLOP counting, the machine's description; the
training step whose cost benchmarks/families.py and rejection.py compare (with its ratios and table); and for
benchmarks/run.py the issue's ratios and targets, and the printed table."""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

import smvi
from smvi.core.objectives import training_objective

T = TypeVar("T")


# ---- measuring -------------------------------------------------------------------------------------------------------
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, per_round: int, seed: int = 0) -> dict:
    """Run every case ``per_round`` times per round, in a freshly shuffled order each round, after one warm-up call.
    Per case: the median over rounds of each round's median wall and CPU milliseconds, and the per-round values."""
    rng = random.Random(seed)
    for fn in cases.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        order = list(cases)
        rng.shuffle(order)
        for k in order:
            w, c = [], []
            for _ in range(per_round):
                t0, c0 = time.perf_counter(), time.process_time()
                cases[k]()
                w.append(time.perf_counter() - t0)
                c.append(time.process_time() - c0)
            wall[k].append(median(w) * 1e3)
            cpu[k].append(median(c) * 1e3)
    return {
        k: {
            "wall_ms": median(wall[k]),
            "cpu_ms": median(cpu[k]),
            "wall_ms_rounds": [round(v, 2) for v in wall[k]],
            "cpu_ms_rounds": [round(v, 2) for v in cpu[k]],
        }
        for k in cases
    }


def training_step(model_settings: dict, objective: dict, s: dict, precision: str = "fp32") -> Callable[[], None]:
    """One training step of the VAE of sizes ``s`` (``x_dim``, ``hidden``, ``z_dim``, ``batch``) with
    ``model_settings`` (:class:`smvi.ModelConfig`'s keys): the objective (``objective``: ``training_objective``'s
    keywords; in bf16 autocast with ``precision="bf16"``, weights and Adam fp32), its backward pass and one Adam update,
    on one fixed batch of binary images."""
    torch.manual_seed(0)
    cfg = smvi.ModelConfig(z_dim=s["z_dim"], encoder_hidden=s["hidden"], decoder_hidden=s["hidden"], **model_settings)
    model = smvi.VAE(s["x_dim"], cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.rand(s["batch"], s["x_dim"], generator=torch.Generator().manual_seed(1)))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = training_objective(model, x, **objective).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_ratios(times: dict, base: Callable[[str], str], width: int) -> dict:
    """Each case's time (:func:`interleaved`) as a ratio to its ``base(case)``'s, by clock (``cpu``, ``wall``); prints
    them as a table, the case names ``width`` wide."""
    ratios = {
        clock: {k: times[k][f"{clock}_ms"] / times[base(k)][f"{clock}_ms"] for k in times} for clock in ("cpu", "wall")
    }
    print(
        f"{'case':<{width}}{'cpu ms':>10}{'wall ms':>10}{'cpu ratio':>11}   (ratio to the diagonal step at the same λ)"
    )
    for k in times:
        print(f"{k:<{width}}{times[k]['cpu_ms']:>10.1f}{times[k]['wall_ms']:>10.1f}{ratios['cpu'][k]:>10.2f}x")
    return ratios


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """``fn()``, its wall and its CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def mean_se(d: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of ``d``'s values (in its dtype); SE is NaN for one value."""
    return float(d.mean()), float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else float("nan")


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_gradient(model, x: torch.Tensor) -> float:
    """FLOPs of one evaluation of ∇_z log p(x, z) by autograd (decoder forward + input-gradient), per row."""
    z, shift = torch.randn(x.shape[0], model.z_dim), torch.zeros(1, requires_grad=True)

    def grad():  # with respect to a non-leaf: the flop counter's hooks refuse autograd.grad on a leaf
        with torch.enable_grad():
            zz = z + shift
            torch.autograd.grad((model.log_prior(zz) + model.log_likelihood(x, zz)).sum(), zz)

    return count_flops(grad) / x.shape[0]


def machine() -> dict:
    model = platform.processor() or ""
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cores_available": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "smvi": smvi.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "load_average_start": os.getloadavg(),
    }


# ---- ratios and report -----------------------------------------------------------------------------------------------
def ratios(res: dict) -> dict:
    """The issue's ratios, from wall time and from CPU time (the robust one on a loaded machine at one thread)."""
    st, tr, ais = res["steps"], res.get("training"), res.get("ais")
    out: dict[str, dict] = {}
    for clock in ("wall", "cpu"):
        key, r = f"{clock}_ms", {}
        for b in res["settings"]["batches"]:
            t = lambda k, b=b, key=key: st[f"{k}_b{b}"][key]  # noqa: E731
            r[f"smvi_over_vae_b{b}"] = t("smvi") / t("vae")
            r[f"smvi_bf16_over_vae_b{b}"] = t("smvi_bf16") / t("vae")
            r[f"smvi_bf16_over_vae_bf16_b{b}"] = t("smvi_bf16") / t("vae_bf16")
            r[f"reference_over_smvi_b{b}"] = t("reference") / t("smvi")
            r[f"reference_over_smvi_bf16_b{b}"] = t("reference") / t("smvi_bf16")
            r[f"adam_default_over_fused_step_b{b}"] = t("smvi") / t("smvi_fused_adam")
            if f"smvi_compiled_b{b}" in st:
                r[f"eager_over_compiled_smvi_b{b}"] = t("smvi") / t("smvi_compiled")
            rate = lambda k, clock=clock: st[k][f"gflops_per_s_{clock}"]  # noqa: E731
            for k in ("vae", "smvi", "reference"):
                r[f"{k}_flops_fraction_of_matmul_b{b}"] = rate(f"{k}_b{b}") / rate("matmul_fp32")
                r[f"{k}_flops_fraction_of_layer_matmul_b{b}"] = rate(f"{k}_b{b}") / rate("matmul_fp32_layer")
            r[f"smvi_bf16_flops_fraction_of_bf16_matmul_b{b}"] = rate(f"smvi_bf16_b{b}") / rate("matmul_bf16")
        r["bf16_over_fp32_matmul_rate"] = (
            st["matmul_bf16"][f"gflops_per_s_{clock}"] / st["matmul_fp32"][f"gflops_per_s_{clock}"]
        )
        if tr:
            r["training_reference_over_smvi"] = tr["reference"][f"{clock}_s"] / tr["smvi"][f"{clock}_s"]
            r["training_reference_over_smvi_bf16_fused_adam"] = (
                tr["reference"][f"{clock}_s"] / tr["smvi_bf16_fused_adam"][f"{clock}_s"]
            )
        if ais:
            r["ais_smvi_over_reference_throughput"] = (
                ais["smvi"][f"throughput_{clock}"] / ais["reference"][f"throughput_{clock}"]
            )
        out[clock] = r
    return out


def targets(res: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's targets, from CPU-time ratios at the largest batch."""
    r, b = res["ratios"]["cpu"], max(res["settings"]["batches"])
    rows = [
        ("SMVI step <= 1.2x VAE step (fp32)", f"{r[f'smvi_over_vae_b{b}']:.2f}x", r[f"smvi_over_vae_b{b}"] <= 1.2),
        (
            "  same, SMVI in bf16 autocast (opt-in)",
            f"{r[f'smvi_bf16_over_vae_b{b}']:.2f}x",
            r[f"smvi_bf16_over_vae_b{b}"] <= 1.2,
        ),
    ]
    tr = res.get("training")
    if tr:
        for name, label in (("smvi", "fp32"), ("smvi_bf16_fused_adam", "bf16 + fused Adam, prototype")):
            speed = tr["reference"]["cpu_s"] / tr[name]["cpu_s"]
            gap = tr[name]["elbo_minus_reference"]
            rows.append(
                (
                    f"training >= 2x reference, ELBO within 0.5 nats ({label})",
                    f"{speed:.2f}x, ELBO {gap:+.2f} nats",
                    speed >= 2 and abs(gap) <= 0.5,
                )
            )
    ais = res.get("ais")
    if ais:
        a = r["ais_smvi_over_reference_throughput"]
        d, se = ais["log_px_smvi_minus_reference"], ais["log_px_smvi_minus_reference_se"]
        rows.append(
            (
                "AIS >= 3x reference, same estimate",
                f"{a:.1f}x, log p(x) {d:+.2f} ± {se:.2f}",
                a >= 3 and (abs(d) <= 3 * se or abs(d) < 0.5),
            )
        )
    rows.append(
        (
            "SMVI step's FLOP/s / fp32 matmul rate (2048^2 | layer-shaped)",
            f"{r[f'smvi_flops_fraction_of_matmul_b{b}']:.2f} | {r[f'smvi_flops_fraction_of_layer_matmul_b{b}']:.2f}",
            None,
        )
    )
    return rows


def report(res: dict) -> str:
    st, lines = res["steps"], []
    m = res["machine"]
    lines.append(
        f"{m['cpu']} | {m['cores_available']} cores | torch {m['torch']} | {m['torch_threads']} thread(s) | "
        f"load {m['load_average_start'][0]:.1f} -> {m['load_average_end'][0]:.1f}"
    )
    lines.append(f"{'case':<28}{'wall ms':>10}{'cpu ms':>10}{'GFLOP':>8}{'GFLOP/s cpu':>13}")
    for k, v in st.items():
        lines.append(
            f"{k:<28}{v['wall_ms']:>10.1f}{v['cpu_ms']:>10.1f}{v.get('gflop', float('nan')):>8.2f}"
            f"{v.get('gflops_per_s_cpu', float('nan')):>13.1f}"
        )
    for k, v in res.get("threads", {}).items():
        lines.append(f"{k:<28}{v['wall_ms']:>10.1f}{v['cpu_ms']:>10.1f}")
    for k, v in res.get("ais_potential", {}).items():
        if isinstance(v, dict):
            lines.append(
                f"potential {k:<18}{v['wall_ms']:>10.2f}{v['cpu_ms']:>10.2f}{v['us_per_row_cpu']:>10.2f} us/row"
            )
    if res.get("training"):
        for k in ("reference", "smvi", "smvi_bf16_fused_adam"):
            v = res["training"][k]
            loop = f" (epoch loops {v['loop_wall_s']:.1f} s)" if "loop_wall_s" in v else ""
            lines.append(
                f"training {k:<20} wall {v['wall_s']:.1f} s{loop}, cpu {v['cpu_s']:.1f} s, test ELBO "
                f"{v['test_elbo']:.2f} ({v['elbo_minus_reference']:+.2f} "
                f"± {v['elbo_minus_reference_se']:.2f})"
            )
    if res.get("ais"):
        a = res["ais"]
        for k in ("smvi", "reference"):
            lines.append(
                f"AIS {k:<10} wall {a[k]['wall_s']:.1f} s, {a[k]['throughput_wall']:.0f} point-chain-steps/s,"
                f" log p(x) {a[k]['log_px_mean']:.2f}"
            )
    lines.append("ratios (cpu time | wall time):")
    for k in res["ratios"]["cpu"]:
        lines.append(f"  {k:<48}{res['ratios']['cpu'][k]:>8.2f} |{res['ratios']['wall'][k]:>8.2f}")
    lines.append("targets (cpu-time ratios at the largest batch):")
    for name, value, met in targets(res):
        lines.append(f"  {name:<78}{value:<30}{'' if met is None else 'met' if met else 'NOT met'}")
    return "\n".join(lines)
