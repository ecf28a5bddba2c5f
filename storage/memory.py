"""Query memory repository: the logs a fold reads, the rows it writes, and what followers read.

One fold at a time writes (service.search.memory holds a lease for it), and each fold numbers
the rows it writes, so a follower reads exactly what changed since the fold it saw last.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, func, select, tuple_
from sqlalchemy.orm import Session

from storage.db import chunks, insert_for
from storage.models import (
    FeedbackEvent,
    Impression,
    ImpressionItem,
    MemoryCursor,
    MemoryPair,
    MemoryQuery,
    MemoryShopper,
    as_utc,
)

_CHUNK = 400  # (key, product) pairs per IN (...) list
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    impressions_until: datetime
    events_until: datetime
    fold: int


@dataclass(frozen=True, slots=True)
class LoggedQuery:
    """Who searched what: the part of an impression the memory keys and counts by."""

    search_id: str
    created_at: datetime
    query_text: str | None
    image_sha256: str | None
    query_type: str
    user_id: str | None
    caller: str | None


def cursor(*, session: Session) -> Cursor:
    row = session.get(MemoryCursor, 1)
    if row is None:
        return Cursor(BEGINNING, BEGINNING, 0)
    return Cursor(as_utc(row.impressions_until), as_utc(row.events_until), row.fold)


def set_cursor(*, session: Session, c: Cursor) -> None:
    session.merge(
        MemoryCursor(
            id=1, impressions_until=c.impressions_until, events_until=c.events_until, fold=c.fold
        )
    )


def _query_columns() -> tuple[Any, ...]:
    imp = Impression
    return (
        imp.search_id,
        imp.created_at,
        imp.query_text,
        imp.image_sha256,
        imp.query_type,
        imp.user_id,
        imp.caller,
    )


def _logged(row: Sequence[Any]) -> LoggedQuery:
    return LoggedQuery(row[0], as_utc(row[1]), *row[2:7])


def _whole_runs(rows: Sequence[Any], at: int, limit: int) -> Sequence[Any]:
    """At most about `limit` rows, oldest first, never ending inside a run of equal times
    (column `at`): the next batch starts after the last time read, so it misses none."""
    if len(rows) <= limit:
        return rows
    last = as_utc(rows[limit][at])
    kept = [r for r in rows if as_utc(r[at]) < last]
    return kept or rows


def new_impressions(
    *, session: Session, after: datetime, until: datetime, limit: int
) -> list[tuple[LoggedQuery, list[tuple[str, int, float | None]]]]:
    """Searches created in (after, until], oldest first, at most about `limit`, each with its
    shown (product id, position, propensity)."""
    rows = session.execute(
        select(*_query_columns())
        .where(Impression.created_at > after, Impression.created_at <= until)
        .order_by(Impression.created_at)
        .limit(limit + 1)
    ).all()
    searches = [_logged(r) for r in _whole_runs(rows, 1, limit)]
    items: dict[str, list[tuple[str, int, float | None]]] = {s.search_id: [] for s in searches}
    for chunk in chunks([s.search_id for s in searches], 500):
        for sid, pid, pos, prop in session.execute(
            select(
                ImpressionItem.search_id,
                ImpressionItem.product_id,
                ImpressionItem.position,
                ImpressionItem.propensity,
            ).where(ImpressionItem.search_id.in_(chunk))
        ):
            items[sid].append((pid, pos, prop))
    return [(s, items[s.search_id]) for s in searches]


def new_events(
    *, session: Session, after: datetime, until: datetime, limit: int
) -> list[tuple[datetime, LoggedQuery, str, str]]:
    """Events received in (after, until], oldest first, at most about `limit`: (received at,
    its search, product id, type)."""
    ev = FeedbackEvent
    rows = session.execute(
        select(ev.received_at, ev.product_id, ev.type, *_query_columns())
        .join(Impression, Impression.search_id == ev.search_id)
        .where(ev.received_at > after, ev.received_at <= until)
        .order_by(ev.received_at)
        .limit(limit + 1)
    ).all()
    return [(as_utc(r[0]), _logged(r[3:]), r[1], r[2]) for r in _whole_runs(rows, 0, limit)]


ShopperKey = tuple[str, str, str]  # (query key, product id, shopper)


def shoppers(
    *, session: Session, keys: Sequence[ShopperKey]
) -> dict[ShopperKey, tuple[float, float, str]]:
    """What each (query, product, shopper) has given before: (examination, grade, types)."""
    out: dict[ShopperKey, tuple[float, float, str]] = {}
    s = MemoryShopper
    for chunk in chunks(sorted(set(keys)), _CHUNK):
        for key, pid, shopper, exam, grade, types in session.execute(
            select(s.key, s.product_id, s.shopper, s.exam, s.grade, s.types).where(
                tuple_(s.key, s.product_id, s.shopper).in_(chunk)
            )
        ):
            out[(key, pid, shopper)] = (exam, grade, types)
    return out


def put_shoppers(*, session: Session, rows: list[dict[str, Any]]) -> None:
    _upsert(session, MemoryShopper, rows, ["key", "product_id", "shopper"])


def pairs(
    *, session: Session, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[float, float, dict[str, float], float]]:
    """The stored (examinations, gain, events per type, at) of these (query key, product id)."""
    out: dict[tuple[str, str], tuple[float, float, dict[str, float], float]] = {}
    p = MemoryPair
    for chunk in chunks(sorted(set(keys)), _CHUNK):
        for key, pid, exam, gain, events, at in session.execute(
            select(p.key, p.product_id, p.exam, p.gain, p.events, p.at).where(
                tuple_(p.key, p.product_id).in_(chunk)
            )
        ):
            out[(key, pid)] = (exam, gain, dict(events), at)
    return out


def put_pairs(*, session: Session, rows: list[dict[str, Any]]) -> None:
    _upsert(session, MemoryPair, rows, ["key", "product_id"])


def queries(*, session: Session, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The stored (searches, at) of these query keys."""
    q = MemoryQuery
    out: dict[str, tuple[float, float]] = {}
    for chunk in chunks(sorted(set(keys)), _CHUNK):
        out.update(
            (k, (n, at))
            for k, n, at in session.execute(select(q.key, q.searches, q.at).where(q.key.in_(chunk)))
        )
    return out


