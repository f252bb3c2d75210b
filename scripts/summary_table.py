"""Two Markdown tables per sweep, one row per λ, from its report's CSV files (results.csv, paired.csv):

    python scripts/summary_table.py results/paper/report

The values: the test and train ELBO gap, AIS log p(x) on the test subset, IWAE log p(x) on the whole test set and SSL
accuracy at each labeled-set size s (mean ± SE as the report forms them; a last row for SSL on raw pixels). The paired
differences: each λ minus λ = 0 (mean [t interval], Holm-adjusted p, n and its unit) of the whole-test-set IWAE
log p(x), the test gap and SSL accuracy at each s. These are the tables the README and the closing notes quote; every
number is read from the report, none is recomputed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from smvi.report.flags import CLAIM_BLOCKING, RULES
from smvi.report.paired import format_p
from smvi.report.tables import pm

VALUES = (
    ("gap", "test", "gap, test"),
    ("gap", "train", "gap, train"),
    ("ais", "test", "AIS log p(x), test"),
    ("iwae_full", "test", "IWAE log p(x), whole test set"),
)
PAIRED = (("iwae_full", "test", "Δ IWAE log p(x)"), ("gap", "test", "Δ gap, test"))


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _mean_se(row: dict[str, str] | None, runs: int = 1) -> str:
    """The report's mean ± SE, and how many runs it is from where a λ has more than that."""
    if row is None:
        return "—"
    text = pm(float(row["mean"]), float(row["se"]) if row["se"] else None)
    return text + (f" ({row['n_runs']} of {runs} runs)" if int(row["n_runs"]) < runs else "")


def _paired(row: dict[str, str] | None) -> str:
    if row is None:
        return "—"
    text = f"{float(row['mean']):+.2f}"
    if row["low"]:
        text += f" [{float(row['low']):+.2f}, {float(row['high']):+.2f}]"
    return text + f" p_Holm={format_p(float(row['p_holm']) if row['p_holm'] else None)}, n={row['n']} {row['unit']}"


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in body]


def summary_table(report_dir: Path) -> str:
    """The two Markdown tables (module docstring) of the report in ``report_dir``."""
    results = _read(report_dir / "results.csv")
    if not results:
        raise SystemExit(f"error: {report_dir} has no results.csv: run `smvi report` on the sweep first")
    paired = _read(report_dir / "paired.csv")
    per_lam = {(r["quantity"], r["split"], r["s"], float(r["lam"])): r for r in results if r["lam"]}
    raw = {r["s"]: r for r in results if r["quantity"] == "ssl_raw_accuracy"}
    diffs = {(r["quantity"], r["split"], r["s"], float(r["lam"])): r for r in paired}
    lams = sorted({k[3] for k in per_lam})
    sizes = sorted({int(k[2]) for k in per_lam if k[0] == "ssl_accuracy"})
    marks = {float(r["lam"]): r.get("flags", "") for r in results if r["lam"] and r.get("flags")}
    label = {lam: f"{lam:g}" + (f" {marks[lam]}" if lam in marks else "") for lam in lams}
    runs = {lam: max(int(r["n_runs"]) for k, r in per_lam.items() if k[3] == lam) for lam in lams}

    values = [
        [label[lam], str(runs[lam])]
        + [_mean_se(per_lam.get((q, sp, "", lam)), runs[lam]) for q, sp, _ in VALUES]
        + [_mean_se(per_lam.get(("ssl_accuracy", "test", str(s), lam)), runs[lam]) for s in sizes]
        for lam in lams
    ]
    if raw:
        values.append(["raw pixels", "—"] + [""] * len(VALUES) + [_mean_se(raw.get(str(s))) for s in sizes])
    head = ["λ", "runs"] + [text for *_, text in VALUES] + [f"SSL %, s = {s}" for s in sizes]
    lines = _table(head, values)
    lines += [
        "",
        "Nats, or % of test images classified right; mean ± SE, over training seeds when a λ has several "
        "runs (else over images or label subsets; raw pixels: over label subsets).",
        "",
    ]

    body = [
        [label[lam]]
        + [_paired(diffs.get((q, sp, "", lam))) for q, sp, _ in PAIRED]
        + [_paired(diffs.get(("ssl_gain", "test", str(s), lam))) for s in sizes]
        for lam in lams
        if lam != 0
    ]
    head = ["λ"] + [text for *_, text in PAIRED] + [f"Δ SSL, s = {s} (points)" for s in sizes]
    lines += _table(head, body)
    note = (
        "Δ: λ minus λ = 0, paired (same images, label subsets and training seeds), nats or percentage points, "
        "with its 95 % t interval, Holm-adjusted p and its unit n (training seeds; images or label subsets with "
        "one seed)."
    )
    present = {m for v in marks.values() for m in (v[i : i + 2] for i in range(0, len(v), 2))}
    note += "".join(
        f" {m}: {text}, so not evidence for a claim." for m, text in (RULES[k] for k in CLAIM_BLOCKING) if m in present
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a report directory (smvi report's output: DIR/report)")
    sys.stdout.write(summary_table(ap.parse_args(argv).report))


if __name__ == "__main__":
    main()
