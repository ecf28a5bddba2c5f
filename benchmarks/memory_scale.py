"""The query memory's size and update cost at a million feedback events.

Logs like a shop's are written straight into a fresh database through the storage layer (the
API's own writers): searches of Zipf-popular queries over a catalog of product ids, each
showing 20 products, by distinct shoppers, and position-biased events on them. Then the memory
folds them, as the learner does live, and one process follows the result. Reported: fold time
and rate, rows and bytes per memory table, a follower's load time and the RSS it adds, and one
search's memory read (recall with the similar-query lookup over 50,000 logged queries, lifts of
200 candidates and the favoured products), median and p99 of 400 searches; and each search
analytics read the dashboard makes, over the last 30 days (the fold counts them too).

Usage: python -m benchmarks.memory_scale [--events 1000000] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, text
from tqdm import tqdm

from benchmarks.common import write_json
from model.query_memory import QueryMemory
from service.config import Settings
from service.learning import memory_config
from service.search.analytics import DAY_S
from service.search.memory import MemoryFollower, memory_key
from service.search.memory_fold import FoldConfig, MemoryFold
from storage.analytics import (
    QueryOrder,
    daily_volume,
    event_positions,
    query_stats,
    suggestions,
)
from storage.db import make_engine, migrate, session_factory, transaction
from storage.feedback import EventIn, record_events
from storage.impressions import ImpressionIn, ShownItem, add_impressions
from storage.models import MemoryPair, MemoryQuery, MemoryShopper, SearchEventStat, SearchStat

GRADES = {"click": 1, "add_to_cart": 2, "purchase": 3}
QUERIES, PRODUCTS, K = 50_000, 50_000, 20
EVENTS_PER_SEARCH = 2.0  # a click-heavy shop: events per search on average


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_logs(sessions, events: int, seed: int = 3) -> int:
    """Searches and events until `events` events are stored; returns the searches written."""
    rng = random.Random(seed)
    zipf = 1.0 / np.arange(1, QUERIES + 1) ** 1.05
    cdf = np.cumsum(zipf / zipf.sum())
    start = datetime.now(UTC) - timedelta(days=7)
    written = searches = 0
    bar = tqdm(total=events, desc="write logs", unit="event")
    while written < events:
        batch, evs = [], []
        for _ in range(1000):
            q = int(np.searchsorted(cdf, rng.random()))
            sid = uuid.uuid4().hex
            base = (q * 7919) % PRODUCTS
            shown = [f"p{(base + rng.randrange(60)) % PRODUCTS}" for _ in range(K)]
            shown = list(dict.fromkeys(shown))
            batch.append(
                ImpressionIn(
                    search_id=sid,
                    created_at=start + timedelta(seconds=searches),
                    query_text=f"query number {q}",
                    has_image=False,
                    image_sha256=None,
                    query_type="text",
                    filters=None,
                    user_id=f"u{rng.randrange(200_000)}",
                    model_version="h-bench",
                    k=K,
                    latency_ms=1.0,
                    items=[ShownItem(p, 1.0, i, 1.0 / i) for i, p in enumerate(shown, 1)],
                )
            )
            searches += 1
            for pos, pid in enumerate(shown, 1):
                if rng.random() < EVENTS_PER_SEARCH / pos / 3.6:
                    evs.append(
                        (sid, pid, rng.choice(("click", "click", "add_to_cart", "purchase")))
                    )
        with transaction(sessions) as s:
            add_impressions(session=s, impressions=batch)
        when = start + timedelta(seconds=searches)
        with transaction(sessions) as s:
            record_events(
                session=s,
                events=[
                    EventIn(sid, pid, t, when, event_id=uuid.uuid4().hex) for sid, pid, t in evs
                ],
                received_at=when,
            )
        written += len(evs)
        bar.update(len(evs))
    bar.close()
    return searches


def table_bytes(engine, table: str) -> int | None:
    with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            return int(c.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar())
        try:
            return int(
                c.execute(
                    text(f"SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%{table}%'")
                ).scalar()
            )
        except Exception:  # SQLite built without dbstat
            return None


def database_url(tmp: str, database: str) -> str:
    """A fresh SQLite file, or a fresh PostgreSQL schema of its own."""
    if database == "sqlite":
        return f"sqlite:///{tmp}/bench.db"
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    schema = f"memscale_{os.getpid()}"
    admin = make_engine(url)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    return url + f"?options=-csearch_path%3D{schema}"


def drop_schema(url: str) -> None:
    """Drop the PostgreSQL schema `database_url` made (nothing for SQLite)."""
    if "search_path%3D" in url:
        schema = url.rsplit("%3D", 1)[1]
        admin = make_engine(url.split("?")[0])
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def fold_config() -> FoldConfig:
    """A fold of every logged search, with nothing purged: what the benchmarks of logs measure."""
    return FoldConfig(
        grades=GRADES,
        half_life_days=14,
        text_encoder="none",
        image_encoder="none",
        retention_days=90,
        max_pairs=10_000_000,
        analytics_days=400,
    )


def fold_all(sessions) -> tuple[int, float]:
    """Fold every logged search and event; (how many, seconds)."""
    config = fold_config()
    t0 = time.perf_counter()
    folded = MemoryFold(sessions, config, lease_seconds=3600).run()
    return folded, time.perf_counter() - t0


def time_reads(memory: QueryMemory) -> list[float]:
    """Milliseconds of 400 searches' memory reads, head and tail queries, every logged query
    with a vector as text queries have, so the similar-query lookup runs."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(QUERIES, 384)).astype(np.float32)
    for q in range(QUERIES):
        mk = memory_key(f"query number {q}", None)
        memory.put_query(mk.key, "text", mk.normal, vectors[q])
    reads = []
    candidates = [f"p{i}" for i in range(200)]
    for q in list(range(0, 2000, 10)) + list(range(40_000, 50_000, 50)):
        near = vectors[q] + 0.3 * rng.normal(size=384).astype(np.float32)
        t = time.perf_counter()
        ev = memory.recall(memory_key(f"query number {q}", None).key, "text", near)
        if ev is not None:
            memory.lifts(ev, candidates)
            memory.favoured(ev)
        reads.append((time.perf_counter() - t) * 1000)
    return reads


