"""A bounded load run on loopback: a real `fusionrank serve` with API keys, shoppers searching by
text and sending feedback on about 10 searches in 100, for --seconds at each concurrency, with a
hot swap of the active head in the middle of each run. Reports sustained searches/s, latency
percentiles and errors per concurrency, then checks in SQL that every event answered 202 was
stored exactly once.

How: the server gets a fresh SQLite database (benchmarks.common.fresh_database) and a second,
compatible head version (benchmarks.hot_swap.second_head); its learner is left to a process of
its own (FUSIONRANK_LEARNER_IN_PROCESS=false) that is not started, so only the swaps change the
active head. Auth is on as in production: the shoppers send an ingest key, the swap and the
metrics reads an admin key; the per-key rate limit is raised far above the load
(FUSIONRANK_RATE_LIMIT), or it would refuse the run's requests. The query cache keeps its default
(10,000 texts; --query-cache 0 turns it off, the worst case); the shoppers draw uniformly from
every distinct synthetic text query the three phrasing sets of shoppers.queries make (about
12,000; --queries takes fewer), so that it cannot keep them all. Over a full run it still
answers most searches of the later levels (about 80% at concurrency 8); its hit rate is
reported per level.
Each of N shoppers is a thread with one keep-alive http.client connection (as in
benchmarks.latency: cheap on the client's CPU; the load generator's own CPU time is reported):
POST /v1/search {"query", "k": 20}, then with probability --event-rate (seeded) a click on one
of the results, POST /v1/feedback with a fresh event_id. An error is any search answered other
than 200, any feedback other than 202, or any request that failed in transport.

Windows, per concurrency level (times are when a request was issued):
  warm-up  the first min(5 s, seconds/10); in throughput, not in the latency columns.
  steady   after the warm-up and until 0.5 s before the swap (as benchmarks.hot_swap).
  swap     the head is activated at seconds/2 (the other version each level); "during swap" is
           every search issued within 1 s after the activate request was sent
           (benchmarks.hot_swap.summarise). With one swap per level this window holds about one
           second of searches, so its p99 is near its maximum at low concurrency.
searches/s counts the searches answered 200 over the whole level, swap included.

Target on 2 cores: >= 150 searches/s at concurrency 8 with 0 errors at every level, p99 during
the swap <= 1.5x steady p99 at every level, every event answered 202 in SQL exactly once.
Usage: python -m benchmarks.load [--data-dir DIR] [--seconds 120] [--concurrency 1 4 8]
       [--event-rate 0.10] [--queries N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    ensure_index,
    fresh_database,
    load_rows,
    print_targets,
    require_shared,
    write_json,
)
from benchmarks.hot_swap import Record, second_head, summarise
from benchmarks.latency import connect, pct
from benchmarks.server import start_server
from shoppers.phrasings import PHRASINGS
from shoppers.queries import make_queries

RATE_LIMIT = "100000/second"  # per key; the default (200/second;6000/minute) would throttle this
SEED = 17
MODEL_VERSION = re.compile(rb'"model_version"\s*:\s*"([^"]+)"')


@dataclass
class Keys:
    """Fresh random keys for this run only (32 hex characters each)."""

    ingest: str = field(default_factory=lambda: secrets.token_hex(16))
    admin: str = field(default_factory=lambda: secrets.token_hex(16))

    def spec(self) -> str:
        return f"{self.ingest}:ingest,{self.admin}:admin"


def headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def call(
    conn: http.client.HTTPConnection, path: str, hdrs: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a keep-alive connection; POST when there is a body."""
    conn.request("POST" if body is not None else "GET", path, body=body, headers=hdrs)
    r = conn.getresponse()
    return r.status, r.read()


def distinct_queries(limit: int) -> list[str]:
    """The distinct synthetic text queries that every phrasing set makes from the catalog's
    attribute combinations (30,000 draws each find nearly all), shuffled; the first `limit`
    of them unless it is 0."""
    rows = load_rows()
    texts = [
        q.text
        for words in PHRASINGS
        for q in make_queries(rows, {}, 30_000, seed=SEED, phrasings=words)
        if q.text
    ]
    pool = list(dict.fromkeys(texts))
    random.Random(SEED).shuffle(pool)
    return pool[:limit] if limit else pool


