"""The load generator of benchmarks.load: shoppers, each a thread with one keep-alive
connection, searching by text and sometimes clicking, and one concurrency level of them with a
hot swap of the active head at half time."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import load_rows
from benchmarks.hot_swap import Record
from benchmarks.latency import connect
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
