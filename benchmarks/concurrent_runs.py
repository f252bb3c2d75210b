"""The ``concurrent`` part of the ``epochs`` section: two training runs side by side, one thread each (2 × 1), against
one run with two threads (1 × 2, timed in ``epochs``). A sweep of many runs cares about runs per hour, not one run's
speed: 2 × 1 wins when two 1-thread epochs take less than twice a 2-thread epoch.

Each run is a spawned process with ``torch.set_num_threads(1)`` training its own copy of the paper's model on the same
data for the same epochs as the ``epochs`` section; the two start together (a barrier) and each times its epochs.
"""

from __future__ import annotations

import time
from statistics import median

import torch
import torch.multiprocessing as mp

import smvi
from smvi.data.loading import DynamicBinarizer
from smvi.settings.run import ModelConfig


def _worker(rank: int, variant: str, s: dict, train_x: torch.Tensor, lam: float, barrier, queue) -> None:
    from epochs import _autocast_step, _master_step  # noqa: PLC0415  (the spawned child imports it afresh)

    torch.set_num_threads(1)
    torch.set_float32_matmul_precision("medium" if variant.endswith("_mm_bf16") else "highest")
    torch.manual_seed(rank)
    model = smvi.VAE(config=ModelConfig(encoder_hidden=s["hidden"], decoder_hidden=s["hidden"], z_dim=s["z_dim"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    step = (
        _master_step(model, opt, lam)
        if variant == "bf16_master"
        else _autocast_step(model, opt, lam, variant.startswith("bf16"), False)
    )
    loader = DynamicBinarizer(train_x, s["epoch_batch"], seed=1 + rank)
    barrier.wait()
    walls = []
    for _ in range(s["epoch_epochs"]):
        t0 = time.perf_counter()
        for x in loader.epoch():
            step(x)
        walls.append(time.perf_counter() - t0)
    queue.put((rank, walls))


def bench_concurrent(s: dict, data, lam: float, variants: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Per variant: each of the two 1-thread runs' epoch wall times (median after the first epoch)."""
    ctx = mp.get_context("spawn")
    train_x = data.train_x[: s["epoch_n"]].clone()
    out = {}
    for variant in variants:
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(r, variant, s, train_x, lam, barrier, queue)) for r in range(2)]
        for p in procs:
            p.start()
        results = dict(queue.get(timeout=3600) for _ in procs)
        for p in procs:
            p.join()
        per_run = [median(w[1:] if len(w) > 1 else w) for _, w in sorted(results.items())]
        out[variant] = {
            "epoch_wall_s_per_run": per_run,
            "epoch_wall_s": max(per_run),
            "wall_s_epochs": {r: [round(v, 2) for v in w] for r, w in results.items()},
        }
    return out


def concurrent_report(e: dict) -> list[str]:
    lines = []
    for variant, c in e.get("concurrent", {}).items():
        one = e["cases"].get(f"{variant}_threads1", {}).get("epoch_wall_s", float("nan"))
        two = e["cases"].get(f"{variant}_threads2", {}).get("epoch_wall_s", float("nan"))
        lines.append(
            f"  {variant}: 2 runs × 1 thread side by side {c['epoch_wall_s']:.2f} s per epoch each "
            f"(alone, 1 thread {one:.2f} s, 2 threads {two:.2f} s); epochs per hour 2×1: "
            f"{2 * 3600 / c['epoch_wall_s']:.0f}, 1×2: {3600 / two:.0f}"
        )
    return lines
