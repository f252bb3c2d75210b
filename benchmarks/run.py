"""smvi's performance benchmark: one command, every number measured side by side in one run.

    .venv/bin/python benchmarks/run.py            # full run on MNIST (≈ 20–25 min), writes benchmarks/results.json
    .venv/bin/python benchmarks/run.py --compile  # also a torch.compile'd SMVI step
    .venv/bin/python benchmarks/run.py --quick    # seconds, tiny model on synthetic data (the smoke test)

Sections (see benchmarks/README.md for how to read them):

- ``steps``: one training step (objective, backward, Adam) of the paper's VAE at λ = 0, of SMVI at λ > 0, of the
  plain reference (benchmarks/reference.py), the same in bf16 autocast, and the machine's 2048² matrix-product rate,
  all interleaved in shuffled rounds; medians of wall and CPU time.
  FLOPs are counted (torch.utils.flop_counter), so achieved FLOP/s ÷ matrix-multiply rate is reported.
- ``threads``: the SMVI step and the matrix product at 1 thread and at every core.
- ``training``: the same epochs of the reference loop, of ``smvi.stages.train.train`` and of a prototype loop with the
  changes suggested for train.py (bf16 autocast, fused Adam), interleaved epoch by epoch; time and final test ELBO.
- ``ais``: ``smvi.core.estimators.ais`` against the reference loop on the model trained above: throughput
  (points × chains × steps per second) and the two estimates; ``ais_potential``: one HMC potential evaluation
  (decoder value and z-gradient) per row at 16…4096 rows, by autograd, by a graph-free explicit pass, and in bf16
  (benchmarks/potential.py).
- ``precision``: AIS, BDMC and IWAE in fp32 and with ``precision="bf16"`` on a trained model (the training section's, or
  ``--run-dir``): throughput, fraction of each precision's matmul rate, paired differences (benchmarks/precision.py).
- ``epochs``: per-epoch training time of the paper's model at 1 and 2 threads, fp32 / bf16 autocast / bf16 with fp32
  master weights / (``--compile``) compiled bf16; 300-epoch extrapolation and test ELBO vs fp32 (benchmarks/epochs.py).

Timing on a shared machine is noisy: everything is interleaved and repeated, medians are reported, the load average
is recorded, and CPU time (time.process_time) is reported beside wall time — with one thread it is insensitive to
other processes. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epochs import bench_epochs, epochs_report, epochs_targets  # noqa: E402
from harness import count_flops, interleaved, machine, median, ratios, report, targets  # noqa: E402
from potential import bench_ais_potential  # noqa: E402
from precision import bench_precision, precision_report, precision_targets  # noqa: E402
from reference import reference_ais, reference_loss  # noqa: E402

import smvi  # noqa: E402
from smvi.core.objectives import smvi_objective  # noqa: E402
from smvi.data.loading import DynamicBinarizer, ImageData, binarize_fixed  # noqa: E402
from smvi.settings.run import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from smvi.stages.train import load_run, train  # noqa: E402

LAM = 0.01
FULL = dict(
    data="mnist",
    hidden=(1024, 1024),
    z_dim=50,
    batches=(100, 512),
    rounds=5,
    per_round=3,
    mm_n=2048,
    train_n=20000,
    epochs=3,
    eval_n=2000,
    ais_points=64,
    ais_chains=16,
    ais_steps=30,
    ais_leapfrog=5,
    ais_rounds=1,
    prec_points=64,
    prec_chains=16,
    prec_steps=100,
    prec_leapfrog=5,
    prec_rounds=2,
    bdmc_points=16,
    bdmc_steps=(100, 300, 1000),
    iwae_k=1000,
    epoch_n=60000,
    epoch_batch=512,
    epoch_epochs=3,
    epoch_threads=2,
)
QUICK = dict(
    data="synthetic",
    hidden=(32, 32),
    z_dim=4,
    batches=(16,),
    rounds=2,
    per_round=1,
    mm_n=128,
    train_n=64,
    epochs=1,
    eval_n=32,
    ais_points=2,
    ais_chains=3,
    ais_steps=4,
    ais_leapfrog=2,
    ais_rounds=1,
    prec_points=8,
    prec_chains=4,
    prec_steps=6,
    prec_leapfrog=3,
    prec_rounds=2,
    bdmc_points=4,
    bdmc_steps=(3, 6),
    iwae_k=16,
    epoch_n=64,
    epoch_batch=16,
    epoch_epochs=2,
    epoch_threads=2,
)


# ---- the pieces being measured ---------------------------------------------------------------------------------------
def step_fn(kind: str, model, x: torch.Tensor, *, bf16: bool = False, fused_adam: bool = False) -> Callable[[], None]:
    """One training step (loss, backward, Adam) of the given kind on its own copy of ``model``."""
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam or None)
    losses = {
        "vae": lambda: smvi_objective(model, x, lam=0.0).loss.mean(),
        "smvi": lambda: smvi_objective(model, x, lam=LAM).loss.mean(),
        "reference": lambda: reference_loss(model, x, LAM)[0],
    }

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = losses[kind]()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def matmul_fn(n: int, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return lambda: a @ b


def make_data(s: dict) -> ImageData:
    if s["data"] == "mnist":
        return smvi.data.loading.load_mnist(progress=False)
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(10, 784, generator=g) ** 3
    make = lambda n: (protos[torch.arange(n) % 10] + 0.1 * torch.rand(n, 784, generator=g)).clamp(0, 1)  # noqa: E731
    return ImageData(make(s["train_n"]), torch.arange(s["train_n"]) % 10, make(s["eval_n"]), torch.arange(s["eval_n"]))


def vae(s: dict, seed: int = 0) -> smvi.VAE:
    torch.manual_seed(seed)
    return smvi.VAE(config=ModelConfig(encoder_hidden=s["hidden"], decoder_hidden=s["hidden"], z_dim=s["z_dim"]))


# ---- sections --------------------------------------------------------------------------------------------------------
def bench_steps(s: dict, data: ImageData, compile_: bool, notes: dict) -> dict:
    model = vae(s)
    cases: dict[str, Callable] = {}
    flops: dict[str, int] = {}
    for b in s["batches"]:
        x = binarize_fixed(data.train_x[:b], seed=0)
        for kind in ("vae", "smvi", "reference"):
            cases[f"{kind}_b{b}"] = step_fn(kind, model, x)
            flops[f"{kind}_b{b}"] = count_flops(step_fn(kind, model, x))
        for kind in ("vae", "smvi"):
            cases[f"{kind}_bf16_b{b}"] = step_fn(kind, model, x, bf16=True)
            flops[f"{kind}_bf16_b{b}"] = flops[f"{kind}_b{b}"]
        cases[f"smvi_fused_adam_b{b}"] = step_fn("smvi", model, x, fused_adam=True)
        if compile_:
            compiled_model = copy.deepcopy(model)
            loss = torch.compile(lambda m=compiled_model, x=x: smvi_objective(m, x, lam=LAM).loss.mean())
            opt = torch.optim.Adam(compiled_model.parameters(), lr=1e-3)
            t0 = time.perf_counter()
            try:
                loss().backward()
            except RuntimeError as e:  # torch 2.13's aot_autograd has no double backward, which D_SM needs (λ > 0)
                notes[f"smvi_compiled_b{b}"] = str(e).strip().splitlines()[-1]
                print(f"  torch.compile of the SMVI step: unsupported ({notes[f'smvi_compiled_b{b}']})", flush=True)
                continue
            print(f"  torch.compile of the SMVI step at batch {b}: {time.perf_counter() - t0:.0f} s", flush=True)
            cases[f"smvi_compiled_b{b}"] = lambda loss=loss, opt=opt: (opt.zero_grad(), loss().backward(), opt.step())
    width = s["hidden"][0]
    for tag, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        cases[f"matmul_{tag}"] = matmul_fn(s["mm_n"], dtype)
        flops[f"matmul_{tag}"] = 2 * s["mm_n"] ** 3
        a, w = torch.randn(max(s["batches"]), width).to(dtype), torch.randn(width, width).to(dtype)
        cases[f"matmul_{tag}_layer"] = lambda a=a, w=w: torch.nn.functional.linear(a, w)  # a hidden layer's product
        flops[f"matmul_{tag}_layer"] = 2 * a.shape[0] * width * width
    big = max(s["batches"])
    gray = data.train_x
    loader = DynamicBinarizer(gray, big, seed=1)
    batches = iter(())

    def binarize() -> None:
        nonlocal batches
        if next(batches, None) is None:
            batches = loader.epoch()

    cases[f"binarize_b{big}"] = binarize
    res = interleaved(cases, s["rounds"], s["per_round"])
    for k, v in res.items():
        if k in flops:
            v["gflop"] = flops[k] / 1e9
            v["gflops_per_s_wall"] = flops[k] / v["wall_ms"] / 1e6
            v["gflops_per_s_cpu"] = flops[k] / v["cpu_ms"] / 1e6
    return res


def bench_threads(s: dict, data: ImageData) -> dict:
    big, all_cores = max(s["batches"]), len(os.sched_getaffinity(0))
    step = step_fn("smvi", vae(s), binarize_fixed(data.train_x[:big], seed=0))
    mm = matmul_fn(s["mm_n"], torch.float32)
    before = torch.get_num_threads()
    cases = {}
    for n in sorted({1, all_cores}):
        cases[f"smvi_b{big}_threads{n}"] = lambda n=n: (torch.set_num_threads(n), step())
        cases[f"matmul_fp32_threads{n}"] = lambda n=n: (torch.set_num_threads(n), mm())
    try:
        return interleaved(cases, max(2, s["rounds"] // 2), s["per_round"])
    finally:
        torch.set_num_threads(before)


def _eval_elbo(model, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(4321)
        terms = smvi_objective(model, x, lam=0.0, compute_d_sm=True)
    return terms.elbo.double(), float(terms.d_sm.mean())


def _manual_epoch(model, opt, loader: DynamicBinarizer, *, reference: bool, bf16: bool) -> None:
    """The reference loop, or train.py's epoch with the suggested changes (bf16 autocast, fused Adam)."""
    for x in loader.epoch():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = reference_loss(model, x, LAM)[0] if reference else smvi_objective(model, x, lam=LAM).loss.mean()
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            opt.step()


