"""One Markdown table per sweep, one row per λ, from its report's CSV files (results.csv, paired.csv):

    python scripts/summary_table.py results/paper/report

Columns: the test and train ELBO gap and the whole-test-set IWAE log p(x) (mean ± SE as the report forms them), then
each λ minus λ = 0, paired (mean [t interval], Holm-adjusted p, n and its unit): whole-test-set IWAE log p(x), the test
gap, and SSL accuracy at each labeled-set size s. This is the table the README and the closing notes quote; every number
is read from the report, none is recomputed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from smvi.flags import CLAIM_BLOCKING, RULES
from smvi.paired import format_p

PER_LAM = (("gap", "test", "gap, test"), ("gap", "train", "gap, train"), ("iwae_full", "test", "IWAE log p(x), test"))
PAIRED = (("iwae_full", "test", "Δ IWAE log p(x)"), ("gap", "test", "Δ gap, test"))


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _mean_se(row: dict[str, str] | None) -> str:
    if row is None:
        return "—"
    text = f"{float(row['mean']):.2f}" + (f" ± {float(row['se']):.2f}" if row["se"] else "")
    return text + (f" ({row['n_runs']} runs)" if row["n_runs"] != "1" else " (1 run)")


def _paired(row: dict[str, str] | None) -> str:
    if row is None:
        return "—"
    text = f"{float(row['mean']):+.2f}"
    if row["low"]:
        text += f" [{float(row['low']):+.2f}, {float(row['high']):+.2f}]"
    return text + f" p_Holm={format_p(float(row['p_holm']) if row['p_holm'] else None)}, n={row['n']} {row['unit']}"


def summary_table(report_dir: Path) -> str:
    """The Markdown table (module docstring) of the report in ``report_dir``."""
    results = _read(report_dir / "results.csv")
    if not results:
        raise SystemExit(f"error: {report_dir} has no results.csv: run `smvi report` on the sweep first")
    paired = _read(report_dir / "paired.csv")
    per_lam = {(r["quantity"], r["split"], r["s"], float(r["lam"])): r for r in results if r["lam"]}
    diffs = {(r["quantity"], r["split"], r["s"], float(r["lam"])): r for r in paired}
    lams = sorted({k[3] for k in per_lam})
    sizes = sorted({int(r["s"]) for r in paired if r["quantity"] == "ssl_gain"})
    head = (["λ"] + [label for *_, label in PER_LAM] + [label for *_, label in PAIRED]
            + [f"Δ SSL, s = {s} (points)" for s in sizes])
    body = []
    marks = {float(r["lam"]): r.get("flags", "") for r in results if r["lam"] and r.get("flags")}
    for lam in lams:
        cells = [f"{lam:g}" + (f" {marks[lam]}" if lam in marks else "")]
        cells += [_mean_se(per_lam.get((q, sp, "", lam))) for q, sp, _ in PER_LAM]
        if lam == 0:
            cells += ["(reference)"] * (len(PAIRED) + len(sizes))
        else:
            cells += [_paired(diffs.get((q, sp, "", lam))) for q, sp, _ in PAIRED]
            cells += [_paired(diffs.get(("ssl_gain", "test", str(s), lam))) for s in sizes]
        body.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in body]
    note = ("Nats unless stated; mean ± SE (over training seeds when n ≥ 2); Δ: λ minus λ = 0, paired, with its 95 % t "
            "interval, Holm-adjusted p and its unit n (training seeds; images or label subsets with one seed).")
    present = {m for v in marks.values() for m in (v[i:i + 2] for i in range(0, len(v), 2))}
    note += "".join(f" {m}: {text}, so not evidence for a claim." for m, text in
                    (RULES[k] for k in CLAIM_BLOCKING) if m in present)
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a report directory (smvi report's output: DIR/report)")
    sys.stdout.write(summary_table(ap.parse_args(argv).report))


if __name__ == "__main__":
    main()
