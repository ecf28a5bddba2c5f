"""Latency and throughput through HTTP against a real `fusionrank serve`, side by side with the
bare encoder forward times of the same queries, alternated with the searches in blocks of 20
(benchmarks.encoder_floor), and with the round trips of the same requests to an app that does
nothing (benchmarks.http_floor); plus ingest throughput and service RSS.

Requests go over keep-alive connections with the standard library's http.client: httpx's
pure-Python response parsing added 0.8-1.6 ms per search, measured side by side, which is the
client's cost, not the service's. The server's own `Server-Timing` header splits each search
into encoder, search and route time. Every timing is the median over --repeats runs (default 3).
Queries are synthetic.

Each encoder backend (--backends, default onnx then torch) gets its own server on the same index,
one after the other in the same run; the floor is PyTorch fp32 eager for both.

--busy-cores N runs N CPU-bound processes beside the server and the floor while they are
measured: a `fusionrank learner` refreshing on the same machine, or a noisy neighbour, takes a
core away like this (results in latency_busy.json, without the ingest part).
Usage: python -m benchmarks.latency [--data-dir DIR] [--requests N] [--repeats 3] [--busy-cores N]
                                   [--backends onnx,torch]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import (
    CATALOG,
    DEFAULT_DATA_DIR,
    ensure_index,
    load_rows,
    print_targets,
    require_shared,
    shopper_photos,
    write_json,
)
from benchmarks.latency_report import Measured, print_latencies, print_rest
from benchmarks.server import Floor, rss_mb, server_timing, start_http_floor, start_server
from shoppers.queries import GradedQuery, make_queries


def pct(ts: list[float]) -> dict[str, float]:
    a = np.array(ts) * 1000
    return {
        "p50": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
    }


JSON = {"content-type": "application/json"}


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, dict[str, float]]:
    """One search over a keep-alive connection: status and the server's timings (ms)."""
    conn.request("POST", "/v1/search", body=body, headers=JSON)
    r = conn.getresponse()
    r.read()
    return r.status, server_timing(r.getheader("server-timing"))


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def sequential(
    url: str,
    bodies: list[bytes],
    floor: tuple[Floor, str] | None = None,
    http_floor: str | None = None,
    block: int = 20,
) -> dict[str, float]:
    """Client round-trip percentiles and the medians of the server's own timings; with `floor`
    (and the queries' kind), blocks of `block` searches alternate with the bare encodes of the
    same queries, whose median at the faster thread count is `floor_ms`, and with `http_floor`
    (benchmarks.http_floor's URL) with the same requests sent there, whose median round trip is
    `http_ms`."""
    conn = connect(url)
    bare_http = connect(http_floor) if http_floor else None
    rtt, server, http = [], [], []
    bare: dict[int, list[float]] = {}
    for start in range(0, len(bodies), block):
        for body in bodies[start : start + block]:
            t0 = time.perf_counter()
            status, timing = post(conn, body)
            rtt.append(time.perf_counter() - t0)
            if status != 200:
                raise SystemExit(f"search failed with {status}")
            server.append(timing)
        if floor is not None:
            proc, kind = floor
            for n, ms in proc.times(
                kind, list(range(start, min(start + block, len(bodies))))
            ).items():
                bare.setdefault(n, []).extend(ms)
        if bare_http is not None:
            for body in bodies[start : start + block]:
                t0 = time.perf_counter()
                post(bare_http, body)
                http.append((time.perf_counter() - t0) * 1000)
    conn.close()
    out = pct(rtt)
    for key in ("encode", "search", "route"):
        out[f"server_{key}"] = float(np.median([t[key] for t in server]))
    if bare:
        medians = {n: float(np.median(ms)) for n, ms in bare.items()}
        best = min(medians, key=medians.__getitem__)
        out["floor_threads"], out["floor_ms"] = best, medians[best]
        out |= {f"floor_ms_{n}_threads": ms for n, ms in medians.items()}
    if bare_http is not None:
        bare_http.close()
        out["http_ms"] = float(np.median(http))
    return out


