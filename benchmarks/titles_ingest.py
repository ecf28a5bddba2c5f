"""How long a titles-only catalog of 50,000 products takes to ingest from nothing: a fresh data
directory (no embedding cache, no exported encoder graphs), SQLite, the machine's cores, as
`fusionrank ingest` runs it, once per encoder backend (--backends), one after the other.

The catalog is the fashion catalog's 44,072 titles and, to reach 50,000, real titles with a
made-up model number ("KX-4821"): an id and a title per product, nothing else.

    python -m benchmarks.titles_ingest [--products 50000] [--backends onnx,torch]
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


def ingest(catalog: Path, data_dir: Path, backend: str) -> tuple[dict, float]:
    """One cold ingest as `fusionrank ingest` runs it (the ONNX graphs exported and judged
    first): its report and its seconds, model loading included."""
    settings = Settings(data_dir=data_dir, encoder_backend=backend)
    started = time.perf_counter()
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    report = ingest_catalog(catalog, settings=settings, sessions=session_factory(engine))
    engine.dispose()
    return asdict(report), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=50_000)
    ap.add_argument("--backends", default="onnx,torch", help="encoder backends, one after another")
    args = ap.parse_args()
    require_shared()
    tmp = Path(tempfile.mkdtemp(prefix="fr-titles-ingest-"))
    runs = {}
    try:
        catalog = tmp / "titles.csv"
        write_titles(catalog, args.products)
        for backend in args.backends.split(","):
            runs[backend] = ingest(catalog, tmp / backend, backend)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntitles-only cold ingest of {args.products:,} products (seconds)")
    phases = list(dict.fromkeys(k for report, _ in runs.values() for k in report["seconds"]))
    print(f"{'phase':10}" + "".join(f"{b:>10}" for b in runs))
    for phase in phases:
        print(
            f"{phase:10}" + "".join(f"{r['seconds'].get(phase, 0):10.1f}" for r, _ in runs.values())
        )
    print(f"{'all':10}" + "".join(f"{total:10.1f}" for _, total in runs.values()))
    print(f"{'products/s':10}" + "".join(f"{args.products / t:10.0f}" for _, t in runs.values()))
    for backend, (report, _) in runs.items():
        for kind, choice in report["encoders"].items():
            print(f"{backend} {kind} encoder: {choice['variant']} ({choice['reason']})")
    total = next(iter(runs.values()))[1]
    ok = total <= TARGET_SECONDS
    print(f"  {'PASS' if ok else 'FAIL'} {next(iter(runs))} at most {TARGET_SECONDS} s")
    payload: dict[str, object] = {
        b: {"report": report, "total_seconds": round(t, 1)} for b, (report, t) in runs.items()
    }
    payload["target_met"] = ok
    print(f"wrote {write_json('titles_ingest', payload)}")


if __name__ == "__main__":
    main()
