"""A catalog of any size made from the fashion catalog, for benchmarks.million_http: a CSV, a
photo file per product and an embedding cache holding every product's vectors, so that
`fusionrank ingest` takes its real path and embeds nothing.

Row i is a copy of real product i % 44,072 (the first 44,072 rows are the real products as they
are): its attributes, a distinct id (`<id>-<copy>`) and a distinct title (the real title, a
variant word and a style number). Its photo is the real JPEG with a comment segment naming the
copy: the same pixels, but bytes of its own, so it has a content hash (and a cache entry) of its
own. Its cached text and photo vectors are the real product's, plus Gaussian noise at a mean
cosine of `spread` to them (benchmarks.million's scheme); its colour descriptor is the real one,
as the pixels are.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.catalog.files import product_text
from service.encoding.cache import EmbeddingCache
from storage.artifacts import current, read_manifest
from storage.keys import content_key

VARIANTS = (
    "Classic", "Essential", "Premium", "Limited Edition", "Signature", "Heritage", "Studio",
    "Everyday", "Sport", "Lite", "Pro", "Plus", "Select", "Original", "Iconic", "Urban",
    "Travel", "Festive Edition", "Season Edition", "Gift Edition", "Pack of 2", "Pack of 3",
    "Value Pack",
)  # fmt: skip
ID, TITLE, IMAGE = "id", "productDisplayName", "image_path"
CHUNK = 100_000  # rows made (and cache shards written) at a time


@dataclass(frozen=True)
class Source:
    """The real catalog: its CSV rows and, row for row, its 44k build's vectors."""

    header: list[str]
    rows: list[dict[str, str]]
    vectors: dict[str, np.ndarray]  # text, image, colour
    has_image: np.ndarray
    encoders: dict[str, str]  # space -> encoder id, as the build's manifest names them


def load_source(catalog: Path, build_dir: Path) -> Source:
    """The catalog's rows with the vectors the current build in `build_dir` holds for them."""
    build = current(build_dir)
    assert build is not None, f"no build in {build_dir}"
    with catalog.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    row_of = {m[0]: i for i, m in enumerate(json.loads((build / "products.json").read_text()))}
    order = np.array([row_of[r[ID]] for r in rows])
    vectors = {s: np.load(build / f"{s}.npy")[order] for s in ("text", "image", "colour")}
    has_image = np.load(build / "has_image.npy")[order]
    encoders = read_manifest(build)["encoders"]
    for r in rows:  # absolute, so the copies' CSV can live anywhere
        r[IMAGE] = str((catalog.parent / r[IMAGE]).resolve()) if r[IMAGE] else ""
    return Source(header, rows, vectors, has_image, encoders)


def copy_encoders(src_data_dir: Path, dst_data_dir: Path) -> None:
    """The source's encoder graphs, int8 already judged on the real catalog: the cached vectors
    came from these graphs, so the copies' ingest must run (and be keyed by) the same ones."""
    dst = dst_data_dir / "encoders"
    if not dst.exists():
        shutil.copytree(src_data_dir / "encoders", dst)


