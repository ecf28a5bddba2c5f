"""The logs benchmarks.refresh_at_scale refreshes on: distinct queries searched once by the real
Searcher, then logged many times over, Zipf-popular within their type, with position-biased
events, through the storage layer's writers into a PostgreSQL database."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from benchmarks.common import load_rows, shopper_photos

MIX = {"text": 0.8, "image": 0.1, "composed": 0.1}
K, DEEPER, ETA, DAYS = 20, 10, 1.0, 7


@dataclass
class Served:
    """One distinct query as searched once: what every logged search of it shows and logs."""

    kind: str
    text: str | None
    image_sha256: str | None
    query_type: str
    model_version: str
    ids: list[str]  # the top K + DEEPER, ranked
    scores: list[float]
    grades: list[int]  # the shopper's true grade of each
    vectors: tuple[Any, ...]  # storage.impressions.QueryVector, as the API logs them


def fresh_database(url: str) -> None:
    from storage.db import make_engine

    base, name = url.rsplit("/", 1)
    admin = make_engine(f"{base}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()


def distinct_queries(n_known: int, n_photos: int) -> dict[str, list[Any]]:
    """Per kind, the distinct queries with their true grades: (text, photo, grade of a row)."""
    from shoppers.grades import Relevance
    from shoppers.known_items import KnownItemGrades, make_known_item_queries
    from shoppers.phrasings import PHRASINGS
    from shoppers.queries import make_queries

    rows = load_rows()
    relevance = Relevance(rows)
    by_text: dict[str, dict[str, str]] = {}
    for i, phrasing in enumerate(sorted(PHRASINGS)):
        for q in make_queries(rows, {}, 20_000, seed=i, phrasings=phrasing):
            by_text.setdefault(q.text or "", q.target)
    needs = list(by_text.items())
    random.Random(1).shuffle(needs)
    ids, titles = [r["id"] for r in rows], [r["productDisplayName"] for r in rows]
    known = KnownItemGrades(ids, titles)
    items = {q.text: q for q in make_known_item_queries(ids, titles, n_known, seed=5)}
    texts = [(t, None, lambda t=t: relevance.grades(by_text[t])) for t, _ in needs]
    texts += [(t, None, lambda q=q: known.grades(q)) for t, q in items.items() if t not in by_text]
    photo_queries = make_queries(rows, shopper_photos(), n_photos, seed=9)
    out: dict[str, list[Any]] = {"text": texts, "image": [], "composed": []}
    for q in photo_queries:
        if q.kind in ("image", "composed"):
            grade = lambda t=q.target: relevance.grades(t)  # noqa: E731
            out[q.kind].append((q.text, q.photo, grade))
    return out


def serve_queries(data_dir: Path, queries: dict[str, list[Any]]) -> dict[str, list[Served]]:
    """Each distinct query encoded (texts in batches) and searched once."""
    from tqdm import tqdm

    searcher = _searcher(data_dir, queries)
    row_of = {r["id"]: i for i, r in enumerate(load_rows())}
    out: dict[str, list[Served]] = {}
    for kind, qs in queries.items():
        served = out.setdefault(kind, [])
        for query_text, photo, grade_of in tqdm(qs, desc=f"search {kind}", unit="query"):
            found = _search_once(searcher, kind, query_text, photo)
            if found is not None:
                grades = grade_of()
                found.grades = [int(grades[row_of[p]]) for p in found.ids]
                served.append(found)
    searcher.close()
    return out


def _searcher(data_dir: Path, queries: dict[str, list[Any]]) -> Any:
    """The real Searcher on the data dir's build and head, every distinct text encoded."""
    from tqdm import tqdm

    from model.checkpoint import load_head
    from service.catalog.index import CatalogIndex
    from service.config import Settings
    from service.encoding.embedder import make_embedder
    from service.search.searcher import ActiveHead, Searcher
    from storage.artifacts import current

    settings = Settings(data_dir=data_dir)
    build = current(settings.index_dir)
    assert build is not None, f"no index in {settings.index_dir}"
    index = CatalogIndex.load(build)
    version = index.meta["head_version"]
    head, _ = load_head(data_dir / "heads" / version)
    embedder = make_embedder(settings)
    n_texts = sum(len(v) for v in queries.values())
    searcher = Searcher(
        embedder,
        index,
        ActiveHead(head, version),
        per_channel=settings.candidates_per_channel,
        query_cache=n_texts,
    )
    all_texts = sorted({t for qs in queries.values() for t, _, _ in qs if t})
    encoder = embedder.text_encoder
    for lo in tqdm(range(0, len(all_texts), 256), desc="encode texts", unit="batch"):
        batch = all_texts[lo : lo + 256]
        for t, vec in zip(batch, encoder.encode(batch), strict=True):
            searcher.text_cache.put(encoder.id, t, vec)
    return searcher