def time_analytics(sessions) -> dict[str, float]:
    """Median milliseconds of each analytics read over the last 30 days (5 reads each), as the
    dashboard asks for them."""
    today = int(time.time() // DAY_S)
    since, until = today - 29, today
    reads = {
        "top_queries": lambda s: query_stats(
            session=s, since=since, until=until, order=QueryOrder.TOP, limit=50
        ),
        "no_results": lambda s: query_stats(
            session=s, since=since, until=until, order=QueryOrder.NO_RESULTS, limit=50
        ),
        "no_clicks": lambda s: query_stats(
            session=s, since=since, until=until, order=QueryOrder.NO_CLICKS, limit=50, event="click"
        ),
        "volume": lambda s: daily_volume(session=s, since=since, until=until, by="query_type"),
        "versions": lambda s: daily_volume(session=s, since=since, until=until, by="model_version"),
        "positions": lambda s: event_positions(session=s, since=since, until=until),
        "suggest": lambda s: suggestions(session=s, prefix="query number 1", since=since, limit=8),
    }
    out = {}
    for name, read in reads.items():
        times = []
        for _ in range(5):
            with sessions() as s:
                t = time.perf_counter()
                read(s)
                times.append((time.perf_counter() - t) * 1000)
        out[name] = round(float(np.median(times)), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fr-memory-scale-") as tmp:
        url = database_url(tmp, args.database)
        migrate(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        t0 = time.perf_counter()
        searches = write_logs(sessions, args.events)
        write_s = time.perf_counter() - t0
        folded, fold_s = fold_all(sessions)
        with sessions() as s:
            rows = {
                m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
                for m in (MemoryQuery, MemoryPair, MemoryShopper, SearchStat, SearchEventStat)
            }
        sizes = {t: table_bytes(engine, t) for t in rows}
        memory = QueryMemory(memory_config(Settings()))  # as a server with default settings
        before = rss_mb()
        t0 = time.perf_counter()
        MemoryFollower(sessions, memory, ["none"]).poll()
        load_s = time.perf_counter() - t0
        added_mb = rss_mb() - before
        reads = time_reads(memory)
        analytics_ms = time_analytics(sessions)
        engine.dispose()
        drop_schema(url)
    result = {
        "database": args.database,
        "events": args.events,
        "searches": searches,
        "write_logs_s": round(write_s, 1),
        "fold_s": round(fold_s, 1),
        "fold_rows_per_s": round(folded / fold_s),
        "rows": rows,
        "bytes": sizes,
        "follower_load_s": round(load_s, 1),
        "follower_rss_mb": round(added_mb, 1),
        "read_ms_p50": round(float(np.median(reads)), 3),
        "read_ms_p99": round(float(np.percentile(reads, 99)), 3),
        "analytics_ms_p50": analytics_ms,
    }
    print(f"\nquery memory at {args.events:,} events ({searches:,} searches), {args.database}")
    for k, v in result.items():
        print(f"  {k:<16} {v}")
    print(f"wrote {write_json(f'memory_scale_{args.database}', result)}")


if __name__ == "__main__":
    main()
