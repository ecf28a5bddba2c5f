"""The floor a search cannot beat: each frozen encoder's single-query forward time, measured in a
fresh process that loads nothing but the encoders (same environment as the server), with one
thread and with all cores, whichever is faster.

Run by benchmarks/latency.py between its HTTP runs; prints one JSON line.
Usage: python -m benchmarks.encoder_floor TEXTS.json PHOTO [PHOTO ...]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import service  # noqa: F401  (sets the OpenMP policy before torch loads, as the server does)

T = TypeVar("T")


def median_ms(fn: Callable[[T], object], items: Sequence[T], warmup: int = 5) -> float:
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    import torch
    from PIL import Image

    from service.config import Settings
    from service.runtime import make_embedder

    texts: list[str] = json.loads(Path(sys.argv[1]).read_text())
    photos = [Image.open(p).convert("RGB") for p in sys.argv[2:]]
    embedder = make_embedder(Settings())
    te, ie = embedder.text_encoder, embedder.image_encoder
    out: dict[str, float] = {}
    for threads in sorted({1, torch.get_num_threads()}):  # the floor is the faster of the two
        torch.set_num_threads(threads)
        text = median_ms(lambda t: te.encode([t]), texts)
        image = median_ms(lambda p: ie.encode([p]), photos)
        out = {
            "text_ms": min(text, out.get("text_ms", text)),
            "image_ms": min(image, out.get("image_ms", image)),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
