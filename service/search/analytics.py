"""Search analytics, counted as the query memory's fold reads the logs (each search and event
exactly once, in the fold's transaction): per UTC day, query and query type, the searches,
those that found nothing, and the searches with each event type; and the shown positions
events came from. Reading them (storage.analytics) costs what the days' distinct queries cost,
however many impressions there were.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from service.search.memory import memory_key
from storage.analytics import StatKey, Tally
from storage.memory import LoggedQuery, UnfoldedEvent

DAY_S = 86400


def day_of(ts: datetime) -> int:
    """Days since 1970-01-01 in UTC: the analytics' time unit."""
    return int(ts.timestamp() // DAY_S)


def _stat_key(q: LoggedQuery) -> StatKey:
    return day_of(q.created_at), memory_key(q.query_text, q.image_sha256).key, q.query_type


def tally(
    searches: Sequence[tuple[LoggedQuery, int]],
    events: Sequence[UnfoldedEvent],
    counted: Collection[tuple[str, str]],
) -> Tally:
    """`searches`: each new search with how many products it showed; `events`: new events;
    `counted`: the (search id, event type) pairs an earlier fold already counted a search for.
    Events count on the day of their search, so a day's rates compare like with like."""
    out = Tally()
    for q, shown in searches:
        k = _stat_key(q)
        out.searches[k] += 1
        out.empty[k] += shown == 0
        out.wording.setdefault(k, q.query_text or "")
    seen = set(counted)
    for e in events:
        day, key, qtype = _stat_key(e.query)
        out.events[(day, key, qtype, e.type)] += 1
        out.positions[(day, e.type, e.position)] += 1
        if (e.query.search_id, e.type) not in seen:
            seen.add((e.query.search_id, e.type))
            out.searched[(day, key, qtype, e.type)] += 1
    return out
