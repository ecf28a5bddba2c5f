"""How much a single text encode depends on what ran just before it, in a process that loads
nothing but the encoders (like benchmarks.encoder_floor).

The latency benchmark's floor encodes back to back; a server's encodes are separated by
retrieval, JSON and HTTP. This measures the same queries after each kind of gap, interleaved
query by query so that the machine's drift hits every column alike: nothing between two encodes,
a 4 ms pause (sleeping, or spinning on the CPU), a pass over 64 MB of memory, a 15 ms pause.
Each measured encode follows an encode of the same query, then the gap.
Usage: python -m benchmarks.encoder_warmth [--queries 200] [--repeats 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(encode: Callable[[list[str]], object], texts: list[str], repeats: int) -> dict:
    """Per gap, the ms of each encode that followed it (after an encode of the same text)."""
    import numpy as np

    junk = np.random.default_rng(0).random(64 * 1024 * 1024 // 8)
    gaps: dict[str, Callable[[], object]] = {
        "back to back": lambda: None,
        "sleep 4 ms": lambda: time.sleep(0.004),
        "spin 4 ms": lambda: _spin(0.004),
        "read 64 MB": junk.sum,
        "sleep 15 ms": lambda: time.sleep(0.015),
    }
    times: dict[str, list[float]] = {g: [] for g in gaps}
    for _ in range(10):
        encode(["warm up"])
    for _ in range(repeats):
        for text in texts:
            for name, gap in gaps.items():
                encode([text])
                gap()
                t0 = time.perf_counter()
                encode([text])
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--queries", type=int, default=200, help="text queries (synthetic)")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()

    import torch

    from benchmarks.common import load_rows, require_shared, shopper_photos, write_json
    from service.config import Settings
    from service.encoding.embedder import make_embedder
    from shoppers.queries import make_queries

    require_shared()
    settings = Settings()
    encoder = make_embedder(settings).text_encoder
    queries = make_queries(load_rows(), shopper_photos(), args.queries, seed=11)
    texts = [q.text for q in queries if q.text][: args.queries]
    with torch.inference_mode():
        times = measure(encoder.encode, texts, args.repeats)

    base = statistics.median(times["back to back"])
    backend = settings.encoder_backend
    print(f"\nsingle text encodes on {backend} ({encoder.id})")
    print(f"{'before the encode':20} {'p50 ms':>8} {'vs back to back':>16} {'n':>6}")
    table = {}
    for name, ts in times.items():
        p50 = statistics.median(ts)
        table[name] = {"p50_ms": p50, "ratio": p50 / base, "n": len(ts)}
        print(f"{name:20} {p50:8.2f} {p50 / base:15.2f}x {len(ts):6}")
    path = write_json("encoder_warmth", {"text": table, "backend": backend})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
