"""Hybrid retrieval: each channel alone, reciprocal rank fusion and the fused head, before any
click and after simulated shoppers taught it, on the fashion catalog and on a titles-only copy.

Query sets (all SYNTHETIC, made from the catalog itself):
  known-item  a product's brand plus one or two of its rarest title words, sometimes reordered or
              misspelled (shoppers.known_items); the product is grade 3, others graded by shared
              words
  attribute   the attribute needs of benchmarks.quality's text queries (shoppers.queries)

Catalogs: `fashion` (titles, attributes, photos) and `titles-only` (the same products with only
an id and a title, ingested into a data dir of its own on first use).

Rankers, each over the same index:
  dense text  the frozen text encoder's cosine (the FAISS text channel)
  dense head  the bootstrap head's dense score over its FAISS channels, no lexical channel (the
              service before the hybrid mix)
  lexical     BM25 over title and attribute text (service.catalog.lexical)
  rrf         reciprocal rank fusion (k=60) of lexical and dense text
  fused       the service as it ranks: every channel and the head's hybrid mix; before any
              click, then after each step of simulated sessions (shoppers.simulator with
              known-item shoppers; refreshed by hand through POST /v1/models/train)

    python -m benchmarks.hybrid [--data-dir DIR] [--titles-data-dir DIR] [--steps 1000,5000]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from benchmarks.ablations import refresh_row
from benchmarks.common import (
    CATALOG,
    DEFAULT_DATA_DIR,
    REFRESH_ON_REQUEST,
    ROOT,
    ensure_index,
    fresh_database,
    load_rows,
    print_targets,
    require_shared,
    shopper_photos,
    write_json,
)
from benchmarks.server import start_server
from model.checkpoint import load_head
from model.head import QUERY_TYPES, FusionHead, HeadConfig
from model.hybrid import RRF_K
from service.catalog.index import CatalogIndex
from service.config import Settings
from service.encoding.embedder import Embedder, make_embedder
from service.search.searcher import ActiveHead, Searcher, SearchQuery
from shoppers.grades import Relevance, ndcg_at_10
from shoppers.intents import KNOWN_ITEM_MIX
from shoppers.known_items import KnownItemGrades, make_known_item_queries
from shoppers.queries import make_queries
from shoppers.simulator import Simulator
from storage.artifacts import current

DEPTH = 100
DROP_TOLERANCE = 0.005
RELEVANT = {"known-item": 2, "attribute": 3}  # every asked word; every asked attribute
Queries = dict[str, list[tuple[str, np.ndarray]]]


def with_mix(head: FusionHead, hybrid: bool) -> FusionHead:
    """The head with (or without) the hybrid mix at its start."""
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


class Bench:
    """One catalog's index in process, its query sets, and the rankers measured on it."""

    def __init__(self, data_dir: Path, embedder: Embedder, queries: Queries) -> None:
        self.settings = Settings(data_dir=data_dir)
        self.embedder, self.queries = embedder, queries
        self.index = CatalogIndex.load(current(self.settings.index_dir))  # type: ignore[arg-type]
        self.bootstrap = self.index.meta["head_version"]
        catalog_pos = {r["id"]: i for i, r in enumerate(load_rows())}
        self.pos = np.array([catalog_pos[m.id] for m in self.index.metas], np.int64)

    def searcher(self, version: str, hybrid: bool = True) -> Searcher:
        head, _ = load_head(self.settings.data_dir / "heads" / version)
        active = ActiveHead(with_mix(head, hybrid), version)
        n = self.settings.candidates_per_channel
        return Searcher(self.embedder, self.index, active, per_channel=n, query_cache=4096)

    def baselines(self) -> dict[str, dict[str, dict[str, float]]]:
        """Every ranker but the learned one, per query set."""
        dense = self.searcher(self.bootstrap, hybrid=False)
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, qs in self.queries.items():
            per: dict[str, list[dict[str, float]]] = {}
            for text, grades in tqdm(qs, desc=f"baselines {name}", leave=False):
                qt = self.embedder.text_encoder.encode([text])[0]
                lists = {
                    "dense text": self.index.search("text", qt, DEPTH)[0],
                    "dense head": self._ranked(dense, text),
                    "lexical": self.index.search_lexical(text, DEPTH)[0],
                }
                lists["rrf"] = rrf(lists["dense text"], lists["lexical"])
                for ranker, ranked in lists.items():
                    per.setdefault(ranker, []).append(
                        measure(ranked, self.pos, grades, RELEVANT[name])
                    )
            out[name] = _mean(per)
        return out

    def fused(self, version: str) -> dict[str, dict[str, float]]:
        """What the service shows with head `version`, per query set."""
        searcher = self.searcher(version)
        return {
            name: _mean(
                {
                    "fused": [
                        measure(self._ranked(searcher, t), self.pos, g, RELEVANT[name])
                        for t, g in qs
                    ]
                }
            )["fused"]
            for name, qs in self.queries.items()
        }

    def mix(self, version: str) -> dict[str, list[float]] | None:
        """The head's hybrid mix weights per query type (MIX order)."""
        head, _ = load_head(self.settings.data_dir / "heads" / version)
        if head.mix is None:
            return None
        weights = head.mix.tolist()
        return {t: [round(w, 3) for w in row] for t, row in zip(QUERY_TYPES, weights, strict=True)}

    def latency(self, rounds: int = 5, block: int = 20) -> dict[str, float]:
        """Median in-process time of a text search (k=10, query vectors cached, so encoding is
        left out) with the lexical channel and the mix, and without either as the service was
        before them: blocks of `block` queries alternate between the two so both see the same
        machine."""
        texts = [t for qs in self.queries.values() for t, _ in qs]
        hybrid, dense = self.searcher(self.bootstrap), self.searcher(self.bootstrap, hybrid=False)
        for t in texts:  # fill both query caches
            hybrid.search(SearchQuery(text=t, k=10))
            dense.search(SearchQuery(text=t, k=10))
        times: dict[str, list[float]] = {"hybrid": [], "dense": []}
        for _ in range(rounds):
            for start in range(0, len(texts), block):
                for name, searcher in (("hybrid", hybrid), ("dense", dense)):
                    if name == "dense":  # the service before the lexical channel
                        self.index.search_lexical = _no_lexical  # type: ignore[method-assign]
                    try:
                        for t in texts[start : start + block]:
                            began = time.perf_counter()
                            searcher.search(SearchQuery(text=t, k=10))
                            times[name].append(time.perf_counter() - began)
                    finally:
                        self.index.__dict__.pop("search_lexical", None)
        p50 = {name: float(np.median(ts)) * 1000 for name, ts in times.items()}
        return {
            "hybrid_p50_ms": p50["hybrid"],
            "dense_p50_ms": p50["dense"],
            "growth_ms": p50["hybrid"] - p50["dense"],
        }

    def _ranked(self, searcher: Searcher, text: str) -> np.ndarray:
        hits = searcher.search(SearchQuery(text=text, k=DEPTH)).hits
        return np.array([self.index.row_of[h.product.id] for h in hits], np.int64)


