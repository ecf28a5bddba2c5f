"""Write the shared fashion catalog without the products that have a fashion224 photo.

Ingested into a data dir of its own, it stands for a shop that does not carry what its photo
shoppers photograph: `python -m benchmarks.ablations --data-dir DIR --photos fashion224`
then measures the neighbour votes and the learner without near-duplicate lookups. Image paths
are written absolute, so the CSV can live anywhere (not in the repository: the data stays in
../shared).
Usage: python scripts/make_heldout_catalog.py OUT.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = Path(sys.argv[1])
    with (SHARED / "fashion224" / "catalog_224.csv").open(newline="", encoding="utf-8") as f:
        photographed = {row["id"] for row in csv.DictReader(f)}
    source = SHARED / "fashion" / "catalog.csv"
    with source.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r["id"] not in photographed]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in kept:
            w.writerow({**r, "image_path": str(source.parent / r["image_path"])})
    print(f"wrote {out}: {len(kept)} of {len(rows)} products ({len(rows) - len(kept)} held out)")


if __name__ == "__main__":
    main()
