"""The SSL study's pre-registered analysis on hand-made records whose answers are known: the primary test is the
paired t-test over seeds of the hand-set gains, each verdict follows its rule, the Holm family is every cell, the
figure and files are written; and the report's SSL gains take their SE over training seeds."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pytest
import tomli_w

from conftest import invoke
from smvi.report.aggregate import aggregate, collect_runs, method_of
from smvi.report.ssl_study import PRIMARY, REFERENCE, STUDY_FILES, Cell, _decide, _mechanism, ssl_study, write_ssl_study
from smvi.settings.run import RunConfig
from smvi.stages.ssl import SSLConfig
from smvi.store.records import SSLRecord, dump_record, make_header
from smvi.store.rundir import fingerprint
from smvi.store.stats import PairedDiff

SIZES, SUBSETS, CLASSIFIERS = (600, 1000), (0, 1, 2), ("rbf_svm", "logistic", "knn")
GAIN = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.8, 4: 0.4}  # points, λ = 0.01 over λ = 0 by seed: mean 0.6
ARMS = {  # name -> (train settings, seeds, gain in points by seed, test ELBO gap)
    "lam0": ({"lam": 0.0}, range(5), lambda seed: 0.0, 5.0),
    "lam0.01": ({"lam": 0.01}, range(5), GAIN.get, 3.0),
    "enc": ({"lam": 0.01, "dsm_grad": "encoder"}, range(3), lambda seed: 0.3 + 0.05 * seed, 3.5),
    "iwae": ({"objective": "iwae", "iwae_k": 5}, range(3), lambda seed: 0.1 * (seed - 1), 6.0),
}


def accuracy(seed: int, gain: float, classifier: str, s: int, subset: int) -> float:
    """A fraction: a seed effect, a per-subset and per-classifier level, and the arm's gain (points)."""
    return 0.9 + 0.003 * seed + 0.002 * subset + 0.01 * CLASSIFIERS.index(classifier) + s / 1e6 + gain / 100


