"""Logs at scale (issue 38): what a refresh reads, a day's query memory fold and retention, on
PostgreSQL's day-partitioned logs, against the plain tables and row deletes they replace.

Fill: `--searches` searches spread evenly over the `--days` days before today, each showing 10
products of 50,000 (Zipf-popular queries of 50,000, 200,000 shoppers), with a click on every
fifth search, written server-side (INSERT ... SELECT over generate_series, one statement per day
and table) into a schema of its own of the `--url` database, migrated to the newest schema (day
partitions). One search in 250 is held out by an earlier refresh; the previous refresh's window
ended two days ago; the newest day is not folded into the query memory yet.

Measured, each in a fresh process (time, and the peak RSS it added over its imports):
  window  learner.window.load_window with the default settings (settle 5 s, max window 200,000,
          replay 20,000): the window's searches, the holdout carried over and the replay sample,
          each with its shown items and events; then the replay sample alone again. No query
          vectors (none are logged here) and no training.
  fold    the query memory fold (service.search.memory_fold.MemoryFold.run) over the newest
          day's searches and events, with the search analytics it counts beside.
  retain  retention of the 30 oldest days: storage.retention.purge_before, dropping partitions.
Beside it, `--compare` searches are written the same way into a schema at migration 0007 (plain
tables, cascading foreign keys) and the same 30 days are deleted the old way
(storage.retention.delete_before), and dropped the new way from a partitioned copy of them.

Usage: python -m benchmarks.logs_at_scale [--searches 10000000] [--compare 1000000]
       [--url postgresql+psycopg://postgres@127.0.0.1:5432/logs_bench]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from alembic import command
from benchmarks.common import write_json
from storage.db import alembic_config, make_engine, migrate
from storage.partitions import LOGS, create_days, day_start

GRADES = {"click": 1, "add_to_cart": 2, "purchase": 3}
ITEMS, QUERIES, PRODUCTS, SHOPPERS = 10, 50_000, 50_000, 200_000
CLICK_EVERY, HOLDOUT_EVERY = 5, 250
RETAIN_DAYS = 30  # the oldest days retention removes


def schema_url(url: str, schema: str) -> str:
    return f"{url}?options=-csearch_path%3D{schema}"


def fresh_schema(url: str, schema: str) -> str:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return schema_url(url, schema)


def drop_schemas(url: str, *schemas: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for schema in schemas:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


# ---- fill -------------------------------------------------------------------------------------
def fill_day(conn: Connection, day: date, n: int, *, partitioned: bool, newest: bool) -> None:
    """`n` searches evenly over `day`, their shown items and their clicks."""
    lo, hi = day_start(day), day_start(day + timedelta(1))
    span = {"lo": lo, "hi": hi, "n": n, "step": 86400.0 / n, "day": day.isoformat()}
    conn.execute(
        text(
            "INSERT INTO impressions (search_id, created_at, query_text, has_image, query_type, "
            "user_id, model_version, k, latency_ms, explore, holdout, memory_folded) "
            "SELECT md5(:day || g), CAST(:lo AS timestamptz) + g * :step * interval '1 second', "
            f"'query ' || floor({QUERIES} * power(random(), 3)), false, 'text', "
            f"'user-' || floor({SHOPPERS} * random()), 'h-bench', {ITEMS}, 5.0, false, "
            f"g % {HOLDOUT_EVERY} = 0, :folded FROM generate_series(0, :n - 1) g"
        ),
        span | {"folded": not newest},
    )
    search_time, its_time = (", created_at", ", i.created_at") if partitioned else ("", "")
    conn.execute(
        text(
            "INSERT INTO impression_items (search_id, position, product_id, score, "
            f"model_position, propensity, memory{search_time}) "
            f"SELECT i.search_id, p, 'p' || (abs(hashtext(i.query_text)) + p * 7) % {PRODUCTS}, "
            f"1.0 - p / 20.0, p, 1.0 / p, 0.0{its_time} "
            f"FROM impressions i, generate_series(1, {ITEMS}) p "
            "WHERE i.created_at >= :lo AND i.created_at < :hi"
        ),
        span,
    )
    search_time = ", search_created_at" if partitioned else ""
    conn.execute(  # the product the items above show at that position: no join needed
        text(
            "INSERT INTO feedback_events (event_id, search_id, product_id, position, type, ts, "
            f"received_at, memory_folded{search_time}) "
            "SELECT 'e-' || search_id, search_id, "
            f"'p' || (abs(hashtext(query_text)) + pos * 7) % {PRODUCTS}, pos, 'click', "
            "created_at + interval '30 seconds', created_at + interval '30 seconds', "
            f":folded{', created_at' if partitioned else ''} FROM ("
            "SELECT search_id, query_text, created_at, 1 + abs(hashtext(search_id)) % 3 AS pos "
            "FROM impressions WHERE created_at >= :lo AND created_at < :hi "
            f"AND abs(hashtext(search_id)) / 3 % {CLICK_EVERY} = 0) t"
        ),
        span | {"folded": not newest},
    )


def fill(url: str, searches: int, days: int, *, partitioned: bool) -> dict[str, Any]:
    """Write the logs; returns how long it took and how big they are."""
    today = datetime.now(UTC).date()
    span = [today - timedelta(days - d) for d in range(days)]
    engine = make_engine(url)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        if partitioned:
            create_days(conn, span)
    for d, day in enumerate(span):
        n = searches // days + (1 if d < searches % days else 0)
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            fill_day(conn, day, n, partitioned=partitioned, newest=d == days - 1)
        print(f"  filled {day} ({d + 1}/{days}) at {time.perf_counter() - t0:.0f} s", flush=True)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
        sizes = table_sizes(conn)
    engine.dispose()
    return {"fill_s": round(time.perf_counter() - t0, 1), **sizes}


def table_sizes(conn: Connection) -> dict[str, Any]:
    """Rows and bytes (with indexes, over every partition) of the three log tables."""
    out: dict[str, Any] = {}
    for table in LOGS:
        size = conn.execute(
            text(
                "SELECT pg_total_relation_size(to_regclass(:t)) + coalesce(("
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                "WHERE inhparent = to_regclass(:t)), 0)"
            ),
            {"t": table},
        ).scalar_one()
        rows = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        out[table] = {"rows": int(rows), "mb": round(int(size) / 2**20, 1)}
    return out


# ---- measurements, each in a process of its own -------------------------------------------------
def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measured(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`work`'s result with its seconds, the RSS before it and the peak RSS it reached."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak so far is the imports': reset it
    base = _status("VmRSS")
    t0 = time.perf_counter()
    out = work()
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "rss_before_mb": round(base),
        "rss_peak_mb": round(_status("VmHWM")),
        **out,
    }


def measure_window(url: str) -> dict[str, Any]:
    from learner.dataset import replay_sample
    from learner.window import load_window
    from service.config import Settings
    from storage.db import session_factory

    settings = Settings()
    engine = make_engine(url)
    sessions = session_factory(engine)

    def window() -> dict[str, Any]:
        with sessions() as s:
            w = load_window(
                s,
                grades=GRADES,
                settle=timedelta(seconds=settings.learner_settle_seconds),
                max_window=settings.learner_max_window,
                replay=settings.learner_replay,
                fallback_version="h-bench",
            )
        return {"window": len(w.searches), "carried": len(w.carried), "replay": len(w.replay)}

    out = _measured(window)
    with sessions() as s:
        t0 = time.perf_counter()
        assert out["window"], "the window is empty"
        start = datetime.now(UTC) - timedelta(days=2)
        replay_sample(s, grades=GRADES, end=start, limit=settings.learner_replay)
        out["replay_alone_s"] = round(time.perf_counter() - t0, 2)
    engine.dispose()
    return out


def measure_fold(url: str) -> dict[str, Any]:
    from benchmarks.memory_scale import fold_config
    from service.search.memory_fold import MemoryFold
    from storage.db import session_factory

    engine = make_engine(url)
    config = fold_config()
    fold = MemoryFold(session_factory(engine), config, lease_seconds=3600)
    out = _measured(lambda: {"folded": fold.run()})
    engine.dispose()
    return out


def measure_retention(url: str, cutoff: datetime, rows: bool) -> dict[str, Any]:
    from storage.db import session_factory
    from storage.retention import delete_before, purge_before

    engine = make_engine(url)
    sessions = session_factory(engine)
    purge = delete_before if rows else purge_before

    def retain() -> dict[str, Any]:
        with sessions() as s:
            return {"searches_deleted": purge(session=s, cutoff=cutoff)}

    out = _measured(retain)
    engine.dispose()
    return out


def in_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---- the runs ---------------------------------------------------------------------------------
def set_last_window(url: str) -> None:
    """The previous refresh's window ended at the start of the day two days ago."""
    from storage.db import session_factory, transaction
    from storage.models import VersionStatus
    from storage.registry import VersionIn, register_version

    engine = make_engine(url)
    end = day_start(datetime.now(UTC).date() - timedelta(2))
    with transaction(session_factory(engine)) as s:
        v = VersionIn("h-bench", None, VersionStatus.BOOTSTRAP, "0" * 64, window_end=end)
        register_version(session=s, v=v)
    engine.dispose()