@dataclass
class Shopper:
    """What one worker saw; merged after the level, so workers share no lock."""

    searches: list[Record] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # model_version of each search's answer
    feedback: list[float] = field(default_factory=list)  # latencies of the 202s
    accepted: list[str] = field(default_factory=list)  # event ids answered 202
    refused: list[str] = field(default_factory=list)  # event ids sent and not answered 202
    duplicates: int = 0  # 202s saying the event was already stored (fresh ids: never expected)
    errors: Counter[str] = field(default_factory=Counter)
    crash: BaseException | None = None


def shop(
    url: str,
    key: str,
    queries: list[str],
    rate: float,
    rng: random.Random,
    stop: float,
    abort: threading.Event,
    out: Shopper,
) -> None:
    """Search, and sometimes click, until `stop`; on a transport error, count it, reconnect."""
    hdrs = headers(key)
    conn = connect(url)
    try:
        while time.perf_counter() < stop and not abort.is_set():
            body = json.dumps({"query": rng.choice(queries), "k": 20}).encode()
            click = rng.random() < rate
            t0 = time.perf_counter()
            try:
                status, answer = call(conn, "/v1/search", hdrs, body)
            except (OSError, http.client.HTTPException) as e:
                out.searches.append((t0, time.perf_counter() - t0, False))
                out.versions.append("")
                out.errors[f"search {type(e).__name__}"] += 1
                conn.close()
                conn = connect(url)
                continue
            out.searches.append((t0, time.perf_counter() - t0, status == 200))
            m = MODEL_VERSION.search(answer, 0, 400) if status == 200 else None
            out.versions.append(m.group(1).decode() if m else "")
            if status != 200:
                out.errors[f"search {status}"] += 1
                continue
            if click:
                conn = click_one(conn, url, hdrs, json.loads(answer), rng, out)
    except BaseException as e:  # noqa: BLE001 - handed to the main thread, raised there
        out.crash = e
    finally:
        conn.close()


def click_one(
    conn: http.client.HTTPConnection,
    url: str,
    hdrs: dict[str, str],
    search: dict[str, Any],
    rng: random.Random,
    out: Shopper,
) -> http.client.HTTPConnection:
    """A click on one of the search's results with a fresh event id; the connection to go on
    with (a new one after a transport error)."""
    if not search["results"]:
        return conn
    event_id = uuid.uuid4().hex
    event = {
        "search_id": search["search_id"],
        "product_id": rng.choice(search["results"])["product_id"],
        "type": "click",
        "event_id": event_id,
    }
    t0 = time.perf_counter()
    try:
        status, answer = call(conn, "/v1/feedback", hdrs, json.dumps(event).encode())
    except (OSError, http.client.HTTPException) as e:
        out.refused.append(event_id)
        out.errors[f"feedback {type(e).__name__}"] += 1
        conn.close()
        return connect(url)
    if status == 202:
        out.feedback.append(time.perf_counter() - t0)
        out.accepted.append(event_id)
        out.duplicates += json.loads(answer)["duplicates"]
    else:
        out.refused.append(event_id)
        out.errors[f"feedback {status}"] += 1
    return conn


def admin_call(url: str, key: str, path: str, post: bool = False) -> tuple[int, bytes]:
    with contextlib.closing(connect(url)) as conn:
        return call(conn, path, headers(key), b"" if post else None)


def cache_stats(url: str, key: str) -> dict[str, int]:
    status, body = admin_call(url, key, "/v1/metrics/online")
    if status != 200:
        raise SystemExit(f"GET /v1/metrics/online answered {status}: {body[:200]!r}")
    stats: dict[str, int] = json.loads(body)["query_cache"]["text"]
    return stats


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Level:
    concurrency: int
    elapsed: float
    shoppers: list[Shopper]
    start: float  # time.perf_counter() when the level started
    swap_at: float  # seconds after the start when the activate request was sent
    swap_ms: float
    swap_status: int
    new_version: str
    client_cpu: float
    server_cpu: float
    cache: dict[str, int]

    def all(self) -> Iterator[tuple[Record, str]]:
        for s in self.shoppers:
            yield from zip(s.searches, s.versions, strict=True)


