"""Retrieval quality on the full catalog, per query type, for four rankers.

  text-only   frozen MiniLM cosine of the query text and the product text
  image-only  frozen EfficientNet-Lite0 cosine of the query photo and the product thumbnail
  concat      naive fusion: cosine of [text; image] concatenations (each half L2-normalised)
  head        the service's pipeline: FAISS channels + the bootstrapped fusion head

Queries are SYNTHETIC (generated from catalog attributes); image queries are 224 px photos from
../shared/data/fashion224 searched against the 60x80 catalog thumbnails. `--phrasings heldout`
asks the same needs in wordings nothing here was tuned on (shoppers.phrasings.PHRASINGS).
Usage: python -m benchmarks.quality [--data-dir DIR] [--per-kind N] [--phrasings dev|heldout]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    ensure_index,
    load_rows,
    print_targets,
    require_shared,
    shopper_photos,
    write_json,
)
from model.checkpoint import load_head
from service.catalog.index import CatalogIndex
from service.config import Settings
from service.encoding.embedder import make_embedder
from service.search.searcher import ActiveHead, Searcher, SearchQuery
from shoppers.grades import Relevance, metrics
from shoppers.phrasings import PHRASINGS
from shoppers.queries import make_queries
from storage.artifacts import current

METHODS = ("text-only", "image-only", "concat", "head")
METRICS = ("ndcg@10", "recall@50", "mrr", "p@10", "r@10", "f1@10")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--per-kind", type=int, default=300, help="queries per query type")
    ap.add_argument(
        "--phrasings",
        choices=sorted(PHRASINGS),
        default="dev",
        help="query wordings: the ones results were tuned on (dev), held-out ones, or the "
        "simulated shoppers' (train)",
    )
    args = ap.parse_args()
    require_shared()
    ensure_index(args.data_dir)
    settings = Settings(data_dir=args.data_dir)
    embedder = make_embedder(settings)
    index = CatalogIndex.load(current(settings.index_dir))  # type: ignore[arg-type]
    version = index.meta["head_version"]
    head, _ = load_head(settings.data_dir / "heads" / version)
    searcher = Searcher(
        embedder, index, ActiveHead(head, version), per_channel=settings.candidates_per_channel
    )

    table, n_queries = evaluate(searcher, args.per_kind, args.phrasings)
    checks = {
        f"head>concat[{k}]": table[k]["head"]["ndcg@10"] > table[k]["concat"]["ndcg@10"]
        for k in table
    }
    comp = table.get("composed", {})
    if comp:
        checks["composed head>text-only"] = comp["head"]["ndcg@10"] > comp["text-only"]["ndcg@10"]
        checks["composed head>image-only"] = comp["head"]["ndcg@10"] > comp["image-only"]["ndcg@10"]
    print_targets(checks)
    path = write_json(
        "quality" if args.phrasings == "dev" else f"quality_{args.phrasings}_phrasings",
        {
            "head_version": version,
            "queries": n_queries,
            "phrasings": args.phrasings,
            "synthetic": True,
            "ndcg_gain": "2^g-1",
            "table": table,
            "targets": checks,
        },
    )
    print(f"wrote {path}")


def evaluate(
    searcher: Searcher, per_kind: int, phrasings: str = "dev"
) -> tuple[dict[str, dict[str, dict[str, float]]], int]:
    """Average metrics per (query type, method); prints the table."""
    embedder, index = searcher.embedder, searcher.index
    version = searcher.active.version
    rows = load_rows()
    relevance = Relevance(rows)
    queries = make_queries(rows, shopper_photos(), per_kind, phrasings=phrasings)
    ids = np.array([m.id for m in index.metas])
    T, V = (
        index.vectors("text", np.arange(index.n_rows)),
        index.vectors("image", np.arange(index.n_rows)),
    )

    per: dict[tuple[str, str], list[dict[str, float]]] = {}
    started = time.perf_counter()
    for q in tqdm(queries, desc="queries"):
        photo = Image.open(q.photo).convert("RGB") if q.photo else None
        qt = embedder.text_encoder.encode([q.text])[0] if q.text else None
        qv = embedder.image_encoder.encode([photo])[0] if photo else None
        g = relevance.grades(q.target)
        scores: dict[str, np.ndarray | None] = {
            "text-only": T @ qt if qt is not None else None,
            "image-only": V @ qv if qv is not None else None,
        }
        parts = [s for s in scores.values() if s is not None]
        scores["concat"] = np.mean(parts, axis=0)  # cos of concatenations with unit halves
        for m, s in scores.items():
            if s is None:
                continue
            top = ids[np.argsort(-s)[:50]].tolist()
            per.setdefault((q.kind, m), []).append(metrics(top, g, relevance))
        res = searcher.search(SearchQuery(text=q.text, image=photo, k=50))
        per.setdefault((q.kind, "head"), []).append(
            metrics([h.product.id for h in res.hits], g, relevance)
        )

    table: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"\nquality on {len(rows)} products, {len(queries)} synthetic queries "
        f"({phrasings} phrasings, {time.perf_counter() - started:.0f}s); head {version}"
    )
    print(f"{'type':9} {'method':11} " + " ".join(f"{m:>9}" for m in METRICS) + "      n")
    for kind in ("text", "image", "composed"):
        for m in METHODS:
            vals = per.get((kind, m))
            if not vals:
                continue
            avg = {k: float(np.mean([v[k] for v in vals])) for k in METRICS}
            table.setdefault(kind, {})[m] = avg
            print(
                f"{kind:9} {m:11} "
                + " ".join(f"{avg[k]:9.4f}" for k in METRICS)
                + f" {len(vals):6}"
            )
    return table, len(queries)


if __name__ == "__main__":
    main()
