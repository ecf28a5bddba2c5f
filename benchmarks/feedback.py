"""Feedback ingestion throughput through HTTP against a real `fusionrank serve`, on SQLite and on
PostgreSQL: batches of 1,000 events from concurrent clients, then every batch re-sent (all must
come back as duplicates), then the stored rows counted. Target: >= 5,000 events/s, none lost or
double-counted.

Searches are written straight to SQL first (the feedback path does not need an index), with the
real schema and the real impression writer's code.
Usage: python -m benchmarks.feedback [--events 100000] [--clients 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from benchmarks.common import print_targets, write_json
from benchmarks.server import start_server
from storage.db import make_engine, migrate, session_factory, transaction
from storage.feedback import count_events
from storage.impressions import ImpressionIn, ShownItem, add_impressions

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
K = 20


@contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def seed_searches(url: str, n: int) -> list[str]:
    migrate(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    ids = [uuid.uuid4().hex for _ in range(n)]
    now = datetime.now(UTC)
    for start in range(0, n, 2000):
        with transaction(sessions) as s:
            add_impressions(
                session=s,
                impressions=[
                    ImpressionIn(
                        search_id=sid,
                        created_at=now,
                        query_text="bench",
                        has_image=False,
                        image_sha256=None,
                        query_type="text",
                        filters=None,
                        user_id=None,
                        model_version="h-bench",
                        k=K,
                        latency_ms=1.0,
                        items=[ShownItem(f"p{j}", 1.0, j + 1, 1 / (j + 1)) for j in range(K)],
                    )
                    for sid in ids[start : start + 2000]
                ],
            )
    engine.dispose()
    return ids


def make_batches(ids: list[str], events: int, rng: random.Random) -> list[list[dict[str, str]]]:
    types = ["click"] * 6 + ["add_to_cart"] * 3 + ["purchase"]
    all_events = [
        {
            "event_id": uuid.uuid4().hex,
            "search_id": rng.choice(ids),
            "product_id": f"p{rng.randrange(K)}",
            "type": rng.choice(types),
        }
        for _ in range(events)
    ]
    return [all_events[i : i + 1000] for i in range(0, events, 1000)]


def send(url: str, batches: list[list[dict[str, str]]], clients: int) -> tuple[float, int, int]:
    """Post every batch; returns (seconds, accepted, duplicates)."""
    totals = {"accepted": 0, "duplicates": 0}
    lock = threading.Lock()
    errors: list[str] = []

    def worker(part: list[list[dict[str, str]]]) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for batch in part:
                r = c.post("/v1/feedback", json={"events": batch})
                if r.status_code != 202:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                with lock:
                    for key in totals:
                        totals[key] += r.json()[key]

    threads = [threading.Thread(target=worker, args=(batches[i::clients],)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"feedback failed: {errors[:3]}")
    return time.perf_counter() - t0, totals["accepted"], totals["duplicates"]


def stored_rows(url: str) -> int:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return count_events(session=s)
    finally:
        engine.dispose()


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(7)
    directory = Path(tempfile.mkdtemp(prefix=f"fr-fb-{backend}-"))
    try:
        with database(backend, directory) as url:
            ids = seed_searches(url, args.searches)
            proc, base = start_server(
                directory / "data", ready_path="/healthz", env={"FUSIONRANK_DATABASE_URL": url}
            )
            try:
                rates, sent = [], 0
                for _ in range(args.repeats):
                    batches = make_batches(ids, args.events, rng)
                    secs, accepted, dups = send(base, batches, args.clients)
                    assert accepted == args.events and dups == 0, (accepted, dups)
                    rates.append(args.events / secs)
                    sent += args.events
                    resent = batches[: max(1, len(batches) // 10)]
                    _, again, dups = send(base, resent, args.clients)
                    assert again == 0 and dups == sum(map(len, resent)), (again, dups)
                rows = stored_rows(url)
            finally:
                proc.terminate()
                proc.wait(30)
        return {
            "events_per_s": statistics.median(rates),
            "sent": sent,
            "stored": rows,
            "lost": sent - rows,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000, help="events per run")
    ap.add_argument("--searches", type=int, default=20_000, help="logged searches to attach to")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    res = {b: run_backend(b, args) for b in ("sqlite", "postgres")}
    print(
        f"\nfeedback ingestion, batches of 1,000, {args.clients} clients, median of {args.repeats}"
    )
    print(f"{'backend':10} {'events/s':>10} {'sent':>9} {'stored':>9} {'lost':>6}")
    for b, r in res.items():
        print(f"{b:10} {r['events_per_s']:10.0f} {r['sent']:9d} {r['stored']:9d} {r['lost']:6d}")
    targets = {
        f"{b} >= 5000 events/s, none lost or doubled": r["events_per_s"] >= 5000
        and r["stored"] == r["sent"]
        for b, r in res.items()
    }
    print_targets(targets)
    print(f"wrote {write_json('feedback', {'results': res, 'targets': targets})}")


if __name__ == "__main__":
    main()
