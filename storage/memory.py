"""Query memory repository: the logs a fold reads, the rows it writes, and what followers read.

One fold at a time writes (service.search.memory holds a lease for it, and claim_fold refuses a
second), marking the impressions and events it counted, and each fold numbers the rows it
writes, so a follower reads exactly what changed since the fold it saw last.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import CursorResult, Delete, case, delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from storage.db import chunks, insert_for, time_chunks
from storage.models import (
    FeedbackEvent,
    Impression,
    ImpressionItem,
    MemoryFold,
    MemoryPair,
    MemoryQuery,
    MemoryShopper,
    as_utc,
)

_CHUNK = 400  # second key columns (product ids, shoppers) per IN (...) list


class FoldRace(RuntimeError):
    """Another process folded meanwhile (its lease had lapsed): this fold must not count the
    same logs again."""


@dataclass(frozen=True, slots=True)
class LoggedQuery:
    """Who searched what: the part of an impression the memory keys and counts by."""

    search_id: str
    created_at: datetime
    query_text: str | None
    image_sha256: str | None
    user_id: str | None
    caller: str | None
    query_type: str
    model_version: str


class UnfoldedEvent(NamedTuple):
    id: int  # the row's
    received_at: datetime
    query: LoggedQuery  # of its search
    product_id: str
    type: str
    position: int


def claim_fold(*, session: Session) -> int:
    """The next fold's number, claimed at the start of its transaction: the UPDATE takes the
    write lock (SQLite) or the row's (PostgreSQL), and a fold another process committed since
    this one read the number makes it match no row. FoldRace then, and nothing is counted."""
    session.execute(insert_for(session)(MemoryFold).values(id=1, fold=0).on_conflict_do_nothing())
    last = int(session.scalar(select(MemoryFold.fold).where(MemoryFold.id == 1)) or 0)
    claimed = session.execute(
        update(MemoryFold)
        .where(MemoryFold.id == 1, MemoryFold.fold == last)
        .values(fold=last + 1)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], claimed).rowcount != 1:
        raise FoldRace("another process folded the query memory meanwhile")
    return last + 1


def last_fold(*, session: Session) -> int:
    return int(session.scalar(select(MemoryFold.fold).where(MemoryFold.id == 1)) or 0)


def _query_columns() -> tuple[Any, ...]:
    imp = Impression
    return (
        imp.search_id,
        imp.created_at,
        imp.query_text,
        imp.image_sha256,
        imp.user_id,
        imp.caller,
        imp.query_type,
        imp.model_version,
    )


def _logged(row: Sequence[Any]) -> LoggedQuery:
    return LoggedQuery(row[0], as_utc(row[1]), *row[2:8])


def unfolded_impressions(
    *, session: Session, limit: int
) -> list[tuple[LoggedQuery, list[tuple[str, int, float | None]]]]:
    """Up to `limit` searches the memory has not counted, each with its shown (product id,
    position, propensity)."""
    rows = session.execute(
        select(*_query_columns())
        .where(Impression.memory_folded.is_(False))
        .limit(limit)  # in any order: each counts at its own age
    ).all()
    searches = [_logged(r) for r in rows]
    items: dict[str, list[tuple[str, int, float | None]]] = {s.search_id: [] for s in searches}
    item = ImpressionItem
    for chunk, first, last in time_chunks([(s.search_id, s.created_at) for s in searches], 500):
        for sid, pid, pos, prop in session.execute(
            select(item.search_id, item.product_id, item.position, item.propensity).where(
                item.search_id.in_(chunk), item.created_at.between(first, last)
            )
        ):
            items[sid].append((pid, pos, prop))
    return [(s, items[s.search_id]) for s in searches]


def unfolded_events(*, session: Session, limit: int) -> list[UnfoldedEvent]:
    """Up to `limit` events the memory has not counted."""
    ev = FeedbackEvent
    rows = session.execute(
        select(ev.id, ev.received_at, ev.product_id, ev.type, ev.position, *_query_columns())
        .join(
            Impression,
            (Impression.search_id == ev.search_id)
            & (Impression.created_at == ev.search_created_at),
        )
        .where(ev.memory_folded.is_(False))
        .limit(limit)
    ).all()
    return [UnfoldedEvent(r[0], as_utc(r[1]), _logged(r[5:]), r[2], r[3], r[4]) for r in rows]


def mark_folded(
    *,
    session: Session,
    searches: Sequence[tuple[str, datetime]],
    events: Sequence[tuple[int, datetime]],
) -> None:
    """Mark those (search_id, created_at) and those events (id, their search's created_at) as
    counted by the memory."""
    imp, ev = Impression, FeedbackEvent
    for chunk, first, last in time_chunks(searches, 500):
        session.execute(
            update(imp)
            .where(imp.search_id.in_(chunk), imp.created_at.between(first, last))
            .values(memory_folded=True)
            .execution_options(synchronize_session=False)
        )
    for ids, first, last in time_chunks(events, 500):
        session.execute(
            update(ev)
            .where(ev.id.in_(ids), ev.search_created_at.between(first, last))
            .values(memory_folded=True)
            .execution_options(synchronize_session=False)
        )


ShopperKey = tuple[str, str]  # (query key, shopper)
Given = dict[str, list[Any]]  # product id -> [examination, grade, [event types], at]


def shoppers(*, session: Session, keys: Sequence[ShopperKey]) -> dict[ShopperKey, Given]:
    """What each (query, shopper) has given each product before."""
    out: dict[ShopperKey, Given] = {}
    m = MemoryShopper
    for key, who in _by_query(list(set(keys))):
        for shopper, products in session.connection().execute(
            select(m.shopper, m.products).where(m.key == key, m.shopper.in_(who))
        ):
            out[(key, shopper)] = dict(products)
    return out


def _by_query(keys: Sequence[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(query key, its second key columns) per query key, a few hundred at a time: one lookup
    through the primary key's prefix each, where a row-value IN (...) scans on SQLite."""
    grouped: dict[str, set[str]] = {}
    for key, second in keys:
        grouped.setdefault(key, set()).add(second)
    for key, seconds in grouped.items():
        for some in chunks(sorted(seconds), _CHUNK):
            yield key, list(some)


def put_shoppers(*, session: Session, rows: list[dict[str, Any]]) -> None:
    _upsert(session, MemoryShopper, rows, ["key", "shopper"])


def pairs(
    *, session: Session, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[float, float, dict[str, float], float]]:
    """The stored (examinations, gain, events per type, at) of these (query key, product id)."""
    out: dict[tuple[str, str], tuple[float, float, dict[str, float], float]] = {}
    p = MemoryPair
    for key, pids in _by_query(list(set(keys))):
        for pid, exam, gain, events, at in session.connection().execute(
            select(p.product_id, p.exam, p.gain, p.events, p.at).where(
                p.key == key, p.product_id.in_(pids)
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
    """Upsert queries: counts always, wording and vector only while the encoder is the same
    (the first wording names a query; a new encoder's vector replaces the old one's)."""
    if not rows:
        return
    stmt = insert_for(session)(MemoryQuery)
    same = MemoryQuery.encoder == stmt.excluded.encoder
    changes: dict[str, Any] = {c: getattr(stmt.excluded, c) for c in ("searches", "at", "fold")}
    for c in ("wording", "vector", "encoder"):
        changes[c] = case((same, getattr(MemoryQuery, c)), else_=getattr(stmt.excluded, c))
    upsert = stmt.on_conflict_do_update(index_elements=["key"], set_=changes)
    for chunk in chunks(rows, 500):
        session.connection().execute(upsert, list(chunk))


def _upsert(session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    stmt = insert_for(session)(model)
    changes = {c: getattr(stmt.excluded, c) for c in rows[0] if c not in keys}
    upsert = stmt.on_conflict_do_update(index_elements=keys, set_=changes)
    for chunk in chunks(rows, 500):  # Core's executemany: the ORM's bulk path costs twice
        session.connection().execute(upsert, list(chunk))


def changed_pairs(
    *, session: Session, after_fold: int, to_fold: int, batch: int = 50_000
) -> Iterator[tuple[str, str, float, float, float, int]]:
    """(key, product id, gain, exam, at, fold) of pairs written by folds after `after_fold` up
    to `to_fold`, in fold order, read a batch at a time so a follower's first load stays
    bounded."""
    p = MemoryPair
    last = (after_fold + 1, "", "")  # keys are never empty: every row of later folds is after
    while True:
        rows = session.execute(
            select(p.key, p.product_id, p.gain, p.exam, p.at, p.fold)
            .where(tuple_(p.fold, p.key, p.product_id) > last, p.fold <= to_fold)
            .order_by(p.fold, p.key, p.product_id)
            .limit(batch)
        ).all()
        yield from (tuple(r) for r in rows)  # type: ignore[misc]
        if len(rows) < batch:
            return
        last = (rows[-1][5], rows[-1][0], rows[-1][1])


def changed_queries(
    *, session: Session, after_fold: int, to_fold: int
) -> Iterator[tuple[str, str, str, str | None, bytes | None]]:
    """(key, kind, normal form, encoder, vector) of queries written by folds after
    `after_fold` up to `to_fold`."""
    q = MemoryQuery
    yield from session.execute(
        select(q.key, q.kind, q.text, q.encoder, q.vector).where(
            q.fold > after_fold, q.fold <= to_fold
        )
    ).tuples()


def memory_of(
    *, session: Session, key: str, limit: int
) -> tuple[MemoryQuery | None, list[MemoryPair]]:
    """A query's row and its `limit` pairs with the most graded events (the memory endpoint)."""
    pairs = session.scalars(
        select(MemoryPair)
        .where(MemoryPair.key == key)
        .order_by(MemoryPair.gain.desc(), MemoryPair.exam.desc())
        .limit(limit)
    )
    return session.get(MemoryQuery, key), list(pairs)


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
