"""A million products through HTTP: the catalog made (benchmarks.million_catalog), ingested cold
by `fusionrank ingest`, served by `fusionrank serve` and searched over HTTP, then 10,000 new
products added by a second ingest, which updates the build in place.

Measured: the cold ingest's wall time, phases and peak RSS; the API process's RSS after start
and after the searches; text search p50/p99 through HTTP unfiltered, with a narrow filter (one
articleType for women: 11k rows at 1M, under the exact-filter limit) and a wide one (gender
alone: 38%), and photo search unfiltered, one client, the query cache off; recall@10 against
exact search of each vector channel a search walks (the served build loaded in this process
with CatalogIndex, as the server loads it, searched with the server's settings: through HTTP the
channels are fused, so their recall cannot be told apart there); and the update's phases,
changes, cache hits and peak RSS. Queries are synthetic shoppers' (shoppers.queries).

The cold ingest embeds nothing (every vector is cached by the catalog maker); the update embeds
only the new products, through the real encoders.
Usage: PYTHONPATH=. python -m benchmarks.million_http [--work-dir DIR] [--products 1000000]
       [--added 10000] [--queries 300] [--steps catalog,ingest,serve,recall,update]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CATALOG,
    RESULTS,
    ensure_index,
    load_rows,
    require_shared,
    shopper_photos,
    write_json,
)
from benchmarks.latency import sequential
from benchmarks.million_catalog import copy_encoders, load_source, make_catalog
from benchmarks.million_recall import measure_channels
from benchmarks.server import start_server
from service.config import Settings
from shoppers.queries import make_queries

FILTERS: dict[str, dict[str, str]] = {
    "narrow": {"articleType": "Flats", "gender": "Women"},
    "wide": {"gender": "Women"},
}
STEPS = ("catalog", "ingest", "serve", "recall", "update")


def main() -> None:
    args = parse_args()
    require_shared()
    ensure_index(args.source)
    data = args.work_dir / "data"
    name = f"million_http_{args.products}" if args.products != 1_000_000 else "million_http"
    path = RESULTS / f"{name}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result |= {"products": args.products, "added": args.added, "spread": args.spread}
    steps = args.steps.split(",")
    csv_path = args.work_dir / "catalog.csv"
    texts, photos = queries(args.queries)
    run = {
        "catalog": lambda: build_catalog(args, data),
        "ingest": lambda: run_ingest(csv_path, data, args.products, args.work_dir / "cold.log"),
        "http": lambda: serve(data, texts, photos),
        "recall": lambda: measure_channels(Settings(data_dir=data), texts, photos, FILTERS),
        "update": lambda: run_ingest(csv_path, data, None, args.work_dir / "update.log"),
    }
    for step, measure in run.items():
        if step in steps or (step == "http" and "serve" in steps):
            result[step] = measure()
            # saved after each step: a later one failing keeps what was measured
            write_json(name, {k: v for k, v in result.items() if k != "machine"})
    report(result)
    print(f"wrote {RESULTS / f'{name}.json'}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/work/million-data"))
    ap.add_argument("--source", type=Path, default=Path("/work/bench-data"), help="44k data dir")
    ap.add_argument("--products", type=int, default=1_000_000)
    ap.add_argument("--added", type=int, default=10_000, help="products the update adds")
    ap.add_argument("--queries", type=int, default=300, help="per kind")
    ap.add_argument("--spread", type=float, default=0.95, help="mean cosine of a copy to its row")
    ap.add_argument("--steps", default=",".join(STEPS))
    return ap.parse_args()


def build_catalog(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """A fresh work dir: the catalog of products + added rows, the first `products` cached."""
    shutil.rmtree(args.work_dir / "images", ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    t0 = time.perf_counter()
    source = load_source(CATALOG, args.source / "index")
    copy_encoders(args.source, data)
    counts = make_catalog(
        source,
        args.work_dir,
        args.products + args.added,
        cache_dir=Settings(data_dir=data).cache_dir,
        cached=args.products,
        spread=args.spread,
    )
    return counts | {"seconds": round(time.perf_counter() - t0, 1)}


class Peak:
    """A process's peak resident memory (MB), sampled from /proc every 0.2 s: all of it, and
    its anonymous part (without file pages mapped from disk, which the kernel can drop)."""

    def __init__(self, pid: int, limit_mb: float = 19_000) -> None:
        self.pid, self.rss, self.anon, self.limit = pid, 0.0, 0.0, limit_mb
        self.timeline: list[tuple[float, int]] = []  # (seconds, RSS MB) every 10 s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError):
                now = status_mb(self.pid)
                rss, anon = now.get("VmRSS", 0.0), now.get("RssAnon", 0.0)  # none once exited
                self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)
                elapsed = time.monotonic() - started
                if elapsed >= 10 * len(self.timeline):
                    self.timeline.append((round(elapsed), round(rss)))
                # the machine is shared: stop before it hurts others (mapped file pages, which
                # the kernel can drop, do not count)
                if anon > self.limit:
                    os.kill(self.pid, 9)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": round(self.rss),
            "peak_anon_mb": round(self.anon),
            "rss_timeline": self.timeline,
        }


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def run_ingest(csv_path: Path, data: Path, limit: int | None, log: Path) -> dict[str, Any]:
    """`fusionrank ingest` in a process of its own: its report, wall time and peak memory."""
    cmd = [sys.executable, "-m", "service.cli", "ingest", str(csv_path), "--data-dir", str(data)]
    cmd += ["--limit", str(limit)] if limit else []
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        peak = Peak(proc.pid)
        out, _ = proc.communicate()
    memory = peak.stop()
    if proc.returncode:
        raise SystemExit(f"ingest failed ({proc.returncode}): see {log}")
    report = json.loads(out[out.index("\n{") :])
    return {"wall_s": round(time.perf_counter() - t0, 1), **memory, "report": report}


def queries(n: int) -> tuple[list[str], list[Path]]:
    """n synthetic shoppers' text queries and n photo queries (shoppers.queries)."""
    qs = make_queries(load_rows(), shopper_photos(), n, seed=23)
    texts = [q.text for q in qs if q.kind == "text" and q.text][:n]
    photos = [q.photo for q in qs if q.kind == "image" and q.photo][:n]
    return texts, photos


