"""Hybrid retrieval before any click: each channel alone, reciprocal rank fusion, the fused head.

Query sets (all SYNTHETIC, made from the catalog itself):
  known-item  a product's brand plus one or two of its rarest title words, sometimes reordered or
              misspelled (shoppers.known_items); the product is grade 3, others graded by shared
              words
  attribute   the attribute needs of benchmarks.quality's text queries (shoppers.queries)

Rankers, each over the same index:
  dense text  the frozen text encoder's cosine (the FAISS text channel)
  dense head  the head's dense score over its FAISS channels, no lexical channel (the service
              before the hybrid mix)
  lexical     BM25 over title and attribute text (service.lexical)
  rrf         reciprocal rank fusion (k=60) of lexical and dense text
  fused head  the service as it ranks now: every channel, the head's hybrid mix

    python -m benchmarks.hybrid [--data-dir DIR] [--queries 400]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import DEFAULT_DATA_DIR, ensure_index, load_rows, require_shared, write_json
from model.checkpoint import load_head
from model.head import FusionHead, HeadConfig
from model.hybrid import RRF_K
from service.config import Settings
from service.index import CatalogIndex
from service.runtime import make_embedder
from service.search import ActiveHead, Searcher, SearchQuery
from shoppers.grades import Relevance, ndcg_at_10
from shoppers.known_items import KnownItemGrades, make_known_item_queries
from shoppers.queries import make_queries
from storage.artifacts import current

RANKERS = ("dense text", "dense head", "lexical", "rrf", "fused head")
DEPTH = 100


def with_mix(head: FusionHead, hybrid: bool) -> FusionHead:
    """The head with (or without) the hybrid mix at its start: a build from before the mix."""
    if head.config.hybrid == hybrid:
        return head
    out = FusionHead(HeadConfig(**{**dataclasses.asdict(head.config), "hybrid": hybrid}))
    out.load_state_dict(head.state_dict(), strict=False)
    return out.eval()


def rrf(*lists: np.ndarray) -> np.ndarray:
    scores: dict[int, float] = {}
    for rows in lists:
        for rank, r in enumerate(rows.tolist(), start=1):
            scores[r] = scores.get(r, 0.0) + 1 / (RRF_K + rank)
    return np.array(sorted(scores, key=lambda r: -scores[r]), np.int64)


def measure(
    ranked: np.ndarray, pos: np.ndarray, grades: np.ndarray, relevant: int
) -> dict[str, float]:
    """NDCG@10, and recall@100 of the products graded `relevant` or more (ranked are index
    rows; pos maps rows to catalog positions)."""
    g = grades[pos[ranked[:DEPTH]]]
    total = int((grades >= relevant).sum())
    return {
        "ndcg@10": ndcg_at_10(g, grades),
        "recall@100": float((g >= relevant).sum() / max(1, min(total, DEPTH))),
    }


def evaluate(
    searchers: dict[str, Searcher],
    queries: list[tuple[str, np.ndarray]],
    pos: np.ndarray,
    relevant: int,
) -> dict[str, dict[str, float]]:
    dense, fused = searchers["dense head"], searchers["fused head"]
    index, encoder = dense.index, dense.embedder.text_encoder
    per: dict[str, list[dict[str, float]]] = {r: [] for r in RANKERS}
    for text, grades in tqdm(queries, desc="queries", leave=False):
        qt = encoder.encode([text])[0]
        lists = {
            "dense text": index.search("text", qt, DEPTH)[0],
            "lexical": index.search_lexical(text, DEPTH)[0],
        }
        lists["rrf"] = rrf(lists["dense text"], lists["lexical"])
        for name, s in (("dense head", dense), ("fused head", fused)):
            hits = s.search(SearchQuery(text=text, k=DEPTH)).hits
            lists[name] = np.array([index.row_of[h.product.id] for h in hits], np.int64)
        for name, ranked in lists.items():
            per[name].append(measure(ranked, pos, grades, relevant))
    return {r: {k: float(np.mean([m[k] for m in v])) for k in v[0]} for r, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--queries", type=int, default=400, help="queries per set")
    args = ap.parse_args()
    require_shared()
    ensure_index(args.data_dir)
    settings = Settings(data_dir=args.data_dir)
    embedder = make_embedder(settings)
    index = CatalogIndex.load(current(settings.index_dir))  # type: ignore[arg-type]
    version = index.meta["head_version"]
    head, _ = load_head(settings.data_dir / "heads" / version)
    searchers = {
        name: Searcher(
            embedder,
            index,
            ActiveHead(with_mix(head, hybrid), version),
            per_channel=settings.candidates_per_channel,
        )
        for name, hybrid in (("dense head", False), ("fused head", True))
    }
    rows = load_rows()
    ids, titles = [r["id"] for r in rows], [r["productDisplayName"] for r in rows]
    catalog_pos = {pid: i for i, pid in enumerate(ids)}
    pos = np.array([catalog_pos[m.id] for m in index.metas], np.int64)
    known = KnownItemGrades(ids, titles)
    relevance = Relevance(rows)
    sets = {
        "known-item": [
            (q.text, known.grades(q)) for q in make_known_item_queries(ids, titles, args.queries)
        ],
        "attribute": [
            (q.text, relevance.grades(q.target))
            for q in make_queries(rows, {}, args.queries)
            if q.kind == "text" and q.text
        ],
    }
    relevant = {"known-item": 2, "attribute": 3}  # every asked word; every asked attribute
    table = {name: evaluate(searchers, qs, pos, relevant[name]) for name, qs in sets.items()}
    torch.set_num_threads(1)
    print(f"\nhybrid retrieval before clicks, {len(index):,} products, synthetic queries")
    print(f"{'set':11} {'ranker':11} {'NDCG@10':>9} {'recall@100':>11}")
    for name, per in table.items():
        for ranker, m in per.items():
            print(f"{name:11} {ranker:11} {m['ndcg@10']:9.4f} {m['recall@100']:11.4f}")
    payload = {"head_version": version, "synthetic": True, "table": table}
    print(f"wrote {write_json('hybrid', payload)}")


if __name__ == "__main__":
    main()
