"""Two evaluations of one run, paired image by image: did a change of how ``smvi evaluate`` computes (precision, force,
step-size rule) move its estimates? Torch-free; reads two ``eval.json`` records of the same run and subsets.

    .venv/bin/python benchmarks/paired_eval.py NEW/eval.json OLD/eval.json [--out FILE]

For each split and quantity (AIS log p̂(x), ELBO, IWAE, the ELBO gap): the mean over images of new − old ± its standard
error (images are the unit: the two records scored the same images with the same seeds), the largest |new − old|, and
each record's settings, precision and seconds. The records must score the same images (their ``indices``), else it
refuses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

QUANTITIES = ("ais", "elbo", "iwae", "gap")


def paired(new: list[float], old: list[float]) -> dict:
    """Mean ± SE over images of new − old, and the largest |new − old|."""
    d = [a - b for a, b in zip(new, old, strict=True)]
    n = len(d)
    m = sum(d) / n
    se = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1) / n) if n > 1 else float("nan")
    return {"n": n, "mean": m, "se": se, "max_abs": max(abs(x) for x in d)}


def compare(new: dict, old: dict) -> dict:
    out: dict = {"splits": {}}
    for rec, tag in ((new, "new"), (old, "old")):
        out[tag] = {
            "seconds": rec.get("seconds"),
            "precision": rec.get("precision") or (rec["header"]["settings"].get("ais") or {}).get("precision", "fp32"),
            "settings": rec["header"]["settings"],
            "code": rec["header"].get("smvi") or rec["header"].get("version"),
        }
    for split, s in new["splits"].items():
        o = old["splits"].get(split)
        if o is None:
            continue
        if s["indices"] != o["indices"]:
            raise SystemExit(
                f"the {split} split scored other images in the two records: compare evaluations of the same subsets"
            )
        out["splits"][split] = {
            q: paired(s["per_image"][q], o["per_image"][q])
            for q in QUANTITIES
            if q in s["per_image"] and q in o["per_image"]
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path, help="eval.json of the new evaluation")
    ap.add_argument("old", type=Path, help="eval.json of the old evaluation (the same run and subsets)")
    ap.add_argument("--out", type=Path, default=None, help="write the comparison (JSON) here")
    args = ap.parse_args(argv)
    res = compare(*(json.loads(p.read_text()) for p in (args.new, args.old)))
    new, old = res["new"], res["old"]
    print(f"new: {new['precision']}, {new['seconds']} s; old: {old['precision']}, {old['seconds']} s")
    for split, qs in res["splits"].items():
        for q, d in qs.items():
            diff = f"{d['mean']:+.4f} ± {d['se']:.4f} nats"
            print(f"  {split:<5} {q:<5} new − old {diff} (n = {d['n']}, max |·| {d['max_abs']:.3f})")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