def bench_training(s: dict, data: ImageData, workdir: Path) -> tuple[dict, smvi.VAE]:
    subset = ImageData(data.train_x[: s["train_n"]], data.train_y[: s["train_n"]], data.test_x, data.test_y)
    eval_x = binarize_fixed(data.test_x[: s["eval_n"]], seed=1234)
    cfg = RunConfig(
        model=ModelConfig(encoder_hidden=s["hidden"], decoder_hidden=s["hidden"], z_dim=s["z_dim"]),
        data=DataConfig(monitor_size=min(1000, s["eval_n"])),
        train=TrainConfig(lam=LAM, epochs=1, batch_size=512, seed=0, device="cpu"),
    )
    run_dir = workdir / "smvi_run"
    manual = {}
    for name, reference, bf16, fused in (
        ("reference", True, False, False),
        ("smvi_bf16_fused_adam", False, True, True),
    ):
        model = vae(s)  # train()'s initialization, data stream (seed + 1) and, carried below, its z-noise stream
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
        loader = DynamicBinarizer(subset.train_x, 512, seed=1)
        manual[name] = [model, opt, loader, reference, bf16, torch.get_rng_state()]
    wall = {k: 0.0 for k in ("reference", "smvi", "smvi_bf16_fused_adam")}
    cpu = dict(wall)
    order = list(wall)
    for epoch in range(1, s["epochs"] + 1):
        random.Random(epoch).shuffle(order)
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            if name == "smvi":
                train(
                    cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": epoch})}),
                    run_dir,
                    resume=epoch > 1,
                    progress=False,
                    data=subset,
                )
            else:
                model, opt, loader, reference, bf16, rng = manual[name]
                torch.set_rng_state(rng)
                _manual_epoch(model, opt, loader, reference=reference, bf16=bf16)
                manual[name][-1] = torch.get_rng_state()
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    models = {"smvi": load_run(run_dir).model, **{k: v[0] for k, v in manual.items()}}
    loop_s = sum(json.loads(ln)["seconds"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines())
    ref_elbo, _ = _eval_elbo(models["reference"], eval_x)
    out = {"epochs": s["epochs"], "train_examples": s["train_n"], "eval_points": s["eval_n"], "lam": LAM}
    for name, model in models.items():
        elbo, d_sm = _eval_elbo(model, eval_x)
        diff = elbo - ref_elbo
        out[name] = {
            "wall_s": wall[name],
            "cpu_s": cpu[name],
            "test_elbo": float(elbo.mean()),
            "test_d_sm": d_sm,
            "elbo_minus_reference": float(diff.mean()),
            "elbo_minus_reference_se": float(diff.std() / math.sqrt(len(diff))),
        }
    # train()'s own epoch-loop time, without its per-epoch test monitor, checkpoint and (here) resume
    out["smvi"]["loop_wall_s"] = loop_s
    return out, models["smvi"]


def bench_ais(s: dict, model, data: ImageData) -> dict:
    from smvi.core.estimators import ais

    x = binarize_fixed(data.test_x[: s["ais_points"]], seed=1234)
    kw = dict(steps=s["ais_steps"], chains=s["ais_chains"], leapfrog_steps=s["ais_leapfrog"])
    est: dict[str, list[torch.Tensor]] = {"smvi": [], "reference": []}
    wall: dict[str, list[float]] = {k: [] for k in est}
    cpu: dict[str, list[float]] = {k: [] for k in est}
    for r in range(s["ais_rounds"]):
        for name in ("smvi", "reference") if r % 2 == 0 else ("reference", "smvi"):
            t0, c0 = time.perf_counter(), time.process_time()
            if name == "smvi":
                log_px = ais(model, x, seed=r, **kw).log_px
            else:
                log_px = reference_ais(model, x, seed=r, **kw)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            est[name].append(log_px.double())
    work = x.shape[0] * s["ais_chains"] * s["ais_steps"]
    out = {"points": x.shape[0], **kw, "rounds": s["ais_rounds"]}
    for name in est:
        out[name] = {
            "wall_s": median(wall[name]),
            "cpu_s": median(cpu[name]),
            "throughput_wall": work / median(wall[name]),
            "throughput_cpu": work / median(cpu[name]),
            "log_px_mean": float(torch.stack(est[name]).mean()),
        }
    diff = torch.stack(est["smvi"]).mean(0) - torch.stack(est["reference"]).mean(0)
    out["log_px_smvi_minus_reference"] = float(diff.mean())
    out["log_px_smvi_minus_reference_se"] = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    with torch.no_grad():
        out["elbo_mean"] = float(smvi.elbo(model, x, n_samples=100).mean())
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model and synthetic data: a smoke test in seconds")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default: benchmarks/results.json; with --quick: not written unless given)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every section but `threads` (default "
        "1: per-step CPU time is then insensitive to other processes)",
    )
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile'd SMVI step (compiles ~1 min)")
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["threads", "training", "ais", "precision", "epochs"],
        help="sections to skip",
    )
    ap.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="a trained run (smvi train) whose model the precision "
        "section uses (default: the model the training section trains)",
    )
    args = ap.parse_args(argv)
    s = dict(QUICK if args.quick else FULL)
    torch.set_num_threads(args.threads)
    res: dict = {
        "command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": s,
        "machine": machine(),
    }
    data = make_data(s)
    t0 = time.perf_counter()
    print("steps ...", flush=True)
    res["unsupported"] = {}  # case -> why it could not run (e.g. torch.compile of a double backward)
    res["steps"] = bench_steps(s, data, args.compile, res["unsupported"])
    if "threads" not in args.skip:
        print("threads ...", flush=True)
        res["threads"] = bench_threads(s, data)
    model = None
    if "training" not in args.skip:
        print("training ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            res["training"], model = bench_training(s, data, Path(tmp))
    if "ais" not in args.skip:
        print("ais ...", flush=True)
        model = model if model is not None else vae(s).eval()
        res["ais"] = bench_ais(s, model, data)
        res["ais_potential"] = bench_ais_potential(s, model, data)
    if "precision" not in args.skip:
        print("precision ...", flush=True)
        trained = load_run(args.run_dir).model if args.run_dir else model if model is not None else vae(s)
        res["precision"] = bench_precision(s, trained, data)
        res["precision"]["model"] = str(args.run_dir) if args.run_dir else "training section" if model else "untrained"
    if "epochs" not in args.skip:
        print("epochs ...", flush=True)
        res["epochs"] = bench_epochs(s, data, lambda: vae(s), LAM, args.compile, res["unsupported"])
    res["machine"]["load_average_end"] = os.getloadavg()
    res["seconds"] = time.perf_counter() - t0
    res["ratios"] = ratios(res)
    extra = (precision_targets(res["precision"]) if "precision" in res else []) + (
        epochs_targets(res["epochs"]) if "epochs" in res else []
    )
    res["targets"] = [{"target": n, "measured": v, "met": m} for n, v, m in targets(res) + extra]
    print(
        "\n".join(
            [report(res)]
            + (precision_report(res["precision"]) if "precision" in res else [])
            + (epochs_report(res["epochs"]) if "epochs" in res else [])
            + [f"  {n:<78}{v:<30}{'' if m is None else 'met' if m else 'NOT met'}" for n, v, m in extra]
        )
    )
    out = args.out or (None if args.quick else Path(__file__).resolve().parent / "results.json")
    if out is not None:
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