def run_partitioned(url: str, searches: int, days: int, *, full: bool) -> dict[str, Any]:
    migrate(url)
    print(f"filling {searches:,} searches over {days} days (day partitions)", flush=True)
    out: dict[str, Any] = {
        "searches": searches,
        "days": days,
        "fill": fill(url, searches, days, partitioned=True),
    }
    if full:
        set_last_window(url)
        out["window"] = in_process(measure_window, url)
        print(f"  window: {out['window']}", flush=True)
        out["fold"] = in_process(measure_fold, url)
        print(f"  fold: {out['fold']}", flush=True)
    cutoff = day_start(datetime.now(UTC).date() - timedelta(days - RETAIN_DAYS))
    out["retain"] = in_process(measure_retention, url, cutoff, False)
    print(f"  retention: {out['retain']}", flush=True)
    engine = make_engine(url)
    with engine.connect() as conn:
        out["after_retention"] = table_sizes(conn)
    engine.dispose()
    return out


def run_rows(url: str, searches: int, days: int) -> dict[str, Any]:
    command.upgrade(alembic_config(url), "0007")
    print(f"filling {searches:,} searches over {days} days (plain tables, 0007)", flush=True)
    out: dict[str, Any] = {"searches": searches, "days": days}
    out["fill"] = fill(url, searches, days, partitioned=False)
    cutoff = day_start(datetime.now(UTC).date() - timedelta(days - RETAIN_DAYS))
    out["retain"] = in_process(measure_retention, url, cutoff, True)
    print(f"  row deletes: {out['retain']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/logs_bench")
    ap.add_argument("--searches", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--compare", type=int, default=1_000_000, help="searches of the row-delete run")
    args = ap.parse_args()
    result: dict[str, Any] = {"url": args.url.rsplit("@", 1)[-1], "retained_days": RETAIN_DAYS}
    if args.compare:
        rows = run_rows(fresh_schema(args.url, "logs_rows"), args.compare, args.days)
        parts = run_partitioned(
            fresh_schema(args.url, "logs_compare"), args.compare, args.days, full=False
        )
        result["compare"] = {"rows": rows, "partitions": parts}
        drop_schemas(args.url, "logs_rows", "logs_compare")  # the disk the big run needs
    url = fresh_schema(args.url, "logs_partitioned")
    result["scale"] = run_partitioned(url, args.searches, args.days, full=True)
    _print(result)
    print(f"wrote {write_json('logs_at_scale', result)}")


def _print(result: dict[str, Any]) -> None:
    s = result["scale"]
    print(f"\n{s['searches']:,} searches over {s['days']} days, day-partitioned (PostgreSQL)")
    print(f"{'table':18} {'rows':>12} {'MB':>9}")
    for table in LOGS:
        print(f"{table:18} {s['fill'][table]['rows']:12,} {s['fill'][table]['mb']:9,.0f}")
    print(f"fill: {s['fill']['fill_s']:.0f} s\n")
    print(f"{'step':40} {'seconds':>8} {'RSS before':>11} {'RSS peak':>9}  what")
    w, f = s["window"], s["fold"]
    lines = [
        (
            "refresh window (load_window)",
            w,
            f"{w['window']:,} new, {w['carried']:,} carried, {w['replay']:,} replay",
        ),
        ("query memory fold, newest day", f, f"{f['folded']:,} searches and events"),
        (
            f"retention, {result['retained_days']} days: drop partitions",
            s["retain"],
            f"{s['retain']['searches_deleted']:,} searches",
        ),
    ]
    if "compare" in result:
        c = result["compare"]
        for name, r in (("row deletes", c["rows"]), ("drop partitions", c["partitions"])):
            lines.append(
                (
                    f"retention at {r['searches']:,}: {name}",
                    r["retain"],
                    f"{r['retain']['searches_deleted']:,} searches",
                )
            )
    for name, r, what in lines:
        rss = f"{r['rss_before_mb']:8} MB {r['rss_peak_mb']:6} MB"
        print(f"{name:40} {r['seconds']:8.2f} {rss}  {what}")
    print(f"(replay sample alone, run again: {w['replay_alone_s']:.2f} s)")


if __name__ == "__main__":
    main()
