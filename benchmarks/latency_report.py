"""What benchmarks.latency prints: per encoder backend, the latency table beside the floors, then
throughput, ingest and memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Measured:
    results: dict[str, dict[str, float]]
    rss_idle: float
    rss_loaded: float
    floor_threads: list[int]


def print_latencies(
    res: dict[str, dict[str, float]], repeats: int, busy_cores: int, backend: str
) -> None:
    busy = f", {busy_cores} core(s) kept busy beside it" if busy_cores else ""
    print(
        f"\n{backend} encoders: latency through HTTP, 44k products, median of {repeats} runs "
        f"(ms){busy}"
    )
    print(
        f"{'search':15} {'p50':>7} {'p95':>7} {'p99':>7} {'encoder':>8} {'p50/enc':>8}"
        f" {'http':>6} {'rest':>6}   server: {'encode':>7} {'search':>7} {'route':>7}"
    )
    again = ("text again", "image again", "photo12mp again")
    for kind in ("text", "image", "composed", "photo12mp", *again):
        r = res[kind]
        bare = r.get("floor_ms")
        vs = f"{bare:8.2f} {r['p50'] / bare:8.2f}" if bare else f"{'':8} {'':8}"
        http = (
            f"{r['http_ms']:6.2f} {r['p50'] - bare - r['http_ms']:6.2f}"
            if bare and "http_ms" in r
            else f"{'':6} {'':6}"
        )
        print(
            f"{kind:15} {r['p50']:7.2f} {r['p95']:7.2f} {r['p99']:7.2f} {vs} {http}"
            f"           {r['server_encode']:7.2f} {r['server_search']:7.2f}"
            f" {r['server_route']:7.2f}"
        )
    print(
        "(encoder: the bare encoders' median on the same queries, in their own process, at the "
        "faster of 1 and all threads\n (measured in every block), on PyTorch fp32 eager, "
        "alternated with the searches "
        "in blocks of 20; http: the "
        "same requests' round trip to a bare uvicorn app that does no work and answers with a "
        "search's bytes\n (benchmarks.http_floor), alternated likewise; rest = p50 - encoder - "
        "http, what the service itself adds;\n photo12mp: image search with a 12 MP phone photo; "
        "server columns are medians;\n again: the same queries asked a second time, on a "
        "server with the default query cache, which skips their encoders)"
    )


def print_rest(m: Measured, ingest: dict[str, float], ingest_limit: int) -> None:
    """Throughput, ingest and memory."""
    print(f"\n{'concurrency':12} {'req/s':>8} {'failed':>7}   (text search, no query cache)")
    for c in (1, 4, 8):
        r = m.results[f"c{c}"]
        print(f"{c:<12} {r['rps']:8.1f} {int(r['failed']):7}")
    if ingest:
        print(
            f"\ningest ({ingest_limit} products): cold {ingest['cold_products_per_s']:.0f} "
            f"products/s, cached {ingest['cached_products_per_s']:.0f} products/s"
        )
    print(f"service RSS: {m.rss_idle:.0f} MB after start, {m.rss_loaded:.0f} MB after the run")
