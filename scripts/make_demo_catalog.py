"""Build the bundled demo catalog: a seeded sample of the shared fashion catalog, stratified by
articleType (every type represented, otherwise proportional), with its 60x80 thumbnails.

    python scripts/make_demo_catalog.py            # writes demo/catalog.csv and demo/images/
    python scripts/make_demo_catalog.py --help
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared/data/fashion"
STRATUM = "articleType"


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """One per stratum, the rest proportional to stratum size (largest remainder)."""
    if total < len(sizes):
        raise ValueError(f"{total} products cannot cover {len(sizes)} {STRATUM}s")
    quota = {k: 1 for k in sizes}
    spare = {k: n - 1 for k, n in sizes.items()}
    left = min(total, sum(sizes.values())) - len(sizes)
    while left > 0:
        pool = sum(spare.values())
        shares = {k: left * s / pool for k, s in spare.items()}
        extra = {k: min(int(v), spare[k]) for k, v in shares.items()}
        if sum(extra.values()) == 0:  # hand out the remainder one by one, biggest fraction first
            order = sorted(spare, key=lambda k: (-(shares[k] - int(shares[k])), k))
            extra = {k: 1 for k in order[:left] if spare[k] > 0}
        for k, e in extra.items():
            quota[k] += e
            spare[k] -= e
            left -= e
    return quota


def sample(rows: list[dict[str, str]], total: int, seed: int) -> list[dict[str, str]]:
    by_type: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_type[r[STRATUM]].append(r)
    quota = allocate({k: len(v) for k, v in by_type.items()}, total)
    rng = random.Random(seed)
    picked: list[dict[str, str]] = []
    for key in sorted(by_type):
        picked += rng.sample(by_type[key], quota[key])
    return sorted(picked, key=lambda r: int(r["id"]) if r["id"].isdigit() else r["id"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source", type=Path, default=SOURCE, help="folder with catalog.csv, images/")
    p.add_argument("--out", type=Path, default=REPO / "demo", help="output folder")
    p.add_argument("--products", type=int, default=1900, help="how many products to sample")
    p.add_argument("--seed", type=int, default=20240601, help="random seed")
    args = p.parse_args()

    with (args.source / "catalog.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if (args.source / r["image_path"]).is_file()]
    picked = sample(rows, args.products, args.seed)

    images = args.out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for r in picked:
        src = args.source / r["image_path"]
        r["image_path"] = f"images/{r['id']}{src.suffix}"
        shutil.copyfile(src, args.out / r["image_path"])
    with (args.out / "catalog.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(picked)
    types = len({r[STRATUM] for r in picked})
    print(f"wrote {len(picked)} products ({types} {STRATUM}s) to {args.out}")


if __name__ == "__main__":
    main()