def put_queries(*, session: Session, rows: list[dict[str, Any]]) -> None:
    """Upsert queries; a stored wording and vector are kept (the first wording names it)."""
    if not rows:
        return
    stmt = insert_for(session)(MemoryQuery)
    keep = {"searches", "at", "fold"}
    for chunk in chunks(rows, 500):
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["key"], set_={c: getattr(stmt.excluded, c) for c in keep}
            ),
            list(chunk),
        )


def _upsert(session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    stmt = insert_for(session)(model)
    update = {c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys}
    for chunk in chunks(rows, 500):
        session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update), list(chunk))


def changed_pairs(
    *, session: Session, after_fold: int, batch: int = 50_000
) -> Iterator[tuple[str, str, float, float, float, int]]:
    """(key, product id, gain, exam, at, fold) of pairs written by folds after `after_fold`,
    in fold order, read a batch at a time so a follower's first load stays bounded."""
    p = MemoryPair
    last = (after_fold + 1, "", "")  # keys are never empty: every row of later folds is after
    while True:
        rows = session.execute(
            select(p.key, p.product_id, p.gain, p.exam, p.at, p.fold)
            .where(tuple_(p.fold, p.key, p.product_id) > last)
            .order_by(p.fold, p.key, p.product_id)
            .limit(batch)
        ).all()
        yield from (tuple(r) for r in rows)  # type: ignore[misc]
        if len(rows) < batch:
            return
        last = (rows[-1][5], rows[-1][0], rows[-1][1])


def changed_queries(
    *, session: Session, after_fold: int
) -> Iterator[tuple[str, str, str, bytes | None, float]]:
    """(key, kind, normal form, vector, searches) of queries written after `after_fold`."""
    q = MemoryQuery
    yield from session.execute(
        select(q.key, q.kind, q.text, q.vector, q.searches).where(q.fold > after_fold)
    ).tuples()


def last_fold(*, session: Session) -> int:
    return cursor(session=session).fold


def memory_of(*, session: Session, key: str) -> tuple[MemoryQuery | None, list[MemoryPair]]:
    """A query's row and its pairs, for reading (the memory endpoint)."""
    return session.get(MemoryQuery, key), list(
        session.scalars(select(MemoryPair).where(MemoryPair.key == key))
    )


def purge_memory(*, session: Session, before: float, max_pairs: int) -> int:
    """Delete the memory not updated since `before` (epoch seconds), then the least recently
    updated pairs beyond `max_pairs`. Returns how many pairs went."""
    for model in (MemoryShopper, MemoryQuery):
        session.execute(delete(model).where(model.at < before))
    gone = _deleted(session, delete(MemoryPair).where(MemoryPair.at < before))
    count = int(session.scalar(select(func.count()).select_from(MemoryPair)) or 0)
    if count > max_pairs:
        cut = session.scalar(
            select(MemoryPair.at).order_by(MemoryPair.at).offset(count - max_pairs).limit(1)
        )
        if cut is not None:
            gone += _deleted(session, delete(MemoryPair).where(MemoryPair.at < cut))
            session.execute(delete(MemoryShopper).where(MemoryShopper.at < cut))
    return gone


def _deleted(session: Session, stmt: Delete) -> int:
    result = cast(CursorResult[Any], session.execute(stmt))
    return result.rowcount or 0