def run_level(
    url: str,
    keys: Keys,
    pid: int,
    queries: list[str],
    concurrency: int,
    seconds: float,
    rate: float,
    new_version: str,
) -> Level:
    """`concurrency` shoppers for `seconds`; at half time, `new_version` is activated."""
    shoppers = [Shopper() for _ in range(concurrency)]
    abort = threading.Event()
    cache0, cpu0, server0 = cache_stats(url, keys.admin), time.process_time(), cpu_seconds(pid)
    start = time.perf_counter()
    stop = start + seconds
    threads = []
    for i, out in enumerate(shoppers):
        rng = random.Random(f"{SEED}-{concurrency}-{i}")
        work = (url, keys.ingest, queries, rate, rng, stop, abort, out)
        threads.append(threading.Thread(target=shop, args=work, daemon=True))
    try:
        for t in threads:
            t.start()
        time.sleep(max(0.0, start + seconds / 2 - time.perf_counter()))
        swap_at = time.perf_counter()
        status, body = admin_call(url, keys.admin, f"/v1/models/{new_version}/activate", post=True)
        swap_ms = (time.perf_counter() - swap_at) * 1000
        if status != 200:
            print(f"activate {new_version} answered {status}: {body[:200]!r}")
        for t in threads:
            t.join()
    finally:
        abort.set()  # on an interrupt: the workers stop after their request in flight
    elapsed = time.perf_counter() - start
    client_cpu, server_cpu = time.process_time() - cpu0, cpu_seconds(pid) - server0
    for s in shoppers:
        if s.crash is not None:
            raise s.crash
    cache1 = cache_stats(url, keys.admin)
    cache = {k: cache1[k] - cache0[k] for k in ("hits", "misses")}
    cache["capacity"] = cache1["capacity"]
    return Level(
        concurrency=concurrency,
        elapsed=elapsed,
        shoppers=shoppers,
        start=start,
        swap_at=swap_at - start,
        swap_ms=swap_ms,
        swap_status=status,
        new_version=new_version,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        cache=cache,
    )


def summarise_level(lv: Level, seconds: float) -> dict[str, Any]:
    """A level's numbers, times relative to its start; steady and swap windows as in the
    module docstring."""
    warm = min(5.0, seconds / 10)
    records = [(t0 - lv.start, lat, ok) for (t0, lat, ok), _ in lv.all()]
    versions = [v for _, v in lv.all()]
    measured = [r for r in records if r[0] >= warm]
    swap, steady_n = summarise(measured, [lv.swap_at])
    steady = [lat for t0, lat, _ in measured if t0 < lv.swap_at - 0.5]
    ok = sum(r[2] for r in records)
    feedback = [x for s in lv.shoppers for x in s.feedback]
    errors: Counter[str] = sum((s.errors for s in lv.shoppers), Counter())
    if lv.swap_status != 200:
        errors[f"activate {lv.swap_status}"] += 1
    swap_done = lv.swap_at + lv.swap_ms / 1000
    new = [
        t0 + lat for (t0, lat, _), v in zip(records, versions, strict=True) if v == lv.new_version
    ]
    lookups = lv.cache["hits"] + lv.cache["misses"]
    return {
        "concurrency": lv.concurrency,
        "seconds": lv.elapsed,
        "searches": len(records),
        "searches_ok": ok,
        "searches_per_s": ok / lv.elapsed,
        "all": pct([lat for _, lat, _ in records]),
        "steady": pct(steady) if steady else {},
        "steady_requests": steady_n,
        "warmup_s": warm,
        "swap_p50_ms": swap["swap_p50_ms"],
        "swap_p99_ms": swap["swap_p99_ms"],
        "swap_requests": int(swap["swap_requests"]),
        "swap_to_steady_p99": swap["swap_p99_ms"] / swap["steady_p99_ms"],
        "swap": {
            "version": lv.new_version,
            "at_s": lv.swap_at,
            "status": lv.swap_status,
            "request_ms": lv.swap_ms,
            # the first answer from the new head, after the activate request was sent
            "first_new_answer_ms": (min(new) - lv.swap_at) * 1000 if new else None,
            # searches sent after the activate returned, yet answered by the old head
            "stale_answers": sum(
                1
                for (t0, _, ok_), v in zip(records, versions, strict=True)
                if ok_ and t0 > swap_done and v != lv.new_version
            ),
        },
        "events_202": sum(len(s.accepted) for s in lv.shoppers),
        "events_duplicate": sum(s.duplicates for s in lv.shoppers),
        "feedback": pct(feedback) if feedback else {},
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "client_cpu_s": lv.client_cpu,
        "server_cpu_s": lv.server_cpu,
        "query_cache": {
            **lv.cache,
            "hit_rate": lv.cache["hits"] / lookups if lookups else math.nan,
        },
    }


