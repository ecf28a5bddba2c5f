"""Which engine serves the lexical channel: bm25s, tantivy, SQLite FTS5 or PostgreSQL full-text,
measured side by side on the same terms (service.catalog.tokens) at 44k real titles and at 1M.

The 1M catalog is synthetic: each product is a real title and attribute text from the fashion
catalog with a made-up model number ("KX-4821") and one more real word; the queries are
synthetic too: two or three of a product's own words, or its model number (known-item lookups).
Per engine: build seconds, size on disk, query p50/p99 for the top 100, the cost of one upsert
made visible to search, and whether the sought product is in the top 10 (a sanity check that
each engine ranks by something like BM25).

    python -m benchmarks.lexical_engines [--sizes 44072,1000000] [--queries 300]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from benchmarks.common import CATALOG, require_shared, write_json
from service.catalog.files import product_text, read_catalog
from service.catalog.lexical import LexicalIndex
from service.catalog.tokens import query_terms, terms

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


class Engine(Protocol):
    def build(self, docs: Sequence[list[str]]) -> None: ...
    def search(self, q: list[str], n: int) -> list[int]: ...
    def upsert(self, row: int, doc: list[str]) -> None: ...
    def size_bytes(self) -> int: ...
    def close(self) -> None: ...


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Tantivy:
    """service.catalog.lexical.LexicalIndex as fusionrank runs it: saved, then opened as a
    working copy."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def build(self, docs: Sequence[list[str]]) -> None:
        built = LexicalIndex.build((d, []) for d in docs)
        built.save(self.tmp / "saved")
        built.close()
        self.index = LexicalIndex.load(self.tmp / "saved")

    def search(self, q: list[str], n: int) -> list[int]:
        return list(self.index.search_terms(q, n)[0])

    def upsert(self, row: int, doc: list[str]) -> None:
        self.index.upsert(row + 10_000_000, (doc, []), replaces=row)

    def size_bytes(self) -> int:
        return _dir_size(self.tmp / "saved")

    def close(self) -> None:
        self.index.close()


class BM25S:
    """bm25s: a sparse matrix of precomputed scores; a change means building it again."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def build(self, docs: Sequence[list[str]]) -> None:
        import bm25s

        self.docs = list(docs)
        self.model = bm25s.BM25()
        self.model.index(self.docs, show_progress=False)
        self.model.save(str(self.tmp / "bm25s"))

    def search(self, q: list[str], n: int) -> list[int]:
        vocab = self.model.vocab_dict
        ids = [vocab[t] for t in q if t in vocab]
        if not ids:
            return []
        scores = self.model.get_scores(ids)
        top = np.argpartition(-scores, n)[:n]
        top = top[np.argsort(-scores[top])]
        return [int(i) for i in top if scores[i] > 0]

    def upsert(self, row: int, doc: list[str]) -> None:
        self.docs[row] = doc
        self.model.index(self.docs, show_progress=False)

    def size_bytes(self) -> int:
        return _dir_size(self.tmp / "bm25s")

    def close(self) -> None:
        pass


class FTS5:
    """SQLite FTS5 over the same terms (its own tokenizer splits only on spaces here)."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "fts5.sqlite"

    def build(self, docs: Sequence[list[str]]) -> None:
        self.db = sqlite3.connect(self.path)
        self.db.execute(
            "CREATE VIRTUAL TABLE docs USING fts5(terms, tokenize=\"unicode61 tokenchars '-./'\")"
        )
        self.db.executemany(
            "INSERT INTO docs(rowid, terms) VALUES (?, ?)",
            ((i, " ".join(d)) for i, d in enumerate(docs)),
        )
        self.db.commit()

    def search(self, q: list[str], n: int) -> list[int]:
        match = " OR ".join(f'"{t}"' for t in q)
        cur = self.db.execute(
            "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rank LIMIT ?", (match, n)
        )
        return [r[0] for r in cur]

    def upsert(self, row: int, doc: list[str]) -> None:
        self.db.execute("DELETE FROM docs WHERE rowid = ?", (row,))
        self.db.execute("INSERT INTO docs(rowid, terms) VALUES (?, ?)", (row, " ".join(doc)))
        self.db.commit()

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        self.db.close()


