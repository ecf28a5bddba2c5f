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
from storage.analytics import EventKey, StatKey, Tally
from storage.memory import LoggedQuery, UnfoldedEvent

DAY_S = 86400


def day_of(ts: datetime) -> int:
    """Days since 1970-01-01 in UTC: the analytics' time unit."""
    return int(ts.timestamp() // DAY_S)


def _stat_key(q: LoggedQuery) -> StatKey:
    key = memory_key(q.query_text, q.image_sha256).key
    return day_of(q.created_at), key, q.query_type, q.model_version


def tally(
    searches: Sequence[tuple[LoggedQuery, int]],
    events: Sequence[UnfoldedEvent],
    counted: Collection[tuple[str, str]],
) -> Tally:
    """`searches`: each new search with how many products it showed; `events`: new events;
    `counted`: the (search id, event type) pairs an earlier fold already counted a search for.
    Events count on the day of their search, so a day's rates compare like with like; a
    search's reciprocal rank is that of its first event of a type this fold counts."""
    out = Tally()
    for q, shown in searches:
        k = _stat_key(q)
        out.searches[k] += 1
        out.empty[k] += shown == 0
        out.wording.setdefault(k, q.query_text or "")
    first: dict[tuple[str, str], tuple[int, EventKey]] = {}
    for e in events:
        ek: EventKey = (*_stat_key(e.query), e.type)
        out.events[ek] += 1
        out.positions[(ek[0], e.type, e.position)] += 1
        sid = (e.query.search_id, e.type)
        if sid not in counted and e.position < first.get(sid, (e.position + 1, ek))[0]:
            first[sid] = (e.position, ek)
    for position, ek in first.values():
        out.searched[ek] += 1
        out.reciprocal_ranks[ek] += 1.0 / position
    return out