def noisy(base: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Each row plus Gaussian noise at a mean cosine `spread` to it, at its own length (zero
    rows, products without a photo, stay zero)."""
    dim = base.shape[1]
    sigma = np.sqrt((1 / spread**2 - 1) / dim)
    norm = np.linalg.norm(base, axis=1, keepdims=True)
    out = base + norm * rng.normal(0, sigma, base.shape).astype(np.float32)
    out *= norm / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def copy_title(title: str, copy: int, pid: str) -> str:
    """A real product's title for its copy number `copy` (0: the real product itself)."""
    if copy == 0:
        return title
    return f"{title} {VARIANTS[(copy - 1) % len(VARIANTS)]}, Style {pid}"


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The JPEG with a comment segment after its start marker: the same image, other bytes."""
    assert jpeg[:2] == b"\xff\xd8", "not a JPEG"
    body = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def make_catalog(
    source: Source,
    out: Path,
    products: int,
    *,
    cache_dir: Path,
    cached: int,
    spread: float,
    seed: int = 1,
) -> dict[str, int]:
    """Write `products` rows to out/catalog.csv and their photos under out/images; cache the
    vectors of the first `cached` (the rest are left for the ingest to embed). Returns counts."""
    caches = {
        space: EmbeddingCache(cache_dir, source.encoders[space], source.vectors[space].shape[1])
        for space in ("text", "image", "colour")
    }
    readable = zip(source.rows, source.has_image.tolist(), strict=True)
    photos = [Path(r[IMAGE]).read_bytes() if ok else b"" for r, ok in readable]
    rng = np.random.default_rng(seed)
    counts = {"rows": 0, "photos": 0, "cached": 0}
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (out / "catalog.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=source.header)
        writer.writeheader()
        for start in range(0, products, CHUNK):
            rows, keys, src = _chunk(source, photos, out, start, min(products, start + CHUNK))
            writer.writerows(rows)
            counts["rows"] += len(rows)
            counts["photos"] += sum(k is not None for k in keys["image"])
            take = np.arange(len(rows))[: max(0, cached - start)]
            if len(take):
                picked = {space: [k[i] for i in take] for space, k in keys.items()}
                copies = (start + take) >= len(source.rows)
                _cache(caches, source, src[take], picked, copies=copies, spread=spread, rng=rng)
                counts["cached"] += len(take)
    return counts


def _chunk(
    source: Source, photos: list[bytes], out: Path, start: int, end: int
) -> tuple[list[dict[str, str]], dict[str, list[str | None]], np.ndarray]:
    """Rows start..end: their CSV rows, their content keys (text; image, None without a photo)
    and their source rows."""
    n = len(source.rows)
    src = np.arange(start, end) % n
    rows, text_keys, image_keys = [], [], []
    for i, s in zip(range(start, end), src.tolist(), strict=True):
        real, copy = source.rows[s], i // n
        pid = real[ID] if copy == 0 else f"{real[ID]}-{copy}"
        row = {**real, ID: pid, TITLE: copy_title(real[TITLE], copy, pid)}
        image_key = None
        if photos[s] and copy:
            data = with_comment(photos[s], f"fusionrank copy {pid}")
            path = out / "images" / f"{copy:03d}" / f"{pid}.jpg"
            if s == 0:  # the first row of a copy
                path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            row[IMAGE], image_key = str(path), content_key(data)
        elif photos[s]:
            image_key = content_key(photos[s])
        elif copy:
            row[IMAGE] = ""  # an unreadable real photo: its copies have none
        rows.append(row)
        text_keys.append(_text_key(row, source.header))
        image_keys.append(image_key)
    return rows, {"text": text_keys, "image": image_keys}, src


def _text_key(row: dict[str, str], header: list[str]) -> str:
    """The text key an ingest gives the row (service.catalog.files.read_catalog's columns)."""
    attrs = {c: row[c].strip() for c in header if c not in (ID, TITLE, IMAGE)}
    text = product_text(row[TITLE].strip(), {k: v for k, v in attrs.items() if v})
    return content_key(text)


def _cache(
    caches: dict[str, EmbeddingCache],
    source: Source,
    src: np.ndarray,
    keys: dict[str, list[str | None]],
    *,
    copies: np.ndarray,
    spread: float,
    rng: np.random.Generator,
) -> None:
    """Cache the rows' vectors: the source's, noisy for copies; photos only where they have one."""
    text = source.vectors["text"][src]
    image = source.vectors["image"][src]
    text[copies] = noisy(text[copies], spread, rng)
    image[copies] = noisy(image[copies], spread, rng)
    caches["text"].put_many([k for k in keys["text"] if k], text)
    with_photo = np.array([k is not None for k in keys["image"]])
    photo_keys = [k for k in keys["image"] if k is not None]
    caches["image"].put_many(photo_keys, image[with_photo])
    caches["colour"].put_many(photo_keys, source.vectors["colour"][src][with_photo])
