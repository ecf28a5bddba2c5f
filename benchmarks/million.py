"""The vector channels at a million products, per index kind, in process (no HTTP): build
time, index size, single-query latency unfiltered and filtered, and recall@10 against exact
search, for each searched space.

The catalog is the fashion catalog's real vectors (a 44k build's text, projected text and
projected photo rows), perturbed into --products distinct vectors: each new row is a real row
plus Gaussian noise, renormalised, at a mean cosine of --spread to it (the same product in
another colour or size is about that close). Queries are real: synthetic shoppers' text queries
and photos (shoppers.queries) through the real encoders and the build's own head, so that they
land where a shopper's would. Each new row takes its source product's attributes, so filters
select what they would in a shop of that size:

- `narrow`: one articleType and gender (under the exact-filter limit: searched by brute force);
- `wide`: gender alone (38% of the rows: through the index, skipping the rest).

An HNSW index is built once and searched at each --ef (candidates kept during the walk).
Usage: python -m benchmarks.million [--data-dir DIR] [--products 1000000]
       [--kinds flat,hnsw16,hnsw32] [--spaces text,ptext,pimage] [--queries 200]
       [--ef 128,256,512,1024]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    ensure_index,
    load_rows,
    require_shared,
    shopper_photos,
    write_json,
)
from service.catalog.vectors import VectorConfig, build_index, search_index
from shoppers.queries import make_queries
from storage.artifacts import current, read_manifest

KINDS = {
    "flat": VectorConfig(kind="flat"),
    "hnsw16": VectorConfig(kind="hnsw", hnsw_m=16),
    "hnsw32": VectorConfig(kind="hnsw", hnsw_m=32),
}


def perturbed(base: np.ndarray, n: int, spread: float, seed: int) -> np.ndarray:
    """n unit rows: base[i % len(base)] plus noise, at mean cosine `spread` to their source
    (the first len(base) rows are the real ones, unchanged)."""
    dim = base.shape[1]
    sigma = np.sqrt((1 / spread**2 - 1) / dim)  # |noise|^2 = dim sigma^2 = 1/cos^2 - 1
    out = np.empty((n, dim), np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100_000):
        rows = np.arange(start, min(n, start + 100_000))
        chunk = base[rows % len(base)] + (rows >= len(base))[:, None] * rng.normal(
            0, sigma, (len(rows), dim)
        ).astype(np.float32)
        out[rows] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def query_vectors(data_dir: Path, n: int) -> dict[str, np.ndarray]:
    """Per space, n real query vectors: shoppers' texts for text and ptext, photos for pimage."""
    import torch

    from model.checkpoint import load_head
    from service.config import Settings
    from service.encoding.embedder import make_embedder

    settings = Settings(data_dir=data_dir)
    build = current(settings.index_dir)
    assert build is not None
    head, _ = load_head(settings.data_dir / "heads" / read_manifest(build)["head_version"])
    embedder = make_embedder(settings)
    qs = make_queries(load_rows(), shopper_photos(), n, seed=23)
    texts = [q.text for q in qs if q.kind == "text" and q.text][:n]
    photos = [embedder.decode(q.photo.read_bytes()) for q in qs if q.kind == "image" and q.photo]
    qt = embedder.text_encoder.encode(texts)
    qv = embedder.image_encoder.encode(photos[:n])
    with torch.no_grad():
        pt = head.project_text(torch.from_numpy(qt)).numpy()
        pv = head.project_image(torch.from_numpy(qv)).numpy()
    return {"text": qt, "ptext": pt, "pimage": pv}


def source_vectors(data_dir: Path) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The 44k build's rows per space and each row's attributes."""
    build = current(data_dir / "index")
    assert build is not None
    vectors = {s: np.load(build / f"{s}.npy") for s in ("text", "ptext", "pimage")}
    attributes = [m[2] for m in json.loads((build / "products.json").read_text())]
    return vectors, attributes


def masks(attributes: list[dict[str, Any]], n: int) -> dict[str, np.ndarray]:
    """The filters' row masks over n rows (row i has the attributes of source row i % len)."""

    def mask(ok: np.ndarray) -> np.ndarray:
        return np.resize(ok, n)  # row i takes source row i % src's value

    women = np.array([a.get("gender") == "Women" for a in attributes])
    kind = np.array([a.get("articleType") == "Flats" for a in attributes]) & women
    out = {"narrow": mask(kind), "wide": mask(women)}
    assert all(len(m) == n and m.any() for m in out.values())
    return out