def throughput(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    done, failed = [0], [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn = connect(url)
        i = offset
        while time.monotonic() < stop:
            status, _ = post(conn, bodies[i % len(bodies)])
            with lock:
                done[0] += 1
                failed[0] += status != 200
            i += concurrency
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": done[0] / (time.perf_counter() - t0), "failed": failed[0]}


def ingest_throughput(limit: int, backend: str, encoders: Path) -> dict[str, float]:
    """Products/s for a cold ingest (empty embedding cache) and a cached re-ingest of the same
    products. The encoders' graphs come from `encoders`: their export is once per deployment."""
    tmp = Path(tempfile.mkdtemp(prefix="fr-ingest-"))
    out = {}
    env = {
        **os.environ,
        "FUSIONRANK_ENCODER_BACKEND": backend,
        "FUSIONRANK_ENCODER_DIR": str(encoders),
    }
    try:
        for label in ("cold", "cached"):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "service.cli",
                    "ingest",
                    str(CATALOG),
                    "--limit",
                    str(limit),
                    "--data-dir",
                    str(tmp),
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            out[f"{label}_products_per_s"] = limit / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def phone_photo(photo: Path) -> str:
    """A shopper's photo as a phone takes it: 4000x3000, sensor-noisy, JPEG q90, base64."""
    img = Image.open(photo).convert("RGB").resize((3000, 4000), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).integers(-6, 7, (4000, 3000, 3))
    arr = (np.asarray(img, np.int16) + noise).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def measure(
    url: str,
    bodies: dict[str, list[bytes]],
    floor: Floor,
    http_floor: str,
    repeats: int,
    seconds: float,
) -> dict[str, list[dict[str, float]]]:
    """Each query type's latencies (beside the floors), then throughput, `repeats` times over."""
    runs: dict[str, list[dict[str, float]]] = {}
    sequential(url, bodies["text"][:20] + bodies["image"][:10])  # warm-up
    for _ in range(repeats):
        for kind in ("text", "image", "composed"):
            runs.setdefault(kind, []).append(
                sequential(url, bodies[kind], (floor, kind), http_floor)
            )
        runs.setdefault("photo12mp", []).append(sequential(url, bodies["photo12mp"] * 2))
        for c in (1, 4, 8):
            runs.setdefault(f"c{c}", []).append(throughput(url, bodies["text"], c, seconds))
    return runs


def asked_again(
    data_dir: Path, bodies: dict[str, list[bytes]], repeats: int, backend: str
) -> dict[str, Any]:
    """Searches asked before, on a server with the default query cache (service.search.query_cache):
    their vectors are kept, so they skip the encoders. Each query is asked once first."""
    proc, url = start_server(data_dir, env={"FUSIONRANK_ENCODER_BACKEND": backend})
    try:
        out = {}
        for kind in ("text", "image", "photo12mp"):
            sequential(url, bodies[kind])
            out[f"{kind} again"] = median_of(
                [sequential(url, bodies[kind]) for _ in range(repeats)]
            )
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--requests", type=int, default=200, help="sequential requests per query type")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10, help="duration of each throughput run")
    ap.add_argument(
        "--ingest-limit", type=int, default=3000, help="products for ingest throughput (0: skip it)"
    )
    ap.add_argument("--busy-cores", type=int, default=0, help="CPU-bound processes beside it")
    ap.add_argument(
        "--backends", default="onnx,torch", help="encoder backends, each on its own server"
    )
    return ap.parse_args()


def request_bodies(queries: list[GradedQuery]) -> dict[str, list[bytes]]:
    """Each query type's search requests, plus 12 MP phone photos of the first 20 photos."""
    photos = list(dict.fromkeys(q.photo for q in queries if q.photo))
    b64 = {p: base64.b64encode(p.read_bytes()).decode() for p in photos}
    bodies: dict[str, list[bytes]] = {"text": [], "image": [], "composed": []}
    for q in queries:
        body: dict[str, object] = {"k": 20}
        if q.text:
            body["query"] = q.text
        if q.photo:
            body["image"] = b64[q.photo]
        bodies[q.kind].append(json.dumps(body).encode())
    # what shoppers really upload: a 12 MP phone photo (4000x3000 JPEG, ~1.4 MB)
    bodies["photo12mp"] = [
        json.dumps({"k": 20, "image": phone_photo(p)}).encode() for p in photos[:20]
    ]
    return bodies


def run_servers(
    args: argparse.Namespace,
    queries: list[GradedQuery],
    bodies: dict[str, list[bytes]],
    backend: str,
) -> Measured:
    """The server, the encoder floor and the HTTP floor side by side (with --busy-cores busy
    processes beside them), then the searches asked again on a server with a query cache."""
    with contextlib.ExitStack() as stack:
        # before the floor picks its thread count: it must pick under the same load
        for _ in range(args.busy_cores):
            stack.callback(subprocess.Popen([sys.executable, "-c", "while True: pass"]).kill)
        floor = Floor(
            {
                "text": [q.text for q in queries if q.kind == "text"],
                "image": [str(q.photo) for q in queries if q.kind == "image"],
                "composed": [[q.text, str(q.photo)] for q in queries if q.kind == "composed"],
            }
        )
        stack.callback(floor.close)
        # every search encodes: the targets are about the encoder path (see asked_again)
        proc, url = start_server(
            args.data_dir,
            env={"FUSIONRANK_QUERY_CACHE": "0", "FUSIONRANK_ENCODER_BACKEND": backend},
        )
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        rss_idle = rss_mb(proc.pid)
        # the HTTP floor answers with a real search's bytes
        with contextlib.closing(connect(url)) as conn:
            conn.request("POST", "/v1/search", bodies["text"][0], JSON)
            sample = conn.getresponse().read()
        bare_http, http_url, body_file = start_http_floor(sample)
        stack.callback(body_file.unlink)
        stack.callback(bare_http.wait, 30)
        stack.callback(bare_http.terminate)
        runs = measure(url, bodies, floor, http_url, args.repeats, args.seconds)
        rss_loaded = rss_mb(proc.pid)
        res = {k: median_of(v) for k, v in runs.items()}
        res |= asked_again(args.data_dir, bodies, args.repeats, backend)
    return Measured(res, rss_idle, rss_loaded, floor.threads)


def main() -> None:
    args = parse_args()
    require_shared()
    ensure_index(args.data_dir)
    queries = make_queries(load_rows(), shopper_photos(), args.requests, seed=11)
    bodies = request_bodies(queries)
    backends = args.backends.split(",")
    measured = {b: run_servers(args, queries, bodies, b) for b in backends}
    ingest = {
        b: ingest_throughput(args.ingest_limit, b, args.data_dir / "encoders")
        for b in backends
        if args.ingest_limit and not args.busy_cores
    }
    for b, m in measured.items():
        print_latencies(m.results, args.repeats, args.busy_cores, b)
        print_rest(m, ingest.get(b, {}), args.ingest_limit)
    res = measured[backends[0]].results
    targets = {
        "text p50 <= 1.0x PyTorch encoder": res["text"]["p50"] <= res["text"]["floor_ms"],
        "image p50 <= 1.0x PyTorch encoder": res["image"]["p50"] <= res["image"]["floor_ms"],
    }
    if "torch" in measured and backends[0] != "torch":
        was, now = measured["torch"], measured[backends[0]]
        targets["4 clients >= 2.5x torch's req/s"] = (
            now.results["c4"]["rps"] >= 2.5 * was.results["c4"]["rps"]
        )
        targets["RSS no higher than torch's"] = now.rss_loaded <= was.rss_loaded
        if ingest:
            targets["cold ingest >= 3x torch's products/s"] = (
                ingest[backends[0]]["cold_products_per_s"]
                >= 3 * ingest["torch"]["cold_products_per_s"]
            )
    print_targets(targets)
    path = write_json(
        "latency_busy" if args.busy_cores else "latency",
        {
            b: {
                "results": m.results,
                "ingest": ingest.get(b, {}),
                "rss_mb": {"after_start": m.rss_idle, "after_run": m.rss_loaded},
                "floor_threads": m.floor_threads,
            }
            for b, m in measured.items()
        }
        | {"targets": targets, "repeats": args.repeats, "busy_cores": args.busy_cores},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
