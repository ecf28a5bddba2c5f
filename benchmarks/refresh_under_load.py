"""Searches while the in-process learner refreshes: the single-process default trains on the
same two cores that serve. A real `fusionrank serve` on the full catalog, with a copy of a
database of logged traffic (or, without one, --sessions simulated shoppers sent first through
the API); shoppers search by text and photo one after another, a refresh is started through
POST /v1/models/train, and the latencies of searches issued while it ran are set against those
before and after it. Queries and shoppers are synthetic.
Usage: python -m benchmarks.refresh_under_load [--data-dir DIR] [--database DB.sqlite]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import (
    CATALOG,
    DEFAULT_DATA_DIR,
    REFRESH_ON_REQUEST,
    ensure_index,
    fresh_database,
    load_rows,
    require_shared,
    shopper_photos,
    write_json,
)
from benchmarks.server import start_server
from shoppers.queries import make_queries
from shoppers.simulator import Simulator

Record = tuple[float, str, float, bool]  # (start, kind, latency, ok)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--database", type=Path, help="SQLite file with traffic (copied)")
    ap.add_argument("--sessions", type=int, default=5000, help="shoppers to simulate first")
    ap.add_argument("--steady-seconds", type=float, default=20)
    return ap.parse_args()


def search_bodies() -> list[tuple[str, dict[str, Any]]]:
    """The text and photo searches the shopper cycles through."""
    bodies: list[tuple[str, dict[str, Any]]] = []
    for q in make_queries(load_rows(), shopper_photos(), 150, seed=3):
        if q.kind == "text":
            bodies.append(("text", {"query": q.text, "k": 20}))
        elif q.kind == "image" and q.photo:
            photo = base64.b64encode(q.photo.read_bytes()).decode()
            bodies.append(("image", {"image": photo, "k": 20}))
    return bodies


def wait_for_refresh(url: str) -> tuple[dict[str, Any], float, float]:
    """Start a refresh through the API and wait for it: its run record, start and end times."""
    with httpx.Client(base_url=url, timeout=60) as admin:
        started = time.monotonic()
        run_id = admin.post("/v1/models/train").json()["run_id"]
        while (run := admin.get(f"/v1/models/runs/{run_id}").json())["status"] in (
            "queued",
            "running",
        ):
            if time.monotonic() - started > 1800:
                raise SystemExit(f"refresh {run_id} did not finish in 30 minutes")
            time.sleep(0.5)
        return run, started, time.monotonic()


def phases(records: list[Record], started: float, finished: float) -> dict[str, Any]:
    """Per search kind, latencies while the refresh ran against those before and after it."""

    def pct(kind: str, during: bool) -> dict[str, float]:
        xs = [
            lat * 1000
            for t0, k, lat, _ in records
            if k == kind and (started <= t0 < finished) == during and t0 < finished + 3
        ]
        return {
            "n": len(xs),
            "p50": float(np.median(xs)) if xs else float("nan"),
            "p99": float(np.percentile(xs, 99)) if xs else float("nan"),
        }

    return {
        kind: {"steady": pct(kind, False), "refresh": pct(kind, True)} for kind in ("text", "image")
    }


def report(run: dict[str, Any], res: dict[str, Any], records: list[Record], wall_s: float) -> None:
    detail = run.get("detail") or {}
    failed = sum(not ok for *_, ok in records)
    print(
        f"\nsearches while a refresh runs in the serving process ({run['status']}, "
        f"{detail.get('seconds')} s refresh, {detail.get('window_searches')} searches)"
    )
    print(f"{'search':8} {'phase':8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, by_phase in res.items():
        for phase, r in by_phase.items():
            print(f"{kind:8} {phase:8} {r['n']:9d} {r['p50']:8.2f} {r['p99']:8.2f}")
    print(f"failed requests: {failed} of {len(records)}")
    print(f"refresh phases (s): {detail.get('phase_seconds')}")
    payload = {"results": res, "failed": failed, "refresh": detail, "wall_s": wall_s}
    print(f"wrote {write_json('refresh_under_load', payload)}")


def main() -> None:
    args = parse_args()
    require_shared()
    ensure_index(args.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="fr-refresh-load-"))
    if args.database:
        shutil.copy(args.database, tmp / "fusionrank.db")
    else:
        fresh_database(args.data_dir, tmp / "fusionrank.db")
    bodies = search_bodies()
    db_url = f"sqlite:///{tmp / 'fusionrank.db'}"
    # every search encodes (the shoppers cycle through a fixed set, which a cache would keep)
    proc, url = start_server(
        args.data_dir,
        env={
            "FUSIONRANK_DATABASE_URL": db_url,
            "FUSIONRANK_QUERY_CACHE": "0",
            **REFRESH_ON_REQUEST,
        },
    )
    records: list[Record] = []
    stop = threading.Event()

    def shopper() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            n = 0
            while not stop.is_set():
                kind, body = bodies[n % len(bodies)]
                t0 = time.monotonic()
                r = c.post("/v1/search", json=body)
                records.append((t0, kind, time.monotonic() - t0, r.status_code == 200))
                n += 1

    worker = threading.Thread(target=shopper)
    try:
        if not args.database:
            Simulator(url, CATALOG, photos=shopper_photos()).run(args.sessions)
        worker.start()
        time.sleep(args.steady_seconds)
        run, started, finished = wait_for_refresh(url)
        time.sleep(3)
    finally:
        stop.set()
        worker.join()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    report(run, phases(records, started, finished), records, finished - started)


if __name__ == "__main__":
    main()