def kth_best(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None):
    """Per query, the exact k-th best similarity among the allowed rows."""
    allowed = vectors if mask is None else vectors[mask]
    return [float(np.partition(-(allowed @ q), k - 1)[k - 1]) * -1 for q in queries]


def measure(
    index: faiss.Index,
    config: VectorConfig,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: dict[str, list[float]],
    filters: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Per filter: p50/p99 ms of one query through the index (a narrow filter's rows by brute
    force, as CatalogIndex searches them) and recall@10: the share of the ten found that are as
    similar as the exact tenth best, `truth` (so that tied copies count alike)."""
    out: dict[str, Any] = {}
    for name, mask in {"none": None, **filters}.items():
        times, recalls = [], []
        rows_allowed = None if mask is None else np.flatnonzero(mask)
        for q, want in zip(queries, truth[name], strict=True):
            t0 = time.perf_counter()
            if name == "narrow":
                sims = vectors[rows_allowed] @ q
                top = np.argpartition(-sims, 10)[:10]
                found = rows_allowed[top[np.argsort(-sims[top])]]  # type: ignore[index]
            else:
                found = search_index(index, q[None], 10, mask, 1, config)[0][0]
            times.append((time.perf_counter() - t0) * 1000)
            good = found[found >= 0]
            recalls.append(float(np.sum(vectors[good] @ q >= want - 1e-5)) / 10)
        out[name] = {
            "p50_ms": round(float(np.median(times)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
            "recall@10": round(float(np.mean(recalls)), 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--products", type=int, default=1_000_000)
    ap.add_argument("--kinds", default="flat,hnsw16,hnsw32")
    ap.add_argument("--spaces", default="text,ptext,pimage")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--spread", type=float, default=0.95, help="mean cosine of a copy to its row")
    ap.add_argument("--ef", default="128,256,512,1024", help="HNSW search breadths to measure")
    args = ap.parse_args()
    require_shared()
    ensure_index(args.data_dir)
    base, attributes = source_vectors(args.data_dir)
    queries = query_vectors(args.data_dir, args.queries)
    filters = masks(attributes, args.products)
    result: dict[str, Any] = {"products": args.products, "spread": args.spread, "spaces": {}}
    for space in args.spaces.split(","):
        vectors = perturbed(base[space], args.products, args.spread, seed=1)
        truth = {
            name: kth_best(vectors, queries[space], 10, mask)
            for name, mask in {"none": None, **filters}.items()
        }
        for kind in args.kinds.split(","):
            config = KINDS[kind]
            t0 = time.perf_counter()
            index = build_index(vectors, config)
            build_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                faiss.write_index(index, f"{tmp}/index.faiss")
                size = Path(f"{tmp}/index.faiss").stat().st_size
            built = {"build_s": round(build_s, 1), "index_mb": round(size / 2**20, 1)}
            efs = [int(e) for e in args.ef.split(",")] if config.kind == "hnsw" else [0]
            for ef in efs:
                name = f"{kind} ef{ef}" if ef else kind
                searched = replace(config, ef_search=ef) if ef else config
                row = built | measure(index, searched, vectors, queries[space], truth, filters)
                result["spaces"].setdefault(space, {})[name] = row
                tqdm.write(f"{space} {name}: {row}")
            del index
    _print(result)
    print(f"wrote {write_json(f'million_{args.products}', result)}")


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['products']:,} products, vectors at cosine {result['spread']} to a real row")
    head = f"{'space':8} {'index':13} {'build s':>8} {'MB':>7}"
    for f in ("none", "narrow", "wide"):
        head += f"  {f + ' p50':>12} {'p99':>7} {'recall':>7}"
    print(head)
    for space, kinds in result["spaces"].items():
        for kind, r in kinds.items():
            line = f"{space:8} {kind:13} {r['build_s']:8.1f} {r['index_mb']:7.1f}"
            for f in ("none", "narrow", "wide"):
                line += f"  {r[f]['p50_ms']:12.2f} {r[f]['p99_ms']:7.2f} {r[f]['recall@10']:7.3f}"
            print(line)


if __name__ == "__main__":
    main()