@contextlib.contextmanager
def server(data: Path) -> Iterator[tuple[int, str]]:
    """`fusionrank serve` on the data dir: every search encodes (no query cache), no learner."""
    env = {"FUSIONRANK_QUERY_CACHE": "0", "FUSIONRANK_LEARNER_IN_PROCESS": "false"}
    proc, url = start_server(data, env=env, timeout=1200)
    try:
        yield proc.pid, url
    finally:
        proc.terminate()
        proc.wait(120)


def serve(data: Path, texts: list[str], photos: list[Path]) -> dict[str, Any]:
    """Search p50/p99 through HTTP per case, one client, and the server's RSS."""
    bodies: dict[str, list[dict[str, Any]]] = {"text": [{"k": 20, "query": t} for t in texts]}
    for name, f in FILTERS.items():
        bodies[f"text {name}"] = [{"k": 20, "query": t, "filters": f} for t in texts]
    bodies["image"] = [
        {"k": 20, "image": base64.b64encode(p.read_bytes()).decode()} for p in photos
    ]
    encoded = {case: [json.dumps(b).encode() for b in bs] for case, bs in bodies.items()}
    t0 = time.perf_counter()
    with server(data) as (pid, url):
        out: dict[str, Any] = {"start_s": round(time.perf_counter() - t0, 1)}
        out["rss_after_start_mb"] = {k: round(v) for k, v in status_mb(pid).items()}
        sequential(url, encoded["text"][:30] + encoded["image"][:10])  # warm-up
        for case, requests in encoded.items():
            load = os.getloadavg()[0]
            out[case] = sequential(url, requests) | {"load_1min": load}
            print(f"{case}: {out[case]}", flush=True)
        out["rss_after_run_mb"] = {k: round(v) for k, v in status_mb(pid).items()}
    return out


def report(result: dict[str, Any]) -> None:
    """The tables of what was measured."""
    print(f"\n{result['products']:,} products (copies at cosine {result['spread']} to a real one)")
    for step in ("ingest", "update"):
        if step in result:
            r = result[step]
            rep = r["report"]
            print(
                f"{step}: {rep.get('mode')} {rep.get('changes') or ''} in {r['wall_s']} s wall, "
                f"peak RSS {r['peak_rss_mb']} MB ({r['peak_anon_mb']} MB anonymous); "
                f"cache hits text {rep['text_cache_hits']:,} image {rep['image_cache_hits']:,} "
                f"of {rep['products']:,}"
            )
            print("  seconds: " + ", ".join(f"{k} {v}" for k, v in rep["seconds"].items()))
    if "http" in result:
        h = result["http"]
        print(f"\nthrough HTTP, one client, k=20 (server ready in {h['start_s']} s)")
        print(f"{'search':14} {'p50 ms':>8} {'p99 ms':>8} {'server search':>14} {'load':>5}")
        for case in ("text", *(f"text {f}" for f in FILTERS), "image"):
            c = h[case]
            print(
                f"{case:14} {c['p50']:8.2f} {c['p99']:8.2f} {c['server_search']:14.2f} "
                f"{c['load_1min']:5.2f}"
            )
        for when in ("after_start", "after_run"):
            m = h[f"rss_{when}_mb"]
            print(f"API RSS {when}: {m['VmRSS']} MB ({m['RssAnon']} MB anonymous)")
    if "recall" in result:
        r = result["recall"]
        print(f"\nvector channels in process: recall@10 / p50 / p99 ms; rows {r['rows']}")
        names = list(r["rows"])
        print(f"{'channel':15}" + "".join(f"{n:>24}" for n in names))
        for channel, by in r.items():
            if channel != "rows":
                cells = (
                    f"{by[n]['recall@10']:.3f} / {by[n]['p50_ms']:.2f} / {by[n]['p99_ms']:.2f}"
                    for n in names
                )
                print(f"{channel:15}" + "".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