def tie_ceiling(grades: np.ndarray) -> float:
    """Expected NDCG@10 of a ranker that knows which words the shopper meant (typos undone) but
    cannot tell the wanted product from others whose titles hold all of them: the wanted one
    at a uniformly random place among them, then the rest by grade. The known-item set's
    yardstick, since nothing in the query tells those products apart."""
    rest = np.sort(grades[grades < 3])[::-1][:10].astype(np.float64)
    ties = int((grades == 2).sum()) + 1
    ideal = np.concatenate([[3.0], rest[:9]])
    total = 0.0
    for at in range(min(ties, 10)):
        shown = np.concatenate([rest[:at], [3.0], rest[at:9]])
        total += ndcg_at_10(shown, ideal)
    return (total + max(0, ties - 10) * ndcg_at_10(rest[:10], ideal)) / ties


def _no_lexical(
    text: str, n: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.float32)


def _mean(per: Mapping[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {r: {k: float(np.mean([m[k] for m in v])) for k in v[0]} for r, v in per.items()}


def query_sets(n: int) -> Queries:
    rows = load_rows()
    ids, titles = [r["id"] for r in rows], [r["productDisplayName"] for r in rows]
    known, relevance = KnownItemGrades(ids, titles), Relevance(rows)
    return {
        "known-item": [(q.text, known.grades(q)) for q in make_known_item_queries(ids, titles, n)],
        "attribute": [
            (q.text, relevance.grades(q.target))
            for q in make_queries(rows, {}, n)
            if q.kind == "text" and q.text
        ],
    }


def ensure_titles_index(data_dir: Path) -> None:
    """The fashion catalog with only an id and a title, ingested into `data_dir` once."""
    from service.cli import ingest

    if current(data_dir / "index") is not None:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "titles.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title"])
        writer.writerows((r["id"], r["productDisplayName"]) for r in load_rows())
    ingest(path, data_dir=data_dir)


def learn(
    bench: Bench, steps: list[int], mix: dict[str, float], photos: Mapping[str, Path] | None
) -> list[dict[str, Any]]:
    """Simulated sessions through a real server on a fresh copy of the database, a refresh by
    hand after each step, and the fused ranker measured with the head then active."""
    data_dir = bench.settings.data_dir
    with tempfile.TemporaryDirectory(prefix="fr-hybrid-") as tmp:
        db = Path(tmp) / "fusionrank.db"
        fresh_database(data_dir, db)
        env = {"FUSIONRANK_DATABASE_URL": f"sqlite:///{db}", **REFRESH_ON_REQUEST}
        proc, url = start_server(data_dir, env=env)
        rows: list[dict[str, Any]] = []
        try:
            sim = Simulator(url, CATALOG, mix=mix, photos=photos)
            done = 0
            for step in steps:
                report = sim.run(step - done, seed=3000 + step, concurrency=4, progress=True)
                done = step
                row = {"sessions": step, "failed_sessions": report.failed}
                row |= refresh_row(url, proc.pid)
                version = httpx.get(f"{url}/v1/models", timeout=30).json()["active"]
                row |= {"version": version, "mix": bench.mix(version)}
                rows.append({**row, "fused": bench.fused(version)})
                print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    return rows


