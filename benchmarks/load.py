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
       [--event-rate 0.10] [--queries N] [--query-cache N]

The shoppers are in benchmarks.load_shoppers, the SQL check in benchmarks.load_sql, the tables
and targets in benchmarks.load_report.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import FrameType

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    ensure_index,
    fresh_database,
    print_targets,
    require_shared,
    write_json,
)
from benchmarks.hot_swap import second_head
from benchmarks.load_report import check_targets, print_report, summarise_level
from benchmarks.load_shoppers import RATE_LIMIT, Keys, Level, distinct_queries, run_level
from benchmarks.load_sql import check_sql
from benchmarks.server import start_server


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


def server_env(keys: Keys, db_url: str, query_cache: int | None) -> dict[str, str]:
    """The server's settings: the run's database, no learner, the run's keys, a rate limit far
    above the load, and the query cache asked for (else its default)."""
    env = {
        "FUSIONRANK_DATABASE_URL": db_url,
        "FUSIONRANK_LEARNER_IN_PROCESS": "false",
        "FUSIONRANK_API_KEYS": keys.spec(),
        "FUSIONRANK_RATE_LIMIT": RATE_LIMIT,
    }
    if query_cache is not None:
        env["FUSIONRANK_QUERY_CACHE"] = str(query_cache)
    return env


def run(
    args: argparse.Namespace, queries: list[str]
) -> tuple[list[Level], dict[str, int], list[str]]:
    """Every level against one server on a fresh database, then the SQL check; the levels, the
    check and the two head versions swapped between."""
    keys = Keys()
    tmp = Path(tempfile.mkdtemp(prefix="fr-load-"))
    try:
        db = tmp / "fusionrank.db"
        db_url = f"sqlite:///{db}"
        boot = fresh_database(args.data_dir, db)
        versions = [second_head(args.data_dir, db_url, boot), boot]
        proc, url = start_server(args.data_dir, env=server_env(keys, db_url, args.query_cache))
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
    return levels, sql, versions


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    require_shared()
    ensure_index(args.data_dir)
    queries = distinct_queries(args.queries)
    levels, sql, versions = run(args, queries)
    rows = [summarise_level(lv, args.seconds) for lv in levels]
    print_report(rows, sql, len(queries))
    targets = check_targets(rows, sql)
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
