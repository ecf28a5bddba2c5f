"""Does the thread machinery still earn its keep on ONNX Runtime? Single queries on the fashion
catalog's titles and photos, through the service's own ONNX encoders, side by side in one run
(medians over alternating blocks):

- threads: a lone query on a session of 1 thread and of every core (what the per-search thread
  choice chose between on PyTorch);
- composed: a text and a photo encoded one after the other, or beside each other on two threads
  (what the side pool did);
- concurrency: two clients encoding text at once, on one shared session of every core or on
  sessions of one thread each (what one-thread-per-search under load did);
- first run: a new session's first query against its later ones (what the per-count warm-up hid).

Usage: python -m benchmarks.encode_threads [--queries 60] [--blocks 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from PIL import Image

from benchmarks.common import load_rows, require_shared, shopper_photos, write_json
from service.config import Settings
from service.encoding import export, onnx


def _ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _both(te: onnx.OnnxTextEncoder, ie: onnx.OnnxImageEncoder, t: str, p: Image.Image) -> None:
    te.encode([t])
    ie.encode([p])


def measure(
    tg: Path, ig: Path, size: int, titles: list[str], photos: list[Image.Image], blocks: int
) -> dict[str, float]:
    """Median ms of each case over `blocks` passes of the queries, the cases interleaved."""
    cores = os.cpu_count() or 1
    text = {n: onnx.OnnxTextEncoder(tg, "t", threads=n) for n in (1, cores)}
    image = {n: onnx.OnnxImageEncoder(ig, "i", size, threads=n) for n in (1, cores)}
    fresh_text = onnx.OnnxTextEncoder(tg, "t", threads=cores)
    fresh_image = onnx.OnnxImageEncoder(ig, "i", size, threads=cores)
    first = {
        "text": _ms(lambda: fresh_text.encode(titles[:1])),
        "image": _ms(lambda: fresh_image.encode(photos[:1])),
    }
    for n in (1, cores):
        text[n].encode(titles[:1])
        image[n].encode(photos[:1])
    one_each = [text[1], onnx.OnnxTextEncoder(tg, "t", threads=1)]
    shared = [text[cores], text[cores]]
    beside, clients = ThreadPoolExecutor(1), ThreadPoolExecutor(2)
    times: dict[str, list[float]] = {}

    def record(name: str, fn: Callable[[], object]) -> None:
        times.setdefault(name, []).append(_ms(fn))

    def side_by_side(t: str, p: Image.Image) -> None:
        pending = beside.submit(text[cores].encode, [t])
        image[cores].encode([p])
        pending.result()

    def two_clients(encoders: list[onnx.OnnxTextEncoder], i: int) -> None:
        """Both clients' encodes, started together; done when both are."""
        start = threading.Barrier(2)

        def run(k: int) -> None:
            start.wait()
            encoders[k].encode([titles[(i + k) % len(titles)]])

        list(clients.map(run, (0, 1)))

    for _ in range(blocks):
        for i, (t, p) in enumerate(zip(titles, photos, strict=False)):
            for n in (1, cores):
                record(f"text, {n} thread(s)", partial(text[n].encode, [t]))
                record(f"image, {n} thread(s)", partial(image[n].encode, [p]))
            both = partial(_both, text[cores], image[cores], t, p)
            record("composed, one after the other", both)
            record("composed, beside each other", partial(side_by_side, t, p))
            record("2 clients, one shared session", partial(two_clients, shared, i))
            record("2 clients, 1-thread sessions", partial(two_clients, one_each, i))
    beside.shutdown()
    clients.shutdown()
    result = {name: round(statistics.median(ms), 3) for name, ms in times.items()}
    return result | {f"first query of a new {k} session": round(v, 1) for k, v in first.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--blocks", type=int, default=5)
    args = ap.parse_args()
    require_shared()
    titles = [export.short_query(r["productDisplayName"]) for r in load_rows()[: args.queries]]
    photos = [Image.open(p).convert("RGB") for p in list(shopper_photos().values())[: args.queries]]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        tg, ig = export.text_graph(settings)[0], export.image_graph(settings)[0]
        result = measure(tg, ig, settings.image_size, titles, photos, args.blocks)
    cores = os.cpu_count() or 1
    print(f"\nONNX Runtime encoders, {cores} cores, {args.queries} queries x {args.blocks} blocks")
    print(f"{'case':<42} {'median ms':>10}")
    for name, ms in result.items():
        print(f"{name:<42} {ms:>10.2f}")
    print(f"wrote {write_json('encode_threads', {'cores': cores, 'ms': result})}")


if __name__ == "__main__":
    main()
