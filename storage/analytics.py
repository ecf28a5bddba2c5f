"""Search analytics repository: what a fold adds (service.search.analytics) and what the
analytics endpoints read. Every read is bounded by a day range and groups the per-day rows, so
its cost follows the distinct queries of those days, not the impressions behind them."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from storage.db import chunks, insert_for, time_chunks
from storage.models import (
    EventPosition,
    FeedbackEvent,
    Impression,
    ImpressionItem,
    SearchEventStat,
    SearchStat,
    as_utc,
)

S, E = SearchStat, SearchEventStat
StatKey = tuple[int, str, str, str]  # (day, query key, query type, model version)
EventKey = tuple[int, str, str, str, str]  # and the event type


@dataclass
class Tally:
    """What one fold adds to the analytics tables."""

    searches: Counter[StatKey] = field(default_factory=Counter)
    empty: Counter[StatKey] = field(default_factory=Counter)
    wording: dict[StatKey, str] = field(default_factory=dict)
    searched: Counter[EventKey] = field(default_factory=Counter)
    events: Counter[EventKey] = field(default_factory=Counter)
    reciprocal_ranks: dict[EventKey, float] = field(default_factory=lambda: defaultdict(float))
    positions: Counter[tuple[int, str, int]] = field(default_factory=Counter)  # day, event, pos


def counted_events(
    *, session: Session, searches: Iterable[tuple[str, datetime]]
) -> set[tuple[str, str]]:
    """The (search id, event type) pairs of these (search_id, created_at) that earlier folds
    counted."""
    ev, out = FeedbackEvent, set[tuple[str, str]]()
    for chunk, first, last in time_chunks(set(searches), 500):
        rows = session.execute(
            select(ev.search_id, ev.type)
            .where(
                ev.search_id.in_(chunk),
                ev.search_created_at.between(first, last),
                ev.memory_folded.is_(True),
            )
            .distinct()
        )
        out.update((sid, etype) for sid, etype in rows)
    return out


def _add(session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Upsert adding each count column to what the row holds."""
    if not rows:
        return
    stmt = insert_for(session)(model)
    table = model.__table__.c
    sums = {c: table[c] + getattr(stmt.excluded, c) for c in rows[0] if c not in keys}
    sums.pop("query", None)  # the day's first wording stays
    upsert = stmt.on_conflict_do_update(index_elements=keys, set_=sums)
    for chunk in chunks(rows, 500):
        session.connection().execute(upsert, list(chunk))


def add_tally(*, session: Session, tally: Tally) -> None:
    stat = ("day", "key", "query_type", "model_version")
    _add(
        session,
        S,
        [
            dict(zip(stat, k, strict=True))
            | {"query": tally.wording[k], "searches": n, "empty": tally.empty[k]}
            for k, n in tally.searches.items()
        ],
        list(stat),
    )
    _add(
        session,
        E,
        [
            dict(zip((*stat, "event"), k, strict=True))
            | {
                "searches": tally.searched[k],
                "events": n,
                "reciprocal_ranks": tally.reciprocal_ranks[k],
            }
            for k, n in tally.events.items()
        ],
        [*stat, "event"],
    )
    _add(
        session,
        EventPosition,
        [
            {"day": d, "event": ev, "position": pos, "events": n}
            for (d, ev, pos), n in tally.positions.items()
        ],
        ["day", "event", "position"],
    )


def purge_analytics(*, session: Session, before_day: int) -> None:
    for model in (S, E, EventPosition):
        session.execute(delete(model).where(model.day < before_day))


class QueryOrder(StrEnum):
    """Which queries a listing holds, most searched first."""

    TOP = "top"  # every query
    NO_RESULTS = "no_results"  # searches that found nothing (most such searches first)
    NO_CLICKS = "no_clicks"  # found something, and no search of them had the given event


@dataclass
class QueryStats:
    query: str
    query_type: str
    searches: int
    no_results: int
    events: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (searches, events)


def _days(model: Any, since: int, until: int) -> tuple[ColumnElement[bool], ...]:
    return model.day >= since, model.day <= until


