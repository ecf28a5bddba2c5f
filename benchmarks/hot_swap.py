"""Hot swap under load: a real `fusionrank serve` on the full catalog, 4 concurrent shoppers
searching by text, and the active head switched back and forth through
POST /v1/models/{version}/activate every 2 s. Reports failed requests and p50/p99 in steady state
against p99 of the requests that overlapped a swap (issued within 1 s after one). Target: zero
failures, p99 during swaps <= 1.5x steady state.
Usage: python -m benchmarks.hot_swap [--data-dir DIR] [--seconds 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    ensure_index,
    fresh_database,
    load_rows,
    print_targets,
    shopper_photos,
    write_json,
)
from benchmarks.server import start_server
from learner.child import child_head
from model.checkpoint import load_head, save_head
from service.catalog.index import CatalogIndex
from shoppers.queries import make_queries
from storage.artifacts import current, read_manifest
from storage.db import make_engine, session_factory, transaction
from storage.models import VersionStatus
from storage.registry import VersionIn, register_version


def second_head(data_dir: Path, url: str, boot: str) -> str:
    """A compatible head that scores differently (a small non-zero residual), registered."""
    heads = data_dir / "heads"
    parent, _ = load_head(heads / boot)
    build = current(data_dir / "index")
    assert build is not None
    child = child_head(parent, CatalogIndex.load(build), rank=0)
    with torch.no_grad():
        child.interaction.diag.add_(0.05)  # type: ignore[union-attr]
    version = save_head(heads, child, {"parent": boot, "kind": "benchmark"})
    engine = make_engine(url)
    with transaction(session_factory(engine)) as s:
        sha = read_manifest(heads / version)["files"]["head.safetensors"]
        register_version(
            session=s,
            v=VersionIn(version, boot, VersionStatus.PROMOTED, sha, reason="hot-swap bench"),
        )
    engine.dispose()
    return version


Record = tuple[float, float, bool]  # (start, latency, ok)


def load_and_swap(
    url: str, texts: list[str], versions: list[str], clients: int, seconds: float
) -> tuple[list[Record], list[float]]:
    """`clients` text shoppers for `seconds`; after a steady quarter, the active head switches
    between `versions` every 2 s. Returns every request and when each swap was asked for."""
    records: list[Record] = []
    swaps: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def shopper(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            n = i
            while time.monotonic() < stop:
                t0 = time.monotonic()
                r = c.post("/v1/search", json={"query": texts[n % len(texts)], "k": 20})
                with lock:
                    records.append((t0, time.monotonic() - t0, r.status_code == 200))
                n += clients

    threads = [threading.Thread(target=shopper, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds / 4)  # steady state first
    with httpx.Client(base_url=url, timeout=60) as admin:
        while time.monotonic() < stop - 2:
            swaps.append(time.monotonic())
            r = admin.post(f"/v1/models/{versions[len(swaps) % 2 - 1]}/activate")
            assert r.status_code == 200, r.text
            time.sleep(2)
    for t in threads:
        t.join()
    return records, swaps


def summarise(records: list[Record], swaps: list[float]) -> tuple[dict[str, float], int]:
    """Steady-state latencies (before the first swap) against those issued within 1 s of one;
    also how many requests were steady."""
    first_swap = swaps[0] if swaps else float("inf")
    steady = [lat for t0, lat, _ in records if t0 < first_swap - 0.5]
    during = [lat for t0, lat, _ in records if any(0 <= t0 - s <= 1.0 for s in swaps)]

    def p(xs: list[float], q: float) -> float:
        return float(np.percentile(np.array(xs) * 1000, q)) if xs else float("nan")

    res = {
        "requests": len(records),
        "failed": sum(not ok for *_, ok in records),
        "swaps": len(swaps),
        "steady_p50_ms": p(steady, 50),
        "steady_p99_ms": p(steady, 99),
        "swap_p50_ms": p(during, 50),
        "swap_p99_ms": p(during, 99),
        "swap_requests": len(during),
    }
    return res, len(steady)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    ensure_index(args.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="fr-swap-"))
    db_url = f"sqlite:///{tmp / 'fusionrank.db'}"
    boot = fresh_database(args.data_dir, tmp / "fusionrank.db")
    other = second_head(args.data_dir, db_url, boot)
    proc, url = start_server(
        args.data_dir,
        # every search encodes (the shoppers cycle through 300 queries, which a cache would keep)
        env={
            "FUSIONRANK_DATABASE_URL": db_url,
            "FUSIONRANK_LEARNER_IN_PROCESS": "false",
            "FUSIONRANK_QUERY_CACHE": "0",
        },
    )
    queries = make_queries(load_rows(), shopper_photos(), 300, seed=5)
    texts = [q.text for q in queries if q.kind == "text" and q.text]
    try:
        records, swaps = load_and_swap(url, texts, [other, boot], args.clients, args.seconds)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    res, steady = summarise(records, swaps)
    print(f"\nhot swap under load ({args.clients} clients, text search, {len(swaps)} swaps)")
    print(f"{'':10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    during = int(res["swap_requests"])
    print(f"{'steady':10} {steady:9d} {res['steady_p50_ms']:8.2f} {res['steady_p99_ms']:8.2f}")
    print(f"{'swapping':10} {during:9d} {res['swap_p50_ms']:8.2f} {res['swap_p99_ms']:8.2f}")
    print(f"failed requests: {res['failed']} of {len(records)}")
    targets = {
        "zero failed requests": res["failed"] == 0,
        "p99 during swaps <= 1.5x steady": res["swap_p99_ms"] <= 1.5 * res["steady_p99_ms"],
    }
    print_targets(targets)
    print(f"wrote {write_json('hot_swap', {'results': res, 'targets': targets})}")


if __name__ == "__main__":
    main()
