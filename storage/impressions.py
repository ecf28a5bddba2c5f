"""Impression repository: every answered search and what it showed, for the learner."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from storage.db import chunks, insert_for, time_chunks
from storage.models import FeedbackEvent, Impression, ImpressionItem, QueryEmbedding


@dataclass(frozen=True, slots=True)
class ShownItem:
    product_id: str
    score: float
    model_position: int
    propensity: float
    memory: float = 0.0  # the query memory's lift it was ranked with


@dataclass(frozen=True, slots=True)
class QueryVector:
    key: str  # sha256 of the query text or image bytes
    encoder: str
    vector: bytes  # float32


@dataclass(frozen=True, slots=True)
class ImpressionIn:
    search_id: str
    created_at: datetime
    query_text: str | None
    has_image: bool
    image_sha256: str | None
    query_type: str
    filters: dict[str, Any] | None
    user_id: str | None
    model_version: str
    k: int
    latency_ms: float
    items: list[ShownItem]  # in shown order: position = index + 1
    explore: bool = False
    vectors: tuple[QueryVector, ...] = ()
    caller: str | None = None  # the API key's fingerprint; None without keys


_ITEM_COLUMNS = (
    "search_id",
    "position",
    "created_at",
    "product_id",
    "score",
    "model_position",
    "propensity",
    "memory",
)


def _executemany(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT rows of values the driver takes as they are (str, int, float, and values already
    converted for the dialect) through its own executemany: SQLAlchemy's per-row parameter
    processing has nothing left to convert for them."""
    conn = session.connection()
    quote = conn.dialect.identifier_preparer.quote
    style = conn.dialect.paramstyle
    assert style in ("qmark", "format", "pyformat"), f"no positional marks for {style}"
    mark = "?" if style == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) "
        f"VALUES ({', '.join([mark] * len(columns))})",
        rows,
    )


def add_impressions(*, session: Session, impressions: list[ImpressionIn]) -> None:
    """Bulk insert: one executemany per table, whatever the batch size. The impression writer
    holds the GIL that searches need, so this is lean: Core inserts, not the ORM's bulk path,
    and the shown items (20 rows a search) go to the driver as plain tuples, about half the CPU
    of the ORM's path."""
    if not impressions:
        return
    session.connection().execute(
        insert(Impression),
        [
            {
                "search_id": i.search_id,
                "created_at": i.created_at,
                "query_text": i.query_text,
                "has_image": i.has_image,
                "image_sha256": i.image_sha256,
                "query_type": i.query_type,
                "filters": i.filters,
                "user_id": i.user_id,
                "caller": i.caller,
                "model_version": i.model_version,
                "k": i.k,
                "latency_ms": i.latency_ms,
                "explore": i.explore,
            }
            for i in impressions
        ],
    )
    # the search's time as the dialect stores it (SQLite: text), converted once per search
    dialect = session.connection().dialect
    to_db = ImpressionItem.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    times = [to_db(i.created_at) if to_db else i.created_at for i in impressions]
    items = [
        (
            i.search_id,
            pos,
            at,
            it.product_id,
            it.score,
            it.model_position,
            it.propensity,
            it.memory,
        )
        for i, at in zip(impressions, times, strict=True)
        for pos, it in enumerate(i.items, start=1)
    ]
    if items:
        _executemany(session, ImpressionItem.__tablename__, _ITEM_COLUMNS, items)
    vectors = {(v.key, v.encoder): v for i in impressions for v in i.vectors}
    if vectors:
        session.connection().execute(
            insert_for(session)(QueryEmbedding).on_conflict_do_nothing(),
            [{"key": k, "encoder": e, "vector": v.vector} for (k, e), v in vectors.items()],
        )


def mark_holdout(*, session: Session, hold: Iterable[str], release: Iterable[str]) -> None:
    """Mark searches as held out by a refresh (`hold`), and unmark those given to training."""
    for ids, value in ((sorted(hold), True), (sorted(release), False)):
        for chunk in chunks(ids, 500):
            session.execute(
                update(Impression).where(Impression.search_id.in_(chunk)).values(holdout=value)
            )


# (search_id, created_at, query_type, query_text, image_sha256, explore, filters)
SearchRow = tuple[str, datetime, str, str | None, str | None, bool, dict[str, Any] | None]


def logged_searches(
    *,
    session: Session,
    start: datetime | None = None,
    end: datetime | None = None,
    with_events_only: bool = False,
    holdout: bool | None = None,
    query_type: str | None = None,
    limit: int | None = None,
    sample: bool = False,
) -> list[SearchRow]:
    """Searches logged in [start, end), oldest first: the newest `limit` if given, or a uniform
    random `limit` of them with `sample`. `holdout`: only those held out (True) or only those not
    (False); `with_events_only`: only those with feedback."""
    imp = Impression
    # columns, not ORM entities: a refresh reads hundreds of thousands of shown items
    q = select(
        imp.search_id,
        imp.created_at,
        imp.query_type,
        imp.query_text,
        imp.image_sha256,
        imp.explore,
        imp.filters,
    )
    if start is not None:
        q = q.where(imp.created_at >= start)
    if end is not None:
        q = q.where(imp.created_at < end)
    if holdout is not None:
        q = q.where(imp.holdout.is_(holdout))
    if query_type is not None:
        q = q.where(imp.query_type == query_type)
    if with_events_only:
        q = q.where(
            select(FeedbackEvent.id).where(FeedbackEvent.search_id == imp.search_id).exists()
        )
    newest = (imp.created_at.desc(), imp.search_id)
    q = q.order_by(func.random()) if sample else q.order_by(*newest)
    if limit is not None:
        q = q.limit(limit)
    return sorted(session.execute(q).tuples(), key=lambda i: (i[1], i[0]))


def engaged_per_type(*, session: Session, end: datetime) -> dict[str, int]:
    """Per query type, how many searches logged before `end`, not held out, have feedback."""
    engaged = select(FeedbackEvent.id).where(FeedbackEvent.search_id == Impression.search_id)
    rows = session.execute(
        select(Impression.query_type, func.count())
        .where(Impression.created_at < end, Impression.holdout.is_(False), engaged.exists())
        .group_by(Impression.query_type)
    ).tuples()
    return dict(rows.all())


def shown_items(
    *, session: Session, searches: Iterable[tuple[str, datetime]]
) -> Iterator[tuple[str, str, int, int | None, float | None, float | None]]:
    """(search_id, product_id, position, model_position, propensity, memory) of every product
    those (search_id, created_at) showed, in shown order per search."""
    item = ImpressionItem
    for chunk, first, last in time_chunks(searches, 500):
        yield from session.execute(
            select(
                item.search_id,
                item.product_id,
                item.position,
                item.model_position,
                item.propensity,
                item.memory,
            )
            .where(item.search_id.in_(chunk), item.created_at.between(first, last))
            .order_by(item.search_id, item.position)
        ).tuples()


def query_vectors(*, session: Session, keys: Sequence[str], encoder: str) -> dict[str, bytes]:
    """The logged vectors (float32 bytes) of `encoder` for those content keys, where kept."""
    out: dict[str, bytes] = {}
    for chunk in chunks(sorted(set(keys)), 500):
        rows = session.execute(
            select(QueryEmbedding.key, QueryEmbedding.vector).where(
                QueryEmbedding.encoder == encoder, QueryEmbedding.key.in_(chunk)
            )
        )
        out.update(rows.tuples().all())  # a list: a Result has keys() and would be read as a map
    return out
