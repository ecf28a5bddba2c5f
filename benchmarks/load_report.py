"""What benchmarks.load reports: a level's numbers and windows, the two tables, and the
targets."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from benchmarks.hot_swap import summarise
from benchmarks.latency import pct
from benchmarks.load_shoppers import RATE_LIMIT, Level


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


def check_targets(rows: list[dict[str, Any]], sql: dict[str, int]) -> dict[str, bool]:
    """The module docstring's targets, met or not; the throughput one only if concurrency 8
    ran."""
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
    return targets