def _search_once(
    searcher: Any, kind: str, query_text: str | None, photo: Path | None
) -> Served | None:
    """The query searched as served and logged as the API logs it (grades not yet set); None
    if it finds fewer than K products."""
    from service.search.impressions import impression_of
    from service.search.searcher import SearchQuery
    from storage.keys import content_key

    data = photo.read_bytes() if photo else None
    sha = content_key(data) if data else None
    result = searcher.search(
        SearchQuery(text=query_text, image=data, image_sha256=sha, k=K + DEEPER)
    )
    if len(result.hits) < K:
        return None
    logged = impression_of(
        result=result,
        searcher=searcher,
        query_text=query_text,
        image_sha256=sha,
        filters=None,
        user_id=None,
        caller=None,
        k=K,
    )
    ids = [h.product.id for h in result.hits]
    scores = [h.score for h in result.hits]
    return Served(
        kind,
        query_text,
        sha,
        result.query_type,
        result.model_version,
        ids,
        scores,
        [],
        logged.vectors,
    )


def write_logs(url: str, served: dict[str, list[Served]], total: int, seed: int = 3) -> float:
    """`total` searches evenly over the DAYS before now, with their events; returns seconds."""
    from tqdm import tqdm

    from storage.db import make_engine, session_factory, transaction
    from storage.feedback import record_events
    from storage.impressions import add_impressions
    from storage.partitions import create_days

    start, step = window_times(total)
    engine = make_engine(url)
    with engine.begin() as conn:
        create_days(conn, [(start + timedelta(d)).date() for d in range(DAYS + 2)])
    sessions = session_factory(engine)
    traffic = _Traffic(served, seed)
    t0 = time.perf_counter()
    for lo in tqdm(range(0, total, 2000), desc="write logs", unit="batch"):
        impressions, events = [], []
        for i in range(lo, min(lo + 2000, total)):
            impression, its_events = traffic.search(search_id(i), start + i * step)
            impressions.append(impression)
            events += its_events
        with transaction(sessions) as s:
            s.execute(text("SET LOCAL synchronous_commit = off"))
            add_impressions(session=s, impressions=impressions)
        with transaction(sessions) as s:
            s.execute(text("SET LOCAL synchronous_commit = off"))
            record_events(session=s, events=events, received_at=impressions[-1].created_at)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


class _Traffic:
    """Logged searches drawn from the served queries: Zipf-popular within a kind, shown as
    serving shows them (exploring at the default rates), with position-biased events."""

    def __init__(self, served: dict[str, list[Served]], seed: int) -> None:
        from model.position_bias import PositionBias
        from service.config import Settings

        self.served, self.rng, self.settings = served, random.Random(seed), Settings()
        self.kinds = list(MIX)
        self.cdfs = {}
        for kind in self.kinds:
            zipf = 1.0 / np.arange(1, len(served[kind]) + 1)
            self.cdfs[kind] = np.cumsum(zipf / zipf.sum())
        self.bias = PositionBias.prior()
        self.logged_vectors: set[tuple[str, str]] = set()  # each query vector is logged once

    def search(self, sid: str, at: datetime) -> tuple[Any, list[Any]]:
        """One logged search (storage.impressions.ImpressionIn) and its events (EventIn)."""
        from model.position_bias import explore_deeper, explore_order
        from shoppers.simulator import reactions
        from storage.feedback import EventIn
        from storage.impressions import ImpressionIn, ShownItem

        rng, kind = self.rng, self.rng.choices(self.kinds, weights=[MIX[k] for k in self.kinds])[0]
        q = self.served[kind][int(np.searchsorted(self.cdfs[kind], rng.random()))]
        shown = list(range(K))
        explore = rng.random() < self.settings.explore_rate
        if explore:
            shown = explore_order(K, rng)
        elif rng.random() < self.settings.explore_deep_rate:
            shown = explore_deeper(shown, list(range(K, len(q.ids))), rng)
        vectors = tuple(v for v in q.vectors if (v.key, v.encoder) not in self.logged_vectors)
        self.logged_vectors.update((v.key, v.encoder) for v in vectors)
        impression = ImpressionIn(
            search_id=sid,
            created_at=at,
            query_text=q.text,
            has_image=q.image_sha256 is not None,
            image_sha256=q.image_sha256,
            query_type=q.query_type,
            filters=None,
            user_id=f"u{rng.randrange(200_000)}",
            model_version=q.model_version,
            k=K,
            latency_ms=10.0,
            items=[
                ShownItem(q.ids[r], q.scores[r], r + 1, self.bias.propensity(pos))
                for pos, r in enumerate(shown, start=1)
            ],
            explore=explore,
            vectors=vectors,
        )
        events = []
        for pos, types in reactions(rng, [q.grades[r] for r in shown], ETA):
            pid, when = q.ids[shown[pos - 1]], at + timedelta(seconds=5 * pos)
            events += [EventIn(sid, pid, t, when, event_id=f"{sid}-{pos}-{t}") for t in types]
        return impression, events


def search_id(i: int) -> str:
    return f"s{i:09d}"


def window_times(total: int) -> tuple[datetime, timedelta]:
    """When the first search was logged, and the time between two, fixed by the fill's day."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    return start, (end - start) / total


def table_sizes(url: str) -> dict[str, Any]:
    from storage.db import make_engine
    from storage.partitions import LOGS

    engine = make_engine(url)
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in (*LOGS, "query_embeddings"):
            out[table] = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return out