def write_run(d, train: dict, seed: int, gain: float, gap: float) -> None:
    d.mkdir(parents=True)
    cfg = RunConfig.model_validate({"train": {**train, "seed": seed, "epochs": 3}})
    (d / "config.toml").write_text(tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    split = {
        "n": 100,
        "ais": {"mean": -90.0 + gap, "se": 0.2},
        "elbo": {"mean": -90.0, "se": 0.2},
        "gap": {"mean": gap + 0.01 * seed, "se": 0.05},
        "iwae": {"mean": -89.0, "se": 0.2},
        "d_sm": {"mean": 10.0, "se": 1.0},
    }
    (d / "eval.json").write_text(
        json.dumps(
            {
                "run": d.name,
                "epoch": 3,
                "lam": cfg.train.lam,
                "settings": {"ais_steps": 500},
                "splits": {"test": split, "train": split},
            }
        )
    )
    settings = SSLConfig(protocol="robust", sizes=SIZES, seeds=SUBSETS)
    table = [
        {
            "classifier": c,
            "size": s,
            "subset": i,
            "accuracy": accuracy(seed, gain, c, s, i),
            "cv_accuracy": 0.9,
            "params": {"C": 1.0},
            "on_edge": {"C": c == "knn" and i == 0},
            "searched": {"C": [0.1, 10.0]},
        }
        for c in CLASSIFIERS
        for s in SIZES
        for i in SUBSETS
    ]
    svm = {
        str(s): {
            "mean": 0.9,
            "std": 0.0,
            "accuracy": [accuracy(seed, gain, "rbf_svm", s, i) for i in SUBSETS],
            "C": [1.0] * 3,
            "gamma": [0.02] * 3,
            "cv_accuracy": [0.9] * 3,
        }
        for s in SIZES
    }
    record = SSLRecord(
        header=make_header("ssl", fingerprint(cfg), 3, settings),
        run={"lam": cfg.train.lam, "seed": seed},
        features={"seeds": list(SUBSETS), "n_train": 60000, "n_test": 10000, "n_features": 50, "sizes": svm},
        table=table,
    )
    (d / "ssl.json").write_text(dump_record(record)[0])


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "study"
    for name, (train, seeds, gain, gap) in ARMS.items():
        for seed in seeds:
            write_run(root / f"{name}_seed{seed}", train, seed, gain(seed), gap)
    return root


def se(values) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def test_the_primary_test_is_the_paired_t_over_seeds_of_the_gains(study):
    st = ssl_study(study)
    d = st.primary.diff
    assert (st.primary.arm, st.primary.classifier, st.primary.s) == (PRIMARY, "rbf_svm", None)
    assert d.mean == pytest.approx(0.6) and d.se == pytest.approx(se(list(GAIN.values()))) and d.n == 5
    assert d.p < 0.01 and st.verdict == "holds" and "holds" in st.sentence
    assert st.notes == ()


def test_arms_are_named_by_method_and_dsm_grad_sets_an_arm_apart(study):
    st = ssl_study(study)
    assert {c.arm for c in st.arms} == {"SMVI λ=0.01", "SMVI, D_SM → encoder λ=0.01", "IWAE k=5"}
    assert method_of({"train.lam": 0.01, "train.dsm_grad": "both"})[0] == "SMVI"
    assert st.gaps[REFERENCE] == pytest.approx(5.02)  # mean over seeds of gap + 0.01·seed


def test_every_cell_is_one_holm_family_and_matches_its_hand_computed_gain(study):
    st = ssl_study(study)
    assert len(st.secondary) == 3 * len(SIZES) * len(CLASSIFIERS)
    m = len(st.secondary)
    assert all(c.p_holm >= min(1.0, c.diff.p) for c in st.secondary)
    assert min(c.p_holm for c in st.secondary) == pytest.approx(min(1.0, m * min(c.diff.p for c in st.secondary)))
    enc = [c for c in st.secondary if c.arm.startswith("SMVI, D_SM") and c.s == 600 and c.classifier == "knn"][0]
    assert enc.diff.mean == pytest.approx(0.35) and enc.diff.n == 3


def test_the_mechanism_rule(study):
    st = ssl_study(study)  # the encoder-only arm gains; IWAE (a larger gap) does not
    assert st.mechanism == "tracks inference"
    worse = Cell(
        "IWAE k=5", "rbf_svm", None, PairedDiff(mean=0.5, se=0.05, low=0.3, high=0.7, p=0.001, n=3, unit="seeds"), 0.002
    )
    primary = st.primary.diff
    assert _mechanism([*st.arms, worse], st.gaps, primary, "holds")[0] == "not specific to inference"
    short = Cell(
        "IWAE k=5", "rbf_svm", None, PairedDiff(mean=0.1, se=0.05, low=-0.1, high=0.3, p=0.1, n=3, unit="seeds"), 0.2
    )
    assert _mechanism([*st.arms, short], st.gaps, primary, "holds")[0] == "tracks inference"  # its interval < 0.6
    assert _mechanism([], st.gaps, primary, "holds")[0] == "cannot be decided"  # no encoder-only arm, no control
    assert _mechanism(st.arms, st.gaps, primary, "does not hold")[0] == "no gain"
    assert _mechanism(st.arms, st.gaps, primary, "cannot be decided")[0] == "cannot be decided"


@pytest.mark.parametrize(
    "mean, low, high, p, verdict",
    [
        (0.6, 0.4, 0.8, 0.001, "holds"),
        (0.02, -0.05, 0.08, 0.4, "does not hold"),  # the interval excludes a gain of 0.1 points (MARGIN)
        (0.05, -0.1, 0.2, 0.4, "cannot be decided"),  # 0.1 points not excluded
        (0.3, -0.2, 0.8, 0.2, "cannot be decided"),
        (-0.6, -0.8, -0.4, 0.001, "does not hold"),  # significantly worse
    ],
)
def test_the_primary_verdicts(mean, low, high, p, verdict):
    d = PairedDiff(mean=mean, se=0.1, low=low, high=high, p=p, n=10, unit="seeds")
    assert _decide(d)[0] == verdict
    assert _decide(None)[0] == "cannot be decided"


def test_runs_without_a_robust_record_are_left_out_with_a_note(study):
    (study / "lam0.01_seed4" / "ssl.json").unlink()
    st = ssl_study(study)
    assert st.primary.diff.n == 4 and any("lam0.01_seed4: no current robust-protocol ssl.json" in n for n in st.notes)


def test_the_files_and_the_command(study, tmp_path):
    path = write_ssl_study(study, tmp_path / "out")
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(STUDY_FILES)
    md = path.read_text()
    assert "Primary test" in md and "holds" in md and "fits on an edge" in md and "| SMVI λ=0 | 10 | 90 |" in md
    assert (path.parent / "fig_ssl_gain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (path.parent / "ssl_study.csv").read_text().splitlines()
    assert lines[1].startswith("primary,SMVI λ=0.01,rbf_svm,,") and len(lines) == 1 + 1 + 3 + 18
    r = invoke("ssl-study", study)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Primary test") and (study / "report" / "ssl_study.md").is_file()


def test_the_reports_ssl_gain_has_its_se_over_training_seeds(study):
    runs, _ = collect_runs(study)
    rows, _ = aggregate(runs)
    gain = [r for r in rows if r.quantity == "ssl_gain" and r.s == 600 and r.lam == 0.01][0]
    per_seed = [GAIN[s] for s in range(5)]  # every subset of a seed gains the same: only seeds vary
    assert gain.se_over == "training seeds" and gain.n_runs == 5
    assert gain.mean == pytest.approx(0.6) and gain.se == pytest.approx(se(per_seed))
    assert gain.se_within == pytest.approx(se(np.repeat(per_seed, 3)))  # the 15 pairs pooled: anti-conservative
    assert gain.se_within < gain.se / 1.5


def test_the_figures_points_are_the_paired_gains(study):
    st = ssl_study(study)
    on = {(p.arm, p.seed): p for p in st.points}
    assert on[(PRIMARY, 3)].gain["rbf_svm"] == pytest.approx(GAIN[3])  # paired with λ = 0's seed 3
    ref = [on[(REFERENCE, seed)].gain["rbf_svm"] for seed in range(5)]
    assert np.mean(ref) == pytest.approx(0.0) and np.std(ref) > 0.1  # the reference's seeds around its mean
    assert on[(REFERENCE, 0)].gap == pytest.approx(5.0) and on[(REFERENCE, 0)].logpx == pytest.approx(-85.0)


REFINED_GAIN = {0: 0.2, 1: 0.4, 2: 0.3}  # points, refined − encoder means of λ = 0 by seed: mean 0.3


def write_refined(d, seed: int, gain: float) -> None:
    """An ssl_refined.json for the run in ``d``: the encoder rows as its ssl.json's, the refined ones ``gain`` points
    higher for every classifier, s and subset."""
    from smvi.settings.stages import RefinedSSLConfig
    from smvi.store.records import RefinedSSLRecord

    cfg = RunConfig.model_validate(tomllib.loads((d / "config.toml").read_text()))
    settings = RefinedSSLConfig(sizes=SIZES, seeds=SUBSETS)

    def block(extra: float) -> dict:
        rows = [
            {
                "classifier": c,
                "size": s,
                "subset": i,
                "accuracy": accuracy(seed, 0.0, c, s, i) + extra / 100,
                "cv_accuracy": 0.9,
                "params": {"C": 1.0},
                "on_edge": {"C": False},
                "searched": {"C": [0.1, 10.0]},
            }
            for c in CLASSIFIERS
            for s in SIZES
            for i in SUBSETS
        ]
        f = {"file": "x.npz", "sha256": "0" * 64, "n_train": 3000, "n_test": 2000, "n_features": 50}
        return {"features_file": f, "table": rows}

    record = RefinedSSLRecord(
        header=make_header("ssl_refined", fingerprint(cfg), 3, settings),
        run={"lam": 0.0, "seed": seed},
        fit={"images": 5000, "gain": {"mean": 2.0 + seed, "se": 0.1, "n": 5000}, "gain_quantiles": {}, "skipped": 0},
        encoder=block(0.0),
        refined=block(gain),
    )
    (d / "ssl_refined.json").write_text(dump_record(record)[0])


def test_test_time_refinement_is_paired_over_the_references_seeds(study, tmp_path):
    for seed, g in REFINED_GAIN.items():
        write_refined(study / f"lam0_seed{seed}", seed, g)
    st = ssl_study(study)
    assert [c.classifier for c in st.refined] == ["rbf_svm", "knn", "logistic"]
    for c in st.refined:
        assert c.diff.n == 3 and c.diff.mean == pytest.approx(0.3)
        assert c.diff.se == pytest.approx(se(list(REFINED_GAIN.values())))
    assert st.refined_gain == pytest.approx(3.0)  # mean of 2, 3, 4 nats
    assert st.verdict == ssl_study(study).verdict and st.primary == ssl_study(study).primary  # not in the tests
    md = write_ssl_study(study, tmp_path / "out").read_text()
    assert "refined q at test time (exploratory, not pre-registered)" in md and "mean ELBO gain 3.00 nats" in md
    csv_rows = (tmp_path / "out" / "ssl_study.csv").read_text().splitlines()
    assert sum(r.startswith("refined,") for r in csv_rows) == 3


def test_without_refinement_records_the_section_is_absent(study, tmp_path):
    assert ssl_study(study).refined == ()
    assert "refined q at test time" not in write_ssl_study(study, tmp_path / "out").read_text()
