"""The vector backends side by side on the 44k fashion build, in process: build time, single-query
latency and recall@10 against exact search, per searched space, unfiltered and with the `wide`
filter (gender, 38% of the rows):

- `faiss`: FaissStore as served (HNSW M=32 over fp16), a filter as a row mask;
- `qdrant-local`: QdrantStore on `QdrantClient(":memory:")`, what the tests run: Qdrant's local
  mode, exact brute force in Python with filters evaluated in Python;
- `qdrant-edge`: Qdrant's own storage and HNSW (m=32) in process (qdrant-edge-py), searching on
  one thread, points written as QdrantStore writes them (named vectors, a keyword-indexed
  `facets` payload), a filter as a payload filter. A Qdrant server runs the same engine behind a
  network hop.

Queries are real (benchmarks.million.query_vectors); the backends take turns per query, so
that the machine's noise falls on them alike.
Usage: python -m benchmarks.vector_backends [--data-dir DIR] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import QdrantClient

from benchmarks.common import DEFAULT_DATA_DIR, ensure_index, require_shared, write_json
from benchmarks.million import kth_best, query_vectors
from service.catalog.index import CatalogIndex
from service.catalog.qdrant import _SEP, QdrantBackend, _facets
from service.catalog.vectors import SPACES, FaissBackend, FilterMask, VectorConfig, ef_for
from storage.artifacts import current
from storage.products import ProductRecord

WIDE = {"gender": ["Women"]}
Search = Callable[[str, np.ndarray, FilterMask | None], np.ndarray]  # -> the rows found


def edge_shard(
    path: Path, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord | None]
) -> qe.EdgeShard:
    """An Edge shard holding the rows as QdrantBackend.build writes them, optimised (its HNSW
    graphs built) before it returns; point ids are rows."""
    config = qe.EdgeConfig(
        vectors={
            s: qe.EdgeVectorParams(size=int(vectors[s].shape[1]), distance=qe.Distance.Dot)
            for s in SPACES
        },
        hnsw_config=qe.HnswIndexConfig(m=32, ef_construct=80, full_scan_threshold=10_000),
        # one query on one thread, as FaissStore is searched: the default pool's hand-off cost
        # ~3 ms a query on 2 busy cores (docs/benchmarks.md#vector-backends)
        max_search_threads=1,
    )
    shard = qe.EdgeShard.create(str(path), config)
    keyword = qe.PayloadSchemaType.Keyword
    shard.update(qe.UpdateOperation.create_field_index("facets", keyword))
    rows = [r for r, p in enumerate(products) if p is not None]
    for start in range(0, len(rows), 512):
        points = [
            qe.Point(r, {s: vectors[s][r].tolist() for s in SPACES}, {"facets": _facets(p)})
            for r in rows[start : start + 512]
            if (p := products[r]) is not None
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.optimize()
    return shard


def edge_search(shard: qe.EdgeShard, ef: int) -> Search:
    """A search of the shard as QdrantStore searches a server: filters as a payload filter."""

    def search(space: str, q: np.ndarray, mask: FilterMask | None) -> np.ndarray:
        flt = None
        if mask is not None and mask.filters:
            flt = qe.Filter(
                must=[
                    qe.FieldCondition(
                        key="facets", match=qe.MatchAny(any=[f"{k}{_SEP}{v}" for v in values])
                    )
                    for k, values in mask.filters.items()
                ]
            )
        request = qe.QueryRequest(
            limit=10,
            query=qe.Query.Nearest(q.tolist(), using=space),
            filter=flt,
            params=qe.SearchParams(hnsw_ef=ef),
            with_payload=False,
        )
        return np.array([int(p.id) for p in shard.query(request)], np.int64)

    return search


def measure(
    searches: Mapping[str, Search],
    vectors: np.ndarray,
    space: str,
    queries: np.ndarray,
    masks: Mapping[str, FilterMask | None],
) -> dict[str, dict[str, Any]]:
    """Per backend and filter: p50/p99 ms of one query and recall@10, the share of the ten found
    as similar as the exact tenth best (tied copies count alike). Each query runs on every
    backend in turn, the first of them rotating."""
    names = list(searches)
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    for filt, mask in masks.items():
        truth = kth_best(vectors, queries, 10, mask)
        times: dict[str, list[float]] = {name: [] for name in names}
        recalls: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # a warm-up query each
            searches[name](space, queries[0], mask)
        for i, (q, want) in enumerate(zip(queries, truth, strict=True)):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                t0 = time.perf_counter()
                found = searches[name](space, q, mask)
                times[name].append((time.perf_counter() - t0) * 1000)
                good = found[found >= 0]
                recalls[name].append(float(np.sum(vectors[good] @ q >= want - 1e-5)) / 10)
        for name in names:
            out[name][filt] = {
                "p50_ms": round(float(np.median(times[name])), 3),
                "p99_ms": round(float(np.percentile(times[name], 99)), 3),
                "recall@10": round(float(np.mean(recalls[name])), 4),
            }
    return out


def timed(make: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    made = make()
    return made, round(time.perf_counter() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    require_shared()
    ensure_index(args.data_dir)
    build = current(args.data_dir / "index")
    assert build is not None
    index = CatalogIndex.load(build)
    alive = np.zeros(index.n_rows, bool)
    alive[index.alive_rows()] = True
    products = [m if alive[r] else None for r, m in enumerate(index.metas)]
    vectors = {s: index.vectors(s, np.arange(index.n_rows)) for s in SPACES}
    queries = query_vectors(args.data_dir, args.queries)
    masks: dict[str, FilterMask | None] = {"none": None, "wide": index.filter_mask(WIDE)}

    faiss_store, faiss_s = timed(lambda: FaissBackend().build(vectors, products))
    local = QdrantBackend(VectorConfig(kind="qdrant"), client=QdrantClient(":memory:"))
    qdrant_store, local_s = timed(lambda: local.build(vectors, products))
    with tempfile.TemporaryDirectory() as tmp:
        shard, edge_s = timed(lambda: edge_shard(Path(tmp) / "shard", vectors, products))
        info = shard.info()
        searches: dict[str, Search] = {
            "faiss": lambda s, q, m: faiss_store.search(s, q[None], 10, m, 1)[0][0],
            "qdrant-local": lambda s, q, m: qdrant_store.search(s, q[None], 10, m, 1)[0][0],
            "qdrant-edge": edge_search(shard, ef_for(index.n_rows)),
        }
        result: dict[str, Any] = {
            "products": int(alive.sum()),
            "wide_share": round(float(masks["wide"].mean()), 3),  # type: ignore[union-attr]
            "build_s": {"faiss": faiss_s, "qdrant-local": local_s, "qdrant-edge": edge_s},
            "edge_segments": info.segments_count,
            "edge_indexed_vectors": info.indexed_vectors_count,
            "queries": {s: len(queries[s]) for s in SPACES},
            "spaces": {s: measure(searches, vectors[s], s, queries[s], masks) for s in SPACES},
        }
        shard.close()
    local.close()
    _print(result)
    print(f"wrote {write_json('vector_backends', result)}")


def _print(result: dict[str, Any]) -> None:
    print(
        f"\n{result['products']:,} products; wide filter: {result['wide_share']:.0%} of rows; "
        f"queries per space: {result['queries']}"
    )
    head = f"{'space':7} {'backend':13} {'build s':>8}"
    for f in ("none", "wide"):
        head += f"  {f + ' p50':>9} {'p99':>7} {'recall':>6}"
    print(head)
    for space, backends in result["spaces"].items():
        for name, r in backends.items():
            line = f"{space:7} {name:13} {result['build_s'][name]:8.1f}"
            for f in ("none", "wide"):
                line += f"  {r[f]['p50_ms']:9.2f} {r[f]['p99_ms']:7.2f} {r[f]['recall@10']:6.3f}"
            print(line)
    print("build s: all three spaces at once, from float32 rows in memory")


if __name__ == "__main__":
    main()
