"""Every named preset, in one place: the sweeps (``smvi sweep --preset NAME``) and the evaluation settings
(``smvi evaluate --preset NAME``), and how long each sweep takes (:data:`PRESET_TIMES`). Each is a plain config;
``--set`` overrides any key of it (``run.train.epochs=10``, ``eval.ais.steps=300``, ``lams=[0, 0.1]``)."""

from __future__ import annotations

from typing import Any

from smvi.settings.run import ConfigError, RunConfig, TrainConfig
from smvi.settings.stages import AISConfig, EvalConfig, PicturesConfig
from smvi.stages.ssl import SSLConfig
from smvi.studies.sweep import SweepConfig

__all__ = ["PRESETS", "EVAL_PRESETS", "PRESET_TIMES", "preset_base"]

# Every preset draws its runs' pictures (smvi pictures: about 2 s a run with PCA, 15 s with t-SNE on one core).
_STAGES = ("train", "evaluate", "ssl", "pictures")
_TSNE = PicturesConfig(projection="tsne")  # the latent picture of the longer presets: classes as neighbourhoods

EVAL_PRESETS: dict[str, EvalConfig] = {
    "default": EvalConfig(),
    "quick": EvalConfig(
        n_test=100,
        n_train=100,
        elbo_samples=200,
        dsm_samples=20,
        iwae_k=200,
        ais=AISConfig(steps=100, chains=4, leapfrog_steps=5, adapt="dual_averaging"),
    ),
}

PRESETS: dict[str, SweepConfig] = {
    # The whole pipeline on real MNIST in minutes (PRESET_TIMES): a look, not a result.
    "quick": SweepConfig(
        lams=(0.0, 0.01, 0.1),
        stages=_STAGES,
        run=RunConfig(train=TrainConfig(epochs=3)),
        eval=EVAL_PRESETS["quick"],
        ssl=SSLConfig(seeds=(0, 1), test_size=2000),
    ),
    # A reduced but meaningful reproduction: the paper's model and data, fewer epochs, converged AIS (500 steps: BDMC
    # gap 0.10 ± 0.05 nats at λ = 0, see results/cpu/), 100 + 100 evaluation points. Its stages summed to 4.1 h of
    # one-thread processes, run two at a time on 2 cores (README, Results).
    "cpu": SweepConfig(
        lams=(0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0),
        stages=_STAGES,
        run=RunConfig(train=TrainConfig(epochs=30)),
        eval=EvalConfig(n_test=100, n_train=100, ais=AISConfig(steps=500)),
        ssl=SSLConfig(),
        pictures=_TSNE,
    ),
    # The paper's settings: 300 epochs, 2x1024 softplus, Adam 1e-3, batch 512, dynamic binarization; 5 λ × 3 seeds
    # (λ = 1, which collapses, is run with seed 0 only: `--set lams=[1] --set seeds=[0]`). Trained in bf16 autocast:
    # at 30 epochs it matched fp32 on test ELBO, AIS, gap and SSL within noise (README, Results) at half the time.
    # Evaluation: 200 + 200 points, AIS with 1000 steps; IWAE with k = 1000 on all 10,000 test images.
    "paper": SweepConfig(
        lams=(0.0, 0.003, 0.01, 0.03, 0.1),
        seeds=(0, 1, 2),
        stages=_STAGES,
        run=RunConfig(train=TrainConfig(epochs=300, precision="bf16")),
        eval=EvalConfig(iwae_full_test_k=1000),
        ssl=SSLConfig(),
        pictures=_TSNE,
    ),
}

PRESET_TIMES: dict[str, str] = {
    # `smvi sweep DIR --preset quick` end to end (inprocess, torch's default 2 threads, report included): 4 min 13 s
    # and 4 min 30 s on an idle 2-core machine before the pictures stage, 3 min 13 s with it on another idle 2-core
    # machine (an Intel Xeon, 2026-12-01) (README; issue 15); 24.5 min at load ≈ 5 and 30 min 54 s at load ≈ 7
    # (beside a paper sweep's two nice-10 workers and other jobs).
    "quick": "3–5 min on 2 idle CPU cores",
    # The stages of results/cpu/ summed to 4.1 h of one-thread processes, run two at a time (`--executor process
    # --workers 2`) on 2 cores (README, Results).
    "cpu": "about 2 h on 2 CPU cores (4.1 h of one-thread processes, two at a time)",
    # results/paper/ (README, Results): its stages summed to 20.8 h of training, 11.2 h of evaluation, 12 min of SSL and
    # 72 min of BDMC in one-thread processes, two at a time, over 6 sessions beside other jobs. Its uncontended runs
    # took 32 min of training and 27 min of evaluation each: 16 runs two at a time, and BDMC, in about 9 h.
    "paper": (
        "about 17 h on 2 shared CPU cores (measured: 33 h of one-thread processes, two at a time; about 9 h at "
        "the pace of its uncontended runs)"
    ),
}
"""How long each sweep preset takes, in one place: `smvi sweep --help` and the README quote these strings (the CLI
keeps a torch-free copy; tests check that all three agree)."""


def preset_base(name: str) -> dict[str, Any]:
    """The sweep preset ``name`` as the tree ``--set`` overrides: only the keys it sets, so that a key left at its
    default stays implied (``likelihood = "gaussian"`` implies ``dequantize``). An unknown name is a one-line
    ConfigError naming the presets."""
    if name not in PRESETS:
        raise ConfigError(f"unknown sweep preset {name!r}: use one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name].model_dump(mode="json", exclude_unset=True)