def targets(results: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for catalog, res in results.items():
        base, before = res["baselines"], res["before"]
        for name, per in base.items():
            ndcg = before[name]["ndcg@10"]
            out[f"{catalog} {name}: fused before clicks >= rrf"] = ndcg >= per["rrf"]["ndcg@10"]
            if name == "known-item":
                best = max(per[r]["ndcg@10"] for r in ("dense text", "dense head", "lexical"))
                out[f"{catalog} known-item: fused >= 1.05x best single"] = ndcg >= 1.05 * best
            if name == "attribute" and catalog == "fashion":
                out["fashion attribute: fused >= 0.99x dense head"] = (
                    ndcg >= 0.99 * per["dense head"]["ndcg@10"]
                )
        out[f"{catalog}: search p50 grows <= 1 ms"] = res["latency"]["growth_ms"] <= 1.0
        curve = [before] + [row["fused"] for row in res["learning"]]
        if len(curve) > 1:
            for name in base:
                first, last = curve[0][name]["ndcg@10"], curve[-1][name]["ndcg@10"]
                if catalog == "titles-only":
                    out[f"{catalog} {name}: learning lifts it >= 1.05x"] = last >= 1.05 * first
                else:
                    out[f"{catalog} {name}: learning lifts it"] = last > first
            out[f"{catalog}: no promoted drop"] = all(
                curve[i + 1][n]["ndcg@10"] >= curve[i][n]["ndcg@10"] - DROP_TOLERANCE
                for i, row in enumerate(res["learning"])
                if row["promoted"]
                for n in base
            )
    return out


def print_table(results: dict[str, Any], steps: list[int]) -> None:
    print("\nhybrid retrieval, synthetic queries (NDCG@10 / recall@100)")
    cols = ["dense text", "dense head", "lexical", "rrf", "fused"] + [f"after {s}" for s in steps]
    print(f"{'catalog':12} {'set':11}" + "".join(f"{c:>17}" for c in cols))
    for catalog, res in results.items():
        for name, per in res["baselines"].items():
            cells = [per[r] for r in ("dense text", "dense head", "lexical", "rrf")]
            cells += [res["before"][name]] + [row["fused"][name] for row in res["learning"]]
            text = "".join(f"{m['ndcg@10']:>9.4f} / {m['recall@100']:.3f}" for m in cells)
            print(f"{catalog:12} {name:11}{text}")
    print("\ntext search in process, encoder cached (median ms): with lexical + mix / without")
    for catalog, res in results.items():
        lat = res["latency"]
        print(
            f"{catalog:12} {lat['hybrid_p50_ms']:.3f} / {lat['dense_p50_ms']:.3f}"
            f"  (+{lat['growth_ms']:.3f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--titles-data-dir", type=Path, default=ROOT / ".bench-data-titles")
    ap.add_argument("--queries", type=int, default=400, help="queries per set")
    ap.add_argument("--steps", default="1000,5000", help="sessions after which to refresh")
    ap.add_argument("--catalogs", default="fashion,titles-only")
    args = ap.parse_args()
    require_shared()
    steps = [int(s) for s in args.steps.split(",") if s]
    queries = query_sets(args.queries)
    results: dict[str, Any] = {}
    for catalog in args.catalogs.split(","):
        if catalog == "fashion":
            ensure_index(args.data_dir)
            data_dir, mix, photos = args.data_dir, KNOWN_ITEM_MIX, shopper_photos()
        else:
            started = time.perf_counter()
            ensure_titles_index(args.titles_data_dir)
            print(f"titles-only index ready in {time.perf_counter() - started:.0f}s")
            data_dir, mix, photos = args.titles_data_dir, {"text": 0.5, "known-item": 0.5}, None
        bench = Bench(data_dir, make_embedder(Settings(data_dir=data_dir)), queries)
        results[catalog] = {
            "baselines": bench.baselines(),
            "before": bench.fused(bench.bootstrap),
            "latency": bench.latency(),
            "learning": learn(bench, steps, mix, photos) if steps else [],
        }
    print_table(results, steps)
    ceiling = float(np.mean([tie_ceiling(g) for _, g in queries["known-item"]]))
    print(f"known-item NDCG@10 ceiling when ties are broken at random: {ceiling:.4f}")
    checks = targets(results)
    print_targets(checks)
    payload = {
        "synthetic": True,
        "steps": steps,
        "known_item_tie_ceiling": ceiling,
        "results": results,
        "targets": checks,
    }
    print(f"wrote {write_json('hybrid', payload)}")


if __name__ == "__main__":
    main()
