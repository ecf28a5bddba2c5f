"""The bare encoders, side by side in one process: PyTorch fp32 (eager), ONNX Runtime fp32 and
ONNX Runtime int8, for the text and the image model, on the fashion catalog's own titles and
photos.

Per variant: the median milliseconds of one query (tokenising or preparing pixels included)
and of a batch of 64, alternating variants block by block (3 blocks) so that the machine's
drift hits them alike; and its quality against PyTorch fp32 on the same inputs: the mean cosine
of the vectors, and recall@10, how many of the ten nearest catalog items PyTorch fp32 finds
for a query the variant finds too (queries and catalog both encoded by the variant). The image
int8 model is calibrated as ingest calibrates it (service.encoding.export.CALIBRATION catalog
photos), on photos that are neither queries nor catalog here.

Usage: python -m benchmarks.encoders [--catalog 5000] [--queries 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from benchmarks.common import CATALOG, load_rows, require_shared, shopper_photos, write_json
from service.encoding import onnx
from service.encoding.encoders import EfficientNetLite0ImageEncoder, MiniLMTextEncoder
from service.encoding.export import CALIBRATION, similarity

Encode = Callable[[Sequence[Any]], np.ndarray]


def _ms(encode: Encode, items: Sequence[Any]) -> float:
    t = time.perf_counter()
    encode(items)
    return (time.perf_counter() - t) * 1000


def timings(variants: Mapping[str, Encode], single: Sequence[Any], batch: Sequence[Any]) -> dict:
    """Per variant, the medians over 3 alternating blocks of one-item and 64-item encodes."""
    singles: dict[str, list[float]] = {v: [] for v in variants}
    batches: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(3):
        for name, encode in variants.items():
            encode(single[:1])  # warm
            singles[name].append(float(np.median([_ms(encode, [x]) for x in single])))
            batches[name].append(float(np.median([_ms(encode, batch) for _ in range(3)])))
    return {
        v: {"single_ms": round(float(np.median(singles[v])), 2),
            "batch64_ms": round(float(np.median(batches[v])), 1)}
        for v in variants
    }  # fmt: skip


class Inputs(NamedTuple):
    text_catalog: list[str]
    text_queries: list[str]
    image_catalog: list[Image.Image]
    image_queries: list[Image.Image]  # shoppers' photos, as photo searches send
    calibration: list[Image.Image]  # catalog photos that are neither queries nor catalog


def inputs(catalog: int, queries: int) -> Inputs:
    rng = random.Random(0)
    rows = load_rows()
    rng.shuffle(rows)
    titles = [r["productDisplayName"] for r in rows]
    with_image = [CATALOG.parent / r["image_path"] for r in rows if r.get("image_path")]
    photos = list(shopper_photos().values())
    rng.shuffle(photos)

    def load(paths: Sequence[str | Path]) -> list[Image.Image]:
        return [Image.open(p).convert("RGB") for p in tqdm(paths, desc="photos", leave=False)]

    return Inputs(
        titles[:catalog],
        titles[-queries:],
        load(with_image[:catalog]),
        load(photos[:queries]),
        load(with_image[-CALIBRATION:]),
    )


def variants(
    d: Path, calibration: list[Image.Image], threads: int
) -> tuple[dict[str, Encode], dict[str, Encode], float]:
    """The text and the image model's three variants, the graphs exported and quantised in d,
    and the seconds that export and quantisation took."""
    text_torch, image_torch = MiniLMTextEncoder(), EfficientNetLite0ImageEncoder()
    size = image_torch.input_size
    t0 = time.perf_counter()
    onnx.export_text(d / "text.onnx")
    onnx.quantize_text(d / "text.onnx", d / "text.int8.onnx")
    onnx.export_image(size, d / "image.onnx")
    onnx.quantize_image(d / "image.onnx", d / "image.int8.onnx", calibration, size)
    export_s = time.perf_counter() - t0
    n = threads
    text: dict[str, Encode] = {
        "pytorch fp32": text_torch.encode,
        "onnx fp32": onnx.OnnxTextEncoder(d / "text.onnx", "t", threads=n).encode,
        "onnx int8": onnx.OnnxTextEncoder(d / "text.int8.onnx", "t8", threads=n).encode,
    }
    image: dict[str, Encode] = {
        "pytorch fp32": image_torch.encode,
        "onnx fp32": onnx.OnnxImageEncoder(d / "image.onnx", "i", size, threads=n).encode,
        "onnx int8": onnx.OnnxImageEncoder(d / "image.int8.onnx", "i8", size, threads=n).encode,
    }
    return text, image, export_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=int, default=5000, help="catalog items per model")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    require_shared()
    torch.set_num_threads(args.threads)
    data = inputs(args.catalog, args.queries)
    result: dict[str, Any] = {"threads": args.threads, "catalog": args.catalog}
    with tempfile.TemporaryDirectory(prefix="fr-encoders-") as tmp:
        text, image, export_s = variants(Path(tmp), data.calibration, args.threads)
        result["export_s"] = round(export_s, 1)
        for model, models, catalog, queries in (
            ("text", text, data.text_catalog, data.text_queries),
            ("image", image, data.image_catalog, data.image_queries),
        ):
            speed = timings(models, queries[:100], catalog[:64])
            for name, encode in models.items():
                cos, rec = (1.0, 1.0)
                if name != "pytorch fp32":
                    cos, rec = similarity(models["pytorch fp32"], encode, catalog, queries)
                result[f"{model} {name}"] = {**speed[name], "cosine": cos, "recall@10": rec}

    print(f"\nbare encoders, {args.threads} threads, {args.catalog} catalog items, "
          f"{args.queries} queries (medians of 3 alternating blocks)")  # fmt: skip
    print(f"{'variant':<20} {'1 query ms':>10} {'64 batch ms':>12} {'cosine':>8} {'recall@10':>10}")
    for key, v in result.items():
        if isinstance(v, dict):
            print(
                f"{key:<20} {v['single_ms']:>10.2f} {v['batch64_ms']:>12.1f} "
                f"{v['cosine']:>8.4f} {v['recall@10']:>10.4f}"
            )
    print(f"export and quantisation: {result['export_s']} s")
    print(f"wrote {write_json('encoders', result)}")


if __name__ == "__main__":
    main()
