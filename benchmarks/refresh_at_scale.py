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
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from benchmarks.common import RESULTS, load_rows, require_shared, shopper_photos, write_json
from benchmarks.million_http import Peak

GRADES = {"click": 1, "add_to_cart": 2, "purchase": 3}
MIX = {"text": 0.8, "image": 0.1, "composed": 0.1}
K, DEEPER, ETA, DAYS = 20, 10, 1.0, 7
HOLDOUT_EVERY = 20  # one history search in this many was held out by an earlier refresh
MARKER = "previous-window"  # a registry row whose window_end starts the measured window


@dataclass
class Served:
    """One distinct query as searched once: what every logged search of it shows and logs."""

    kind: str
    text: str | None
    image_sha256: str | None
    query_type: str
    model_version: str
    ids: list[str]  # the top K + DEEPER, ranked
    scores: list[float]
    grades: list[int]  # the shopper's true grade of each
    vectors: tuple[Any, ...]  # storage.impressions.QueryVector, as the API logs them


# ---- fill -------------------------------------------------------------------------------------
def fresh_database(url: str) -> None:
    from storage.db import make_engine

    base, name = url.rsplit("/", 1)
    admin = make_engine(f"{base}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()


def distinct_queries(n_known: int, n_photos: int) -> dict[str, list[Any]]:
    """Per kind, the distinct queries with their true grades: (text, photo, grade of a row)."""
    from shoppers.grades import Relevance
    from shoppers.known_items import KnownItemGrades, make_known_item_queries
    from shoppers.phrasings import PHRASINGS
    from shoppers.queries import make_queries

    rows = load_rows()
    relevance = Relevance(rows)
    by_text: dict[str, dict[str, str]] = {}
    for i, phrasing in enumerate(sorted(PHRASINGS)):
        for q in make_queries(rows, {}, 20_000, seed=i, phrasings=phrasing):
            by_text.setdefault(q.text or "", q.target)
    needs = list(by_text.items())
    random.Random(1).shuffle(needs)
    ids, titles = [r["id"] for r in rows], [r["productDisplayName"] for r in rows]
    known = KnownItemGrades(ids, titles)
    items = {q.text: q for q in make_known_item_queries(ids, titles, n_known, seed=5)}
    texts = [(t, None, lambda t=t: relevance.grades(by_text[t])) for t, _ in needs]
    texts += [(t, None, lambda q=q: known.grades(q)) for t, q in items.items() if t not in by_text]
    photo_queries = make_queries(rows, shopper_photos(), n_photos, seed=9)
    out: dict[str, list[Any]] = {"text": texts, "image": [], "composed": []}
    for q in photo_queries:
        if q.kind in ("image", "composed"):
            grade = lambda t=q.target: relevance.grades(t)  # noqa: E731
            out[q.kind].append((q.text, q.photo, grade))
    return out


def serve_queries(data_dir: Path, queries: dict[str, list[Any]]) -> dict[str, list[Served]]:
    """Each distinct query encoded (texts in batches) and searched once."""
    from tqdm import tqdm

    from model.checkpoint import load_head
    from service.catalog.index import CatalogIndex
    from service.config import Settings
    from service.encoding.embedder import make_embedder
    from service.search.impressions import impression_of
    from service.search.searcher import ActiveHead, Searcher, SearchQuery
    from storage.artifacts import current
    from storage.keys import content_key

    settings = Settings(data_dir=data_dir)
    build = current(settings.index_dir)
    assert build is not None, f"no index in {settings.index_dir}"
    index = CatalogIndex.load(build)
    version = index.meta["head_version"]
    head, _ = load_head(data_dir / "heads" / version)
    embedder = make_embedder(settings)
    n_texts = sum(len(v) for v in queries.values())
    searcher = Searcher(
        embedder,
        index,
        ActiveHead(head, version),
        per_channel=settings.candidates_per_channel,
        query_cache=n_texts,
    )
    all_texts = sorted({t for qs in queries.values() for t, _, _ in qs if t})
    encoder = embedder.text_encoder
    for lo in tqdm(range(0, len(all_texts), 256), desc="encode texts", unit="batch"):
        batch = all_texts[lo : lo + 256]
        for t, vec in zip(batch, encoder.encode(batch), strict=True):
            searcher.text_cache.put(encoder.id, t, vec)
    row_of = {r["id"]: i for i, r in enumerate(load_rows())}
    out: dict[str, list[Served]] = {}
    for kind, qs in queries.items():
        served = out.setdefault(kind, [])
        for query_text, photo, grade_of in tqdm(qs, desc=f"search {kind}", unit="query"):
            data = photo.read_bytes() if photo else None
            sha = content_key(data) if data else None
            result = searcher.search(
                SearchQuery(text=query_text, image=data, image_sha256=sha, k=K + DEEPER)
            )
            if len(result.hits) < K:
                continue
            logged = impression_of(
                result=result,
                searcher=searcher,
                query_text=query_text,
                image_sha256=sha,
                filters=None,
                user_id=None,
                caller=None,
                k=K,
            )
            grades = grade_of()
            ids = [h.product.id for h in result.hits]
            served.append(
                Served(
                    kind,
                    query_text,
                    sha,
                    result.query_type,
                    result.model_version,
                    ids,
                    [h.score for h in result.hits],
                    [int(grades[row_of[p]]) for p in ids],
                    logged.vectors,
                )
            )
    searcher.close()
    return out


def write_logs(url: str, served: dict[str, list[Served]], total: int, seed: int = 3) -> float:
    """`total` searches evenly over the DAYS before now, with their events; returns seconds."""
    from tqdm import tqdm

    from model.position_bias import PositionBias, explore_deeper, explore_order
    from service.config import Settings
    from shoppers.simulator import reactions
    from storage.db import make_engine, session_factory, transaction
    from storage.feedback import EventIn, record_events
    from storage.impressions import ImpressionIn, ShownItem, add_impressions
    from storage.partitions import create_days

    settings = Settings()
    rng = random.Random(seed)
    kinds = list(MIX)
    cdfs = {}
    for kind in kinds:
        zipf = 1.0 / np.arange(1, len(served[kind]) + 1)
        cdfs[kind] = np.cumsum(zipf / zipf.sum())
    bias = PositionBias.prior()
    start, step = window_times(total)
    engine = make_engine(url)
    with engine.begin() as conn:
        create_days(conn, [(start + timedelta(d)).date() for d in range(DAYS + 2)])
    sessions = session_factory(engine)
    logged_vectors: set[tuple[str, str]] = set()
    t0 = time.perf_counter()
    for lo in tqdm(range(0, total, 2000), desc="write logs", unit="batch"):
        impressions, events = [], []
        for i in range(lo, min(lo + 2000, total)):
            kind = rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
            q = served[kind][int(np.searchsorted(cdfs[kind], rng.random()))]
            shown = list(range(K))
            explore = rng.random() < settings.explore_rate
            if explore:
                shown = explore_order(K, rng)
            elif rng.random() < settings.explore_deep_rate:
                shown = explore_deeper(shown, list(range(K, len(q.ids))), rng)
            sid, at = search_id(i), start + i * step
            vectors = tuple(v for v in q.vectors if (v.key, v.encoder) not in logged_vectors)
            logged_vectors.update((v.key, v.encoder) for v in vectors)
            impressions.append(
                ImpressionIn(
                    search_id=sid,
                    created_at=at,
                    query_text=q.text,
                    has_image=q.image_sha256 is not None,
                    image_sha256=q.image_sha256,
                    query_type=q.query_type,
                    filters=None,
                    user_id=f"u{rng.randrange(200_000)}",
                    model_version=q.model_version,
                    k=K,
                    latency_ms=10.0,
                    items=[
                        ShownItem(q.ids[r], q.scores[r], r + 1, bias.propensity(pos))
                        for pos, r in enumerate(shown, start=1)
                    ],
                    explore=explore,
                    vectors=vectors,
                )
            )
            for pos, types in reactions(rng, [q.grades[r] for r in shown], ETA):
                pid = q.ids[shown[pos - 1]]
                when = at + timedelta(seconds=5 * pos)
                events += [EventIn(sid, pid, t, when, event_id=f"{sid}-{pos}-{t}") for t in types]
        with transaction(sessions) as s:
            s.execute(text("SET LOCAL synchronous_commit = off"))
            add_impressions(session=s, impressions=impressions)
        with transaction(sessions) as s:
            s.execute(text("SET LOCAL synchronous_commit = off"))
            record_events(session=s, events=events, received_at=impressions[-1].created_at)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


def search_id(i: int) -> str:
    return f"s{i:09d}"


def window_times(total: int) -> tuple[datetime, timedelta]:
    """When the first search was logged, and the time between two, fixed by the fill's day."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    return start, (end - start) / total


def table_sizes(url: str) -> dict[str, Any]:
    from storage.db import make_engine
    from storage.partitions import LOGS

    engine = make_engine(url)
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in (*LOGS, "query_embeddings"):
            out[table] = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return out


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
