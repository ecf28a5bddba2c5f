"""The floor a search cannot beat: each frozen encoder's single-query forward time, measured in a
process that loads nothing but the encoders (same environment as the server), with the faster
of one thread and all cores.

It stays up beside the server, so that the latency benchmark can alternate blocks of HTTP
searches with blocks of bare encodes of the same queries: on this shared machine the speed of
both drifts by 20-30% within minutes, and a floor measured minutes apart from the searches it is
compared with measures the drift.

Protocol (one JSON line each way): the latency benchmark writes `["text"|"image"|"composed",
[i, ...]]` and reads the milliseconds of each query's encode (text and image summed for a
composed query); an empty line ends it. The first line it prints is `{"threads": n}`.
Usage: python -m benchmarks.encoder_floor QUERIES.json
(QUERIES.json: {"text": [str], "image": [photo path], "composed": [[str, photo path]]})
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import service  # noqa: F401  (sets the OpenMP policy before torch loads, as the server does)


def main() -> None:
    import torch
    from PIL import Image

    from service.config import Settings
    from service.runtime import make_embedder

    spec = json.loads(Path(sys.argv[1]).read_text())
    photos = {
        p: Image.open(p).convert("RGB") for p in spec["image"] + [p for _, p in spec["composed"]]
    }
    embedder = make_embedder(Settings())
    te, ie = embedder.text_encoder, embedder.image_encoder

    def encode(kind: str, i: int) -> float:
        t0 = time.perf_counter()
        if kind in ("text", "composed"):
            te.encode([spec["text"][i] if kind == "text" else spec["composed"][i][0]])
        if kind in ("image", "composed"):
            ie.encode([photos[spec["image"][i] if kind == "image" else spec["composed"][i][1]]])
        return (time.perf_counter() - t0) * 1000

    def median_ms(kind: str, n: int) -> float:
        return statistics.median(encode(kind, i % len(spec[kind])) for i in range(n))

    best, best_ms = 1, float("inf")
    for threads in sorted({1, torch.get_num_threads()}):  # the floor is the faster of the two
        torch.set_num_threads(threads)
        median_ms("text", 10)  # warm-up
        ms = median_ms("text", 50) + median_ms("image", 30)
        if ms < best_ms:
            best, best_ms = threads, ms
    torch.set_num_threads(best)
    print(json.dumps({"threads": best}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        kind, items = json.loads(line)
        print(json.dumps([encode(kind, i) for i in items]), flush=True)


if __name__ == "__main__":
    main()
