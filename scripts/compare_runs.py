"""Compare two sweeps run by run (same run names, e.g. the same λ grid trained in fp32 and in bf16).

For each run present in both: test/train ELBO, AIS log p(x) and the gap from the eval records (paired over images when
both records keep per-image values on the same indices, else the two means with their combined SE, which is
conservative since the images are the same), and SSL accuracy paired over label subsets (the same labeled examples).
Prints Markdown; torch-free (reads the records through smvi.store.rundir).

    python scripts/compare_runs.py results runs/bf16check --names A=fp32 B=bf16
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from smvi.store.rundir import RunDir
from smvi.store.stats import mean_se


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def _pm(m, digits: int = 2) -> str:
    return f"{m.mean:.{digits}f} ± {m.se:.{digits}f}" if m.se is not None else f"{m.mean:.{digits}f}"


def eval_rows(a: RunDir, b: RunDir, label: str) -> list[str]:
    ra, rb = a.read_record("eval"), b.read_record("eval")
    if ra is None or rb is None:
        return [f"| {label} | eval record missing | | | |"]
    rows = []
    for split in ("test", "train"):
        sa, sb = ra.splits.get(split), rb.splits.get(split)
        if sa is None or sb is None:
            continue
        for q in ("elbo", "ais", "gap"):
            ma, mb = getattr(sa, q), getattr(sb, q)
            paired = sa.per_image is not None and sb.per_image is not None and sa.indices == sb.indices
            if paired:
                d = mean_se(
                    y - x
                    for x, y in zip(getattr(sa.per_image, q), getattr(sb.per_image, q), strict=True)
                    if x is not None and y is not None
                )
                delta, se, how = d.mean, d.se, "paired"
            else:
                delta = mb.mean - ma.mean
                se = math.hypot(ma.se or 0.0, mb.se or 0.0)
                how = "same images, unpaired SE"
            rows.append(f"| {label} | {split} {q} | {_pm(ma)} | {_pm(mb)} | {_fmt(delta)} ± {se:.2f} ({how}) |")
    return rows


def ssl_rows(a: RunDir, b: RunDir, label: str) -> list[str]:
    ra, rb = a.read_record("ssl"), b.read_record("ssl")
    if ra is None or rb is None:
        return []
    rows = []
    for s, xa in ra.features.sizes.items():
        xb = rb.features.sizes.get(s)
        if xb is None or ra.features.seeds != rb.features.seeds:
            continue
        d = mean_se(
            100 * (y - x) for x, y in zip(xa.accuracy, xb.accuracy, strict=True) if x is not None and y is not None
        )
        rows.append(
            f"| {label} | SSL s={s} (%) | {100 * xa.mean:.2f} | {100 * xb.mean:.2f} | "
            f"{_fmt(d.mean)} ± {d.se:.2f} (paired over {d.n} label subsets) |"
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="first sweep directory (the reference)")
    p.add_argument("b", type=Path, help="second sweep directory")
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("NAME_A", "NAME_B"))
    args = p.parse_args()
    na, nb = args.names
    common = sorted({d.name for d in (args.a / "runs").iterdir()} & {d.name for d in (args.b / "runs").iterdir()})
    if not common:
        raise SystemExit(f"error: {args.a}/runs and {args.b}/runs have no run name in common")
    print(f"| run | quantity | {na} | {nb} | {nb} − {na} |\n|---|---|---|---|---|")
    for name in common:
        a, b = RunDir(args.a / "runs" / name), RunDir(args.b / "runs" / name)
        for row in eval_rows(a, b, name) + ssl_rows(a, b, name):
            print(row)


if __name__ == "__main__":
    main()