class Postgres:
    """PostgreSQL full-text: a GIN index over tsvectors of the same terms, ts_rank to order
    (not BM25: it knows no document frequencies)."""

    def build(self, docs: Sequence[list[str]]) -> None:
        import psycopg

        self.db = psycopg.connect(PG_URL, autocommit=True)
        self.db.execute("DROP TABLE IF EXISTS lexical_bench")
        self.db.execute("CREATE UNLOGGED TABLE lexical_bench (row int PRIMARY KEY, terms text[])")
        with self.db.cursor().copy("COPY lexical_bench (row, terms) FROM STDIN") as copy:
            for i, d in enumerate(docs):
                copy.write_row((i, d))
        self.db.execute("ALTER TABLE lexical_bench ADD COLUMN tsv tsvector")
        self.db.execute("UPDATE lexical_bench SET tsv = array_to_tsvector(terms)")
        self.db.execute("CREATE INDEX lexical_bench_tsv ON lexical_bench USING gin (tsv)")
        self.db.execute("VACUUM ANALYZE lexical_bench")

    def search(self, q: list[str], n: int) -> list[int]:
        query = " | ".join(f"'{t}'" for t in q)
        cur = self.db.execute(
            "SELECT row FROM lexical_bench, CAST(%s AS tsquery) q WHERE tsv @@ q "
            "ORDER BY ts_rank(tsv, q) DESC LIMIT %s",
            (query, n),
        )
        return [r[0] for r in cur]

    def upsert(self, row: int, doc: list[str]) -> None:
        self.db.execute(
            "UPDATE lexical_bench SET terms = %s, tsv = array_to_tsvector(%s) WHERE row = %s",
            (doc, doc, row),
        )

    def size_bytes(self) -> int:
        cur = self.db.execute("SELECT pg_total_relation_size('lexical_bench')")
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS lexical_bench")
        self.db.close()


ENGINES: dict[str, Callable[[Path], Engine]] = {
    "tantivy": Tantivy,
    "bm25s": BM25S,
    "sqlite-fts5": FTS5,
    "postgresql-fts": lambda tmp: Postgres(),
}


def catalog_texts(size: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """`size` product texts and their model numbers: the real catalog first, then synthetic
    products made from it."""
    base = [product_text(r.title, r.attributes) for r in read_catalog(CATALOG)]
    words = [w for t in base[:2000] for w in t.split() if w.isalpha()]
    texts, models = [], []
    for i in range(size):
        model = f"{rng.choice('ABCDEFGHKMPRSTXZ')}{rng.choice('ABCDEFGHKMPRSTXZ')}-{i % 9973:04d}"
        text = base[i] if i < len(base) else f"{rng.choice(base)} {rng.choice(words)}"
        texts.append(f"{text} {model}")
        models.append(model)
    return texts, models


def make_queries(texts: list[str], models: list[str], n: int, rng: random.Random):
    out = []
    for row in rng.sample(range(len(texts)), n):
        if rng.random() < 0.25:
            out.append((row, models[row].lower().replace("-", "")))
        else:
            words = texts[row].split(".")[0].split()
            out.append((row, " ".join(rng.sample(words, min(len(words), rng.choice((2, 3)))))))
    return out


def measure(name: str, docs: list[list[str]], queries, tmp: Path) -> dict[str, float]:
    engine = ENGINES[name](tmp)
    started = time.perf_counter()
    engine.build(docs)
    build_s = time.perf_counter() - started
    laps, found = [], 0
    for row, text in queries:
        t0 = time.perf_counter()
        rows = engine.search(query_terms(text), 100)
        laps.append((time.perf_counter() - t0) * 1000)
        found += row in rows[:10]
    upserts = []
    for row, _ in queries[: 5 if name == "bm25s" else 50]:
        t0 = time.perf_counter()
        engine.upsert(row, docs[row] + ["changed"])
        upserts.append((time.perf_counter() - t0) * 1000)
    out = {
        "build_s": round(build_s, 2),
        "size_mb": round(engine.size_bytes() / 1e6, 1),
        "query_p50_ms": round(float(np.percentile(laps, 50)), 3),
        "query_p99_ms": round(float(np.percentile(laps, 99)), 3),
        "upsert_ms": round(float(np.median(upserts)), 2),
        "known_item_top10": round(found / len(queries), 3),
    }
    engine.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="44072,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    require_shared()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        rng = random.Random(size)
        texts, models = catalog_texts(size, rng)
        docs = [terms(t) for t in tqdm(texts, desc=f"terms of {size:,} titles", unit="title")]
        queries = make_queries(texts, models, args.queries, rng)
        for name in args.engines.split(","):
            tmp = Path(tempfile.mkdtemp(prefix="lexical-bench-"))
            try:
                results.setdefault(str(size), {})[name] = measure(name, docs, queries, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            print(size, name, results[str(size)][name], flush=True)
    cols = ("build_s", "size_mb", "query_p50_ms", "query_p99_ms", "upsert_ms", "known_item_top10")
    print(f"\n{'titles':>9} {'engine':<15}" + "".join(f"{c:>17}" for c in cols))
    for size, per in results.items():
        for name, row in per.items():
            print(f"{int(size):>9,} {name:<15}" + "".join(f"{row[c]:>17}" for c in cols))
    print(f"\nwrote {write_json('lexical_engines', {'results': results})}")


if __name__ == "__main__":
    main()
