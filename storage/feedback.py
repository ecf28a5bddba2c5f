"""Feedback repository: shopper events joined to the impression that showed the product.

An event is stored once per `event_id` (a unique constraint, so retries from any replica are
counted once; on PostgreSQL, where it covers one day's partition, with a lookup under a lock
beside it) together with the position the product was shown at.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from storage.db import chunks, insert_for, time_chunks
from storage.errors import UNKNOWN_SEARCH, InvalidEvents
from storage.models import FeedbackEvent, Impression, ImpressionItem
from storage.partitions import partitioned

_LOOKUP_CHUNK = 500  # search ids per IN (...) query


@dataclass(frozen=True, slots=True)
class EventIn:
    search_id: str
    product_id: str
    type: str
    ts: datetime
    event_id: str | None = None
    client_ts: bool = True  # False: ts is the server's receive time, not part of the identity

    def key(self) -> str:
        """The idempotency key: the client's event_id, else one derived from the event itself
        (with the client's ts if it sent one), so a retried event without an id counts once."""
        if self.event_id is not None:
            return self.event_id
        ts = self.ts.isoformat() if self.client_ts else ""
        raw = "\x1f".join((self.search_id, self.product_id, self.type, ts))
        return "auto:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Shown:
    positions: dict[tuple[str, str], int]  # (search_id, product_id) -> position
    created: dict[str, datetime]  # search_id -> its created_at, for the events' partition


def shown_positions(*, session: Session, search_ids: Sequence[str]) -> Shown:
    """Where those searches showed each product, and when each search was made."""
    out = Shown({}, {})
    item = ImpressionItem
    for chunk in chunks(search_ids, _LOOKUP_CHUNK):
        rows = session.execute(
            select(item.search_id, item.product_id, item.position, item.created_at).where(
                item.search_id.in_(chunk)
            )
        )
        for sid, pid, pos, created in rows:
            out.positions.setdefault((sid, pid), pos)
            out.created[sid] = created
    return out


def known_searches(*, session: Session, search_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(search_ids, _LOOKUP_CHUNK):
        found.update(
            session.scalars(select(Impression.search_id).where(Impression.search_id.in_(chunk)))
        )
    return found


@dataclass(frozen=True, slots=True)
class Recorded:
    accepted: int
    duplicates: int
    stored: list[tuple[str, int, str]]  # (search_id, position, type) of the new events


def record_events(
    *, session: Session, events: Sequence[EventIn], received_at: datetime
) -> Recorded:
    """Store a batch atomically. Raises InvalidEvents, storing nothing, if any event names an
    unknown search or a product that search did not show."""
    shown = _shown_or_refuse(session=session, events=events)
    rows = _event_rows(events, shown, received_at)
    if partitioned(session.connection()):
        for key in stored_elsewhere(session=session, keys=sorted(rows)):
            del rows[key]
    by_key: dict[str, EventIn] = {}
    for e in events:
        by_key.setdefault(e.key(), e)  # the first of duplicates is the one stored
    stored = [
        (e.search_id, shown.positions[(e.search_id, e.product_id)], e.type)
        for e in (by_key[key] for key in _insert_new(session=session, rows=list(rows.values())))
    ]
    return Recorded(accepted=len(stored), duplicates=len(events) - len(stored), stored=stored)


def _shown_or_refuse(*, session: Session, events: Sequence[EventIn]) -> Shown:
    """Where the events' searches showed their products. Raises InvalidEvents, naming each
    event that names an unknown search or a product its search did not show."""
    search_ids = sorted({e.search_id for e in events})
    shown = shown_positions(session=session, search_ids=search_ids)
    unknown = set(search_ids) - set(shown.created)
    if unknown:  # a search can show zero products; only then is the impressions table needed
        unknown -= known_searches(session=session, search_ids=sorted(unknown))
    problems: list[dict[str, object]] = []
    for i, e in enumerate(events):
        if e.search_id in unknown:
            problems.append({"index": i, "search_id": e.search_id, "problem": UNKNOWN_SEARCH})
        elif (e.search_id, e.product_id) not in shown.positions:
            problems.append(
                {
                    "index": i,
                    "search_id": e.search_id,
                    "product_id": e.product_id,
                    "problem": "this search did not show this product",
                }
            )
    if problems:
        raise InvalidEvents(problems)
    return shown


def _event_rows(
    events: Sequence[EventIn], shown: Shown, received_at: datetime
) -> dict[str, dict[str, object]]:
    """The feedback rows to insert, by event id: one per id, the first event that carries it."""
    rows: dict[str, dict[str, object]] = {}
    for e in events:
        rows.setdefault(
            e.key(),
            {
                "event_id": e.key(),
                "search_id": e.search_id,
                "search_created_at": shown.created[e.search_id],
                "product_id": e.product_id,
                "position": shown.positions[(e.search_id, e.product_id)],
                "type": e.type,
                "ts": e.ts,
                "received_at": received_at,
            },
        )
    return rows


def _insert_new(*, session: Session, rows: list[dict[str, object]]) -> list[str]:
    """Insert the rows; returns the event ids stored, not those already there (retries)."""
    if not rows:
        return []
    inserted = session.execute(
        insert_for(session)(FeedbackEvent)
        .on_conflict_do_nothing()  # the event id's unique constraint: a retry
        .returning(FeedbackEvent.event_id),
        rows,
    )
    return [key for (key,) in inserted.all()]


def stored_elsewhere(*, session: Session, keys: Sequence[str]) -> set[str]:
    """Which of these event ids are already stored, under a lock on each until the transaction
    ends. On PostgreSQL the unique constraint covers one day's partition: an id sent again for
    a search of another day would pass it, so it is refused here, and the locks (taken in one
    order, so two batches never deadlock) keep two replicas from both storing a new one."""
    if not keys:
        return set()
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM "
            "(SELECT DISTINCT hashtextextended(k, 38) AS h FROM unnest(CAST(:keys AS text[])) k) s "
            "ORDER BY h"
        ),
        {"keys": list(keys)},
    )
    found: set[str] = set()
    for chunk in chunks(keys, _LOOKUP_CHUNK):
        found.update(
            session.scalars(select(FeedbackEvent.event_id).where(FeedbackEvent.event_id.in_(chunk)))
        )
    return found


def event_types(
    *, session: Session, searches: Iterable[tuple[str, datetime]]
) -> Iterator[tuple[str, str, str]]:
    """(search_id, product_id, type) of every event on those (search_id, created_at)."""
    ev = FeedbackEvent
    for chunk, first, last in time_chunks(searches, _LOOKUP_CHUNK):
        yield from session.execute(
            select(ev.search_id, ev.product_id, ev.type).where(
                ev.search_id.in_(chunk), ev.search_created_at.between(first, last)
            )
        ).tuples()


def count_events(*, session: Session, since: datetime | None = None) -> int:
    """Events stored, those received at or after `since` if given."""
    q = select(func.count()).select_from(FeedbackEvent)
    if since is not None:
        q = q.where(FeedbackEvent.received_at >= since)
    return int(session.scalar(q) or 0)