def check_sql(db: Path, accepted: list[str], refused: list[str]) -> dict[str, int]:
    """Every event id answered 202 should be in feedback_events exactly once; also how many
    stored events the client was not told were stored."""
    if not db.exists():
        raise SystemExit(f"the run's database {db} is gone")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        counts = dict(
            conn.execute("SELECT event_id, COUNT(*) FROM feedback_events GROUP BY event_id")
        )
    ok = set(accepted)
    return {
        "events_202": len(ok),
        "in_sql_once": sum(counts.get(e) == 1 for e in ok),
        "missing": sum(e not in counts for e in ok),
        "more_than_once": sum(counts.get(e, 0) > 1 for e in ok),
        "in_sql_without_202": sum(e not in ok for e in counts),
        "not_202_but_stored": sum(e in counts for e in refused),
        "rows": sum(counts.values()),
    }


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def print_report(rows: list[dict[str, Any]], sql: dict[str, int], n_queries: int) -> None:
    capacity = rows[0]["query_cache"]["capacity"]
    print(
        f"\nload on loopback: text search + feedback, {n_queries} distinct queries, query cache "
        f"of {capacity} texts, API keys on,\nrate limit per key raised to "
        f"{RATE_LIMIT} (the default, 200/second;6000/minute, would refuse this load)"
    )
    print(
        f"{'conc':>4} {'searches':>9} {'search/s':>9} {'p50':>7} {'p95':>7} {'p99':>7}"
        f" {'p99 swap':>9} {'swap/st':>8} {'events':>7} {'errors':>7}"
    )
    for r in rows:
        st = r["steady"]
        print(
            f"{r['concurrency']:4d} {r['searches']:9d} {r['searches_per_s']:9.1f}"
            f" {st.get('p50', math.nan):7.1f} {st.get('p95', math.nan):7.1f}"
            f" {st.get('p99', math.nan):7.1f} {r['swap_p99_ms']:9.1f}"
            f" {r['swap_to_steady_p99']:8.2f} {r['events_202']:7d} {r['errors']:7d}"
        )
    print(
        "(ms; p50/p95/p99: steady searches; p99 swap: searches sent within 1 s after the activate "
        "request; events: feedback answered 202)"
    )
    print(
        f"\n{'conc':>4} {'client CPU':>11} {'server CPU':>11} {'cache hits':>11}"
        f" {'fb p50':>7} {'fb p99':>7} {'swap req':>9} {'new after':>10} {'stale':>6}"
        f" {'n steady':>9} {'n swap':>7}"
    )
    for r in rows:
        fb, sw = r["feedback"], r["swap"]
        first = sw["first_new_answer_ms"]
        print(
            f"{r['concurrency']:4d} {r['client_cpu_s'] / r['seconds']:10.0%}"
            f" {r['server_cpu_s'] / r['seconds']:10.0%} {r['query_cache']['hit_rate']:10.0%}"
            f" {fb.get('p50', math.nan):7.1f} {fb.get('p99', math.nan):7.1f}"
            f" {sw['request_ms']:9.1f} {'-' if first is None else f'{first:.1f}':>10}"
            f" {sw['stale_answers']:6d} {r['steady_requests']:9d} {r['swap_requests']:7d}"
        )
    print(
        "(CPU: share of one core over the level, load generator and server; cache hits: text "
        "searches that skipped the encoder;\n fb: feedback latency (ms) of the 202s; swap req: "
        "the activate request (ms); new after: first answer from the new head,\n ms after the "
        "activate was sent; stale: searches sent after it returned, answered by the old head)"
    )
    for r in rows:
        if r["errors"]:
            print(f"errors at concurrency {r['concurrency']}: {r['errors_by_kind']}")
    print(
        f"\nSQL: {sql['events_202']} events answered 202, {sql['in_sql_once']} of them stored "
        f"exactly once, {sql['missing']} missing, {sql['more_than_once']} more than once; "
        f"{sql['in_sql_without_202']} stored without a 202 ({sql['not_202_but_stored']} of the "
        "refused or failed ones)"
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="an ingested data dir (default: the full catalog's, ingested first if missing)",
    )
    ap.add_argument(
        "--seconds", type=float, default=120, metavar="S", help="load per level (default: 120)"
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        metavar="N",
        help="shoppers at each level, one level after another (default: 1 4 8)",
    )
    ap.add_argument(
        "--event-rate",
        type=float,
        default=0.10,
        metavar="P",
        help="share of searches followed by a click (default: 0.10)",
    )
    ap.add_argument(
        "--queries",
        type=int,
        default=0,
        metavar="N",
        help="distinct text queries the shoppers draw from (default 0: all, about 12,000)",
    )
    ap.add_argument(
        "--query-cache",
        type=int,
        default=None,
        metavar="N",
        help="the server's FUSIONRANK_QUERY_CACHE (default: its own default); 0 makes every "
        "search encode its query, the worst case (results then go to load_query_cache_0.json)",
    )
    return ap.parse_args()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that the server is stopped and the temp dir removed


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    require_shared()
    ensure_index(args.data_dir)
    queries = distinct_queries(args.queries)
    keys = Keys()
    tmp = Path(tempfile.mkdtemp(prefix="fr-load-"))
    try:
        db = tmp / "fusionrank.db"
        db_url = f"sqlite:///{db}"
        boot = fresh_database(args.data_dir, db)
        versions = [second_head(args.data_dir, db_url, boot), boot]
        proc, url = start_server(
            args.data_dir,
            env={
                "FUSIONRANK_DATABASE_URL": db_url,
                "FUSIONRANK_LEARNER_IN_PROCESS": "false",
                "FUSIONRANK_API_KEYS": keys.spec(),
                "FUSIONRANK_RATE_LIMIT": RATE_LIMIT,
                **(
                    {"FUSIONRANK_QUERY_CACHE": str(args.query_cache)}
                    if args.query_cache is not None
                    else {}
                ),
            },
        )
        try:
            levels = [
                run_level(
                    url,
                    keys,
                    proc.pid,
                    queries,
                    c,
                    args.seconds,
                    args.event_rate,
                    versions[i % 2],
                )
                for i, c in enumerate(args.concurrency)
            ]
        finally:
            stop_server(proc)
        every = [s for lv in levels for s in lv.shoppers]
        sql = check_sql(
            db, [e for s in every for e in s.accepted], [e for s in every for e in s.refused]
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [summarise_level(lv, args.seconds) for lv in levels]
    print_report(rows, sql, len(queries))
    by_c = {r["concurrency"]: r for r in rows}
    targets = {
        "0 errors at every level": all(r["errors"] == 0 for r in rows),
        "p99 during swap <= 1.5x steady (each level)": all(
            r["swap_to_steady_p99"] <= 1.5 for r in rows
        ),
        "every 202'd event in SQL exactly once": sql["in_sql_once"] == sql["events_202"],
    }
    if 8 in by_c:
        targets = {"c=8 >= 150 searches/s": by_c[8]["searches_per_s"] >= 150, **targets}
    else:
        print("(concurrency 8 not run: no throughput target)")
    print_targets(targets)
    path = write_json(
        "load" if args.query_cache is None else f"load_query_cache_{args.query_cache}",
        {
            "query_cache": args.query_cache,
            "results": {f"c{r['concurrency']}": r for r in rows},
            "sql": sql,
            "targets": targets,
            "seconds": args.seconds,
            "event_rate": args.event_rate,
            "distinct_queries": len(queries),
            "rate_limit": RATE_LIMIT,
            "versions": versions,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
