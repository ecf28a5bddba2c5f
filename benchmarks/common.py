"""Shared benchmark plumbing: the shared data, the full catalog's data dir, fresh databases,
result files.

Synthetic queries, shoppers and their grades are in the `shoppers` package.
"""

from __future__ import annotations

import csv
import json
import platform
import random
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from shoppers.intents import read_photos
from storage.artifacts import current, read_manifest

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

    if current(data_dir / "index") is None:
        ingest(CATALOG, data_dir=data_dir)


def subset_catalog(dst: Path, n: int, titles_only: bool) -> None:
    """A seeded subset of the fashion catalog: every column with images, or id and title."""
    with CATALOG.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows = random.Random(n).sample(rows, min(n, len(rows)))
    with dst.open("w", newline="", encoding="utf-8") as f:
        if titles_only:
            out = csv.writer(f)
            out.writerow(["id", "title"])
            out.writerows((r["id"], r["productDisplayName"]) for r in rows)
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "image_path": str(CATALOG.parent / r["image_path"])})


def ensure_data(data_dir: Path, catalog: str, products: int) -> Path:
    """The data dir holding the ingested subset (ingested on first use); returns its CSV."""
    from service.cli import ingest

    csv_path = data_dir / "catalog.csv"
    if current(data_dir / "index") is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        subset_catalog(csv_path, products, catalog == "titles")
        ingest(csv_path, data_dir=data_dir)
    return csv_path


# The server runs the refreshes the benchmark asks for, and only those.
REFRESH_ON_REQUEST = {
    "FUSIONRANK_LEARNER_IN_PROCESS": "true",
    "FUSIONRANK_LEARNER_INTERVAL_MINUTES": "100000",
    "FUSIONRANK_LEARNER_MIN_NEW_EVENTS": "1000000000",
    "FUSIONRANK_LEARNER_REFRESH_ON_DRIFT": "false",
    "FUSIONRANK_LEARNER_SETTLE_SECONDS": "0",
}


MEMORY_TABLES = ("memory_queries", "memory_pairs", "memory_shoppers", "memory_fold")


def without_memory(src: Path, dst: Path) -> None:
    """A copy of the SQLite database `src` whose query memory is empty, all else kept."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
        for table in MEMORY_TABLES:
            b.execute(f"DELETE FROM {table}")


def fresh_database(data_dir: Path, dst: Path) -> str:
    """A copy of `data_dir`'s database with the catalog's products and the bootstrap head of its
    index build, without any logged traffic or learning. Returns that head's version."""
    build = current(data_dir / "index")
    assert build is not None
    head_version: str = read_manifest(build)["head_version"]
    with sqlite3.connect(data_dir / "fusionrank.db") as a, sqlite3.connect(dst) as b:
        a.backup(b)
        logs = ("feedback_events", "impression_items", "impressions", "query_embeddings")
        for table in logs + MEMORY_TABLES:
            b.execute(f"DELETE FROM {table}")
        b.execute("DELETE FROM training_runs")
        b.execute("UPDATE active_model SET version = ?", (head_version,))
        b.execute("DELETE FROM model_versions WHERE status != 'bootstrap'")
    with sqlite3.connect(dst) as b:
        b.execute("VACUUM")
    return head_version


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


def plot_curves(
    curves: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]],
    kinds: Sequence[str],
    xlabel: str,
    path: Path,
) -> Path:
    """One panel per query kind: NDCG@10 against sessions, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.6), sharey=True)
    for ax, kind in zip(axes, kinds, strict=True):
        for label, points in curves.items():
            pts = sorted((x, y[kind]) for x, y in points if kind in y)
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.set_title(kind)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("NDCG@10 (true grades)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