def query_stats(
    *,
    session: Session,
    since: int,
    until: int,
    order: QueryOrder,
    limit: int,
    event: str = "",
    query_type: str | None = None,
) -> list[QueryStats]:
    """Queries searched between the two days (inclusive), with their counts and event counts.
    `event`: the type NO_CLICKS looks for."""
    searches, empty = func.sum(S.searches), func.sum(S.empty)
    stmt = (
        select(S.key, func.max(S.query), func.max(S.query_type), searches, empty)
        .where(*_days(S, since, until))
        .group_by(S.key)
    )
    if query_type is not None:
        stmt = stmt.where(S.query_type == query_type)
    rank: ColumnElement[Any] = searches
    if order is QueryOrder.NO_RESULTS:
        stmt, rank = stmt.having(empty > 0), empty
    elif order is QueryOrder.NO_CLICKS:
        had = select(E.key).where(E.event == event).where(*_days(E, since, until))
        stmt = stmt.having(searches > empty).where(S.key.not_in(had))
        rank = searches - empty
    rows = session.execute(stmt.order_by(rank.desc(), S.key).limit(limit)).all()
    out = {k: QueryStats(q, t, int(n), int(z)) for k, q, t, n, z in rows}
    for chunk in chunks(list(out), 500):
        for key, etype, n, m in session.execute(
            select(E.key, E.event, func.sum(E.searches), func.sum(E.events))
            .where(*_days(E, since, until))
            .where(E.key.in_(chunk))
            .group_by(E.key, E.event)
        ):
            out[key].events[etype] = (int(n), int(m))
    return list(out.values())


def event_positions(
    *, session: Session, since: int, until: int
) -> dict[str, list[tuple[int, int]]]:
    """Per event type, (position, events) by position."""
    out: dict[str, list[tuple[int, int]]] = {}
    p = EventPosition
    for etype, pos, n in session.execute(
        select(p.event, p.position, func.sum(p.events))
        .where(*_days(p, since, until))
        .group_by(p.event, p.position)
        .order_by(p.event, p.position)
    ):
        out.setdefault(etype, []).append((int(pos), int(n)))
    return out


@dataclass
class DayVolume:
    """Per day and one grouping value (a query type or a model version)."""

    day: int
    group: str
    searches: int = 0
    no_results: int = 0
    # event type -> (searches with one, events, sum of reciprocal ranks of the first)
    events: dict[str, tuple[int, int, float]] = field(default_factory=dict)


def daily_volume(*, session: Session, since: int, until: int, by: str) -> list[DayVolume]:
    """Per day and `by` ("query_type" or "model_version"): searches, those without results,
    and events."""
    s_by, e_by = getattr(S, by), getattr(E, by)
    out: dict[tuple[int, str], DayVolume] = {}
    for day, group, n, z in session.execute(
        select(S.day, s_by, func.sum(S.searches), func.sum(S.empty))
        .where(*_days(S, since, until))
        .group_by(S.day, s_by)
    ):
        out[(day, group)] = DayVolume(day, group, int(n), int(z))
    for day, group, etype, n, m, rr in session.execute(
        select(
            E.day,
            e_by,
            E.event,
            func.sum(E.searches),
            func.sum(E.events),
            func.sum(E.reciprocal_ranks),
        )
        .where(*_days(E, since, until))
        .group_by(E.day, e_by, E.event)
    ):
        out.setdefault((day, group), DayVolume(day, group)).events[etype] = (
            int(n),
            int(m),
            float(rr),
        )
    return [out[k] for k in sorted(out)]


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def suggestions(*, session: Session, prefix: str, since: int, limit: int) -> list[str]:
    """Logged queries, as shoppers typed them, with a word starting with `prefix` (any case)
    and with results, by how many of their searches found something since `since`."""
    found = func.sum(S.searches - S.empty)
    low, like = func.lower(S.query), _like_prefix(prefix.lower())
    rows = session.execute(
        select(func.max(S.query), found)
        .where(
            S.day >= since,
            S.searches > S.empty,
            or_(low.like(like, escape="\\"), low.like("% " + like, escape="\\")),
        )
        .group_by(S.key)
        .order_by(found.desc(), func.max(S.query))
        .limit(limit)
    )
    return [q for q, _ in rows if q]


def wordings(*, session: Session, key: str) -> set[str]:
    """How shoppers typed the query of this key (each day's first wording)."""
    return set(session.scalars(select(S.query).where(S.key == key).distinct()))


def rankings(
    *,
    session: Session,
    wordings: set[str],
    since: datetime,
    until: datetime,
    versions: int = 10,
) -> list[tuple[str, datetime, list[str]]]:
    """For the newest `versions` model versions that answered a query typed one of these ways
    between the two times: when one last did, and the product ids it showed, in order."""
    imp = Impression
    latest: dict[str, tuple[str, datetime]] = {}
    rows = session.execute(
        select(imp.model_version, imp.search_id, imp.created_at)
        .where(
            imp.query_text.in_(sorted(wordings)),
            imp.created_at >= since,
            imp.created_at < until,
        )
        .order_by(imp.created_at.desc())
        .limit(5000)  # a popular query's searches: enough to meet every recent version
    )
    for version, sid, at in rows:
        if version not in latest and len(latest) < versions:
            latest[version] = (sid, as_utc(at))
    out = []
    for version, (sid, at) in latest.items():
        shown = session.scalars(
            select(ImpressionItem.product_id)
            .where(ImpressionItem.search_id == sid)
            .order_by(ImpressionItem.position)
        ).all()
        out.append((version, at, list(shown)))
    return out
