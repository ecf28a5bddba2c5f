"""Shared benchmark plumbing: the shared data, the full catalog's data dir, result files.

Synthetic queries, shoppers and their grades are in the `shoppers` package.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from pathlib import Path

from shoppers.intents import read_photos

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CATALOG = SHARED / "fashion" / "catalog.csv"
PHOTOS = SHARED / "fashion224"
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA_DIR = ROOT / ".bench-data"


def require_shared() -> None:
    if not CATALOG.exists():
        sys.exit(f"benchmarks need the shared catalog at {CATALOG} (see ../shared/data/README.md)")


def ensure_index(data_dir: Path) -> None:
    """Ingest the full 44k catalog into data_dir unless an index is already there."""
    from service.cli import ingest
    from storage.artifacts import current

    if current(data_dir / "index") is None:
        ingest(CATALOG, data_dir=data_dir)


def load_rows() -> list[dict[str, str]]:
    with CATALOG.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def shopper_photos() -> dict[str, Path]:
    """Product id -> a 224 px shopper photo of it (fashion224), for photo queries and shoppers."""
    return read_photos(PHOTOS / "catalog_224.csv")


def print_targets(targets: dict[str, bool]) -> None:
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")


def write_json(name: str, payload: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": {"python": platform.python_version(), "cpus": 2}, **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path
