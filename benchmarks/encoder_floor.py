"""The floor a search cannot beat: each frozen encoder's single-query forward time, measured in a
process that loads nothing but the encoders (same environment as the server), on one thread and
on every core, in every block: the faster one is the floor. (Picking the thread count once at
start-up measured the machine of that minute: on 2026-12-02 it picked one thread, and the
server's own image encodes then ran 1.8 ms below that "floor".)

It stays up beside the server, so that the latency benchmark can alternate blocks of HTTP
searches with blocks of bare encodes of the same queries: on this shared machine the speed of
both drifts by 20-30% within minutes, and a floor measured minutes apart from the searches it is
compared with measures the drift.

Protocol (one JSON line each way): the latency benchmark writes `["text"|"image"|"composed",
[i, ...]]` and reads `{"<threads>": [ms, ...], ...}`, each query's encode time at each thread
count (text and image summed for a composed query); an empty line ends it. The first line it
prints is `{"threads": [counts]}`.
Usage: python -m benchmarks.encoder_floor QUERIES.json
(QUERIES.json: {"text": [str], "image": [photo path], "composed": [[str, photo path]]})
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import torch
    from PIL import Image

    from service.config import Settings
    from service.encoding.embedder import make_embedder

    spec = json.loads(Path(sys.argv[1]).read_text())
    photos = {
        p: Image.open(p).convert("RGB") for p in spec["image"] + [p for _, p in spec["composed"]]
    }
    embedder = make_embedder(Settings(encoder_backend="torch"))  # the floor is PyTorch's
    te, ie = embedder.text_encoder, embedder.image_encoder

    def encode(kind: str, i: int) -> float:
        t0 = time.perf_counter()
        if kind in ("text", "composed"):
            te.encode([spec["text"][i] if kind == "text" else spec["composed"][i][0]])
        if kind in ("image", "composed"):
            ie.encode([photos[spec["image"][i] if kind == "image" else spec["composed"][i][1]]])
        return (time.perf_counter() - t0) * 1000

    counts = sorted({1, torch.get_num_threads()})
    for threads in counts:  # the first encodes at a thread count are 2-3x slower
        torch.set_num_threads(threads)
        for kind in ("text", "image"):
            for i in range(10):
                encode(kind, i % len(spec[kind]))
    print(json.dumps({"threads": counts}), flush=True)
    for block, line in enumerate(sys.stdin):
        if not line.strip():
            break
        kind, items = json.loads(line)
        out: dict[str, list[float]] = {}
        for threads in counts if block % 2 else counts[::-1]:  # neither always goes first
            torch.set_num_threads(threads)
            encode(kind, items[0])  # untimed: the first encode after a switch re-forms the team
            out[str(threads)] = [encode(kind, i) for i in items]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
