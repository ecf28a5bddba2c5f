"""A whole refresh at scale (issue 38): `learner.refresh.run_refresh` over windows of up to the
default `learner_max_window` (200,000 searches), on PostgreSQL, against the 44k catalog build.

Fill: a fresh database migrated to the newest schema gets `--history` older searches and then
the largest window's, evenly over the 7 days before now. Queries are Zipf-popular (exponent 1)
within their type: 80% text, 10% photo, 10% photo plus words. The text queries are the
shoppers package's attribute needs in all its phrasings, the most popular, then known-item
queries (brand plus title words, some with a typo) as the long tail; photos are fashion224
shopper photos. Each distinct query is encoded once by the real encoders and searched once by
the real Searcher (bootstrap head, no query memory) for its top 30; every logged search of it
shows the top 20 of those, or, as serving explores, a swapped order (explore_rate) or one of the
next 10 at a random slot (explore_deep_rate). Impressions, with their query vectors as the API
logs them, and events go through the storage layer's writers (storage.impressions,
storage.feedback). Events are position-biased: a shopper examines position k with probability
1/k and clicks, adds to cart and buys by the product's true grade for the need
(shoppers.simulator.reactions). One history search in 20 is held out by an earlier refresh.

Measured, per window size: before each run the registry is reset (the bootstrap head active, a
previous window ending so that exactly that many searches are new, the holdout marks as
written); then a fresh process composes the learner as `fusionrank learner` does
(service.learning) and runs one refresh (learner.worker.Learner.execute) with the default
settings. Reported: the process's wall time, the refresh's own seconds and phases, the peak RSS
and anonymous RSS of the process (sampled every 0.2 s), whether the candidate was promoted, and
the 1-minute load average at the start and end of the run.

Usage: python -m benchmarks.refresh_at_scale [--sizes 25000,100000,200000] [--history 60000]
       [--skip-fill] [--url postgresql+psycopg://postgres@127.0.0.1:5432/refresh_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.common import RESULTS, require_shared, write_json
from benchmarks.million_http import Peak
from benchmarks.refresh_logs import (
    distinct_queries,
    fresh_database,
    serve_queries,
    table_sizes,
    window_times,
    write_logs,
)

GRADES = {"click": 1, "add_to_cart": 2, "purchase": 3}
HOLDOUT_EVERY = 20  # one history search in this many was held out by an earlier refresh
MARKER = "previous-window"  # a registry row whose window_end starts the measured window


# ---- one refresh per size -----------------------------------------------------------------
def reset(url: str, data_dir: Path, work_dir: Path, total: int, history: int, size: int) -> None:
    """The registry as if the previous refresh's window ended `size` searches before the newest
    one: the bootstrap head active and every other version gone, the holdout marks as written,
    and a heads directory of the bootstrap head alone."""
    from learner.versions import register_bootstrap
    from storage.artifacts import current, read_manifest
    from storage.db import make_engine, session_factory, transaction
    from storage.models import VersionStatus
    from storage.registry import VersionIn, register_version, set_active

    build = current(data_dir / "index")
    assert build is not None
    version: str = read_manifest(build)["head_version"]
    shutil.rmtree(work_dir / "heads", ignore_errors=True)
    shutil.copytree(data_dir / "heads" / version, work_dir / "heads" / version)
    start, step = window_times(total)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM training_runs"))
        conn.execute(text("DELETE FROM active_model"))
        conn.execute(text("DELETE FROM model_versions WHERE version != :v"), {"v": version})
        conn.execute(text("DELETE FROM leases"))
        conn.execute(
            text(
                "UPDATE impressions SET holdout = (CAST(substr(search_id, 2) AS integer) < :h "
                f"AND CAST(substr(search_id, 2) AS integer) % {HOLDOUT_EVERY} = 0)"
            ),
            {"h": history},
        )
    with transaction(session_factory(engine)) as s:
        register_bootstrap(s, data_dir / "heads", version)
        end = start + (total - size) * step
        register_version(
            session=s,
            v=VersionIn(MARKER, None, VersionStatus.BOOTSTRAP, "0" * 64, window_end=end),
        )
        set_active(session=s, version=version)
    engine.dispose()


def refresh_child(url: str, data_dir: Path, work_dir: Path) -> None:
    """In a fresh process: the learner as `fusionrank learner` composes it, one refresh run."""
    from learner.worker import Learner
    from service.catalog.vectors import VectorConfig, open_backend
    from service.config import Settings
    from service.learning import encoders_of, learner_config, load_catalog
    from storage.db import make_engine, session_factory

    settings = Settings(data_dir=data_dir, database_url=url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    vectors = open_backend(VectorConfig.of(settings))
    loaded = load_catalog(settings, sessions, vectors)
    assert not isinstance(loaded, str), loaded
    config = replace(learner_config(settings), heads_dir=work_dir / "heads")
    learner = Learner(config, sessions, loaded.index, encoders_of(loaded.index), loaded.version)
    run_id = learner.request("benchmark")
    ready = status_mb()
    detail = learner.execute(run_id)
    learner.close()
    vectors.close()
    engine.dispose()
    print(json.dumps({"ready_rss_mb": ready, "detail": detail}, default=str))


def status_mb() -> dict[str, float]:
    from benchmarks.million_http import status_mb as of

    return {k: round(v) for k, v in of(os.getpid()).items()}


def measure(args: argparse.Namespace, total: int, size: int) -> dict[str, Any]:
    reset(args.url, args.data_dir, args.work_dir, total, args.history, size)
    cmd = [sys.executable, "-m", "benchmarks.refresh_at_scale", "--child"]
    cmd += ["--url", args.url, "--data-dir", str(args.data_dir), "--work-dir", str(args.work_dir)]
    print(f"refresh over a window of {size:,} searches", flush=True)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    log = args.work_dir / f"refresh_{size}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        peak = Peak(proc.pid, limit_mb=args.limit_mb)
        out, _ = proc.communicate()
    memory = peak.stop()
    result: dict[str, Any] = {
        "size": size,
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        **memory,
    }
    if proc.returncode:
        result["failed"] = f"exit {proc.returncode} (killed above {args.limit_mb} MB?): see {log}"
        return result
    child = json.loads(out.strip().splitlines()[-1])
    detail = child["detail"] or {}
    train = detail.get("train") or {}
    return result | {
        "ready_rss_mb": child["ready_rss_mb"],
        "status": detail.get("status"),
        "seconds": detail.get("seconds"),
        "phase_seconds": detail.get("phase_seconds"),
        "window_searches": detail.get("window_searches"),
        "window_engaged": detail.get("window_engaged"),
        "replay_searches": detail.get("replay_searches"),
        "carried_holdout_searches": detail.get("carried_holdout_searches"),
        "holdout_searches": detail.get("holdout_searches"),
        "train_searches": train.get("train_searches"),
        "best_epoch": train.get("best_epoch"),
        "promoted": detail.get("promoted"),
        "accepted_types": detail.get("accepted_types"),
        "reason": detail.get("reason"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/refresh_bench")
    ap.add_argument("--data-dir", type=Path, default=Path("/work/bench-data"), help="44k build")
    ap.add_argument("--work-dir", type=Path, default=Path("/work/refresh-bench"), help="heads")
    ap.add_argument("--sizes", default="25000,100000,200000")
    ap.add_argument("--history", type=int, default=60_000, help="searches before every window")
    ap.add_argument("--known-items", type=int, default=20_000, help="known-item queries")
    ap.add_argument("--photos", type=int, default=1500, help="photo, and composed, queries")
    ap.add_argument("--skip-fill", action="store_true", help="reuse the logs already written")
    ap.add_argument("--limit-mb", type=float, default=5500, help="kill a refresh past this anon")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        refresh_child(args.url, args.data_dir, args.work_dir)
        return
    require_shared()
    sizes = [int(s) for s in args.sizes.split(",")]
    total = args.history + max(sizes)
    fill_path = args.work_dir / "fill.json"
    if not args.skip_fill:
        from storage.db import migrate

        fresh_database(args.url)
        migrate(args.url)
        t0 = time.perf_counter()
        served = serve_queries(args.data_dir, distinct_queries(args.known_items, args.photos))
        fill: dict[str, Any] = {
            "searches": total,
            "distinct_queries": {k: len(v) for k, v in served.items()},
            "serve_s": round(time.perf_counter() - t0, 1),
        }
        fill["write_s"] = round(write_logs(args.url, served, total), 1)
        fill["rows"] = table_sizes(args.url)
        fill_path.write_text(json.dumps(fill))
        print(f"fill: {fill}", flush=True)
    fill = json.loads(fill_path.read_text())
    total = fill["searches"]  # the sizes measured now may be smaller than those written for
    assert max(sizes) <= total - args.history, "more searches than were written"
    path = RESULTS / "refresh_at_scale.json"
    kept = json.loads(path.read_text())["runs"] if args.skip_fill and path.exists() else []
    result: dict[str, Any] = {
        "url": args.url.rsplit("@", 1)[-1],
        "history": args.history,
        "searches": total,
        "fill": fill,
        "runs": [r for r in kept if r["size"] not in sizes],  # the same logs' other sizes
    }
    for size in sizes:
        run = measure(args, total, size)
        print(json.dumps(run), flush=True)
        result["runs"] = sorted([*result["runs"], run], key=lambda r: r["size"])
        write_json("refresh_at_scale", result)  # after each run: a later one failing keeps it
    _print(result)
    print(f"wrote {write_json('refresh_at_scale', result)}")


def _print(result: dict[str, Any]) -> None:
    f = result["fill"]
    print(
        f"\n{result['searches']:,} searches logged ({f['rows']['impression_items']:,} shown "
        f"items, {f['rows']['feedback_events']:,} events; distinct queries "
        + ", ".join(f"{k} {v:,}" for k, v in f["distinct_queries"].items())
        + f"), written in {f['write_s']:.0f} s"
    )
    head = f"{'window':>8} {'engaged':>8} {'wall s':>7} {'refresh s':>9} {'peak RSS':>9} "
    print(head + f"{'anon':>7} {'promoted':>9} {'load':>10}")
    for r in result["runs"]:
        if "failed" in r:
            print(f"{r['size']:8,} failed: {r['failed']}; peak anon {r['peak_anon_mb']} MB")
            continue
        load = f"{r['load_1min'][0]:.1f}-{r['load_1min'][1]:.1f}"
        print(
            f"{r['window_searches']:8,} {r['window_engaged']:8,} {r['wall_s']:7.0f} "
            f"{r['seconds']:9.0f} {r['peak_rss_mb']:6,} MB {r['peak_anon_mb']:4,} MB "
            f"{str(r['promoted']):>9} {load:>10}"
        )
    print("phase seconds:")
    for r in result["runs"]:
        if "phase_seconds" in r:
            print(f"{r['size']:8,} " + ", ".join(f"{k} {v}" for k, v in r["phase_seconds"].items()))


if __name__ == "__main__":
    main()
