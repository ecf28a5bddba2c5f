"""How long a titles-only catalog of 50,000 products takes to ingest from nothing: a fresh data
directory (no embedding cache), SQLite, the machine's cores.

The catalog is the fashion catalog's 44,072 titles and, to reach 50,000, real titles with a
made-up model number ("KX-4821"): an id and a title per product, nothing else.

    python -m benchmarks.titles_ingest [--products 50000]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import load_rows, require_shared, write_json
from service.catalog.ingest import ingest_catalog
from service.config import Settings
from service.encoding.embedder import make_embedder
from storage.db import make_engine, migrate, session_factory

TARGET_SECONDS = 600


def write_titles(path: Path, n: int) -> None:
    rng = random.Random(n)
    titles = [(r["id"], r["productDisplayName"]) for r in load_rows()]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["id", "title"])
        out.writerows(titles[:n])
        for i in range(len(titles), n):
            model = f"{rng.choice('ABCDEFGHKMPRSTXZ')}{rng.choice('ABCDEFGHKMPRSTXZ')}-{i:05d}"
            out.writerow([f"synthetic-{i}", f"{rng.choice(titles)[1]} {model}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=50_000)
    args = ap.parse_args()
    require_shared()
    tmp = Path(tempfile.mkdtemp(prefix="fr-titles-ingest-"))
    try:
        catalog = tmp / "titles.csv"
        write_titles(catalog, args.products)
        settings = Settings(data_dir=tmp / "data")
        started = time.perf_counter()
        embedder = make_embedder(settings)
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        report = ingest_catalog(
            catalog, settings=settings, embedder=embedder, sessions=session_factory(engine)
        )
        engine.dispose()
        total = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntitles-only ingest of {report.products:,} products")
    for phase, seconds in report.seconds.items():
        print(f"  {phase:8} {seconds:8.1f} s")
    print(f"  with model loading: {total:.1f} s = {report.products / total:.0f} products/s")
    ok = total <= TARGET_SECONDS
    print(f"  {'PASS' if ok else 'FAIL'} at most {TARGET_SECONDS} s")
    payload = {"report": asdict(report), "total_seconds": round(total, 1), "target_met": ok}
    print(f"wrote {write_json('titles_ingest', payload)}")


if __name__ == "__main__":
    main()
