"""Search analytics over a range of days, read from SQL so that every replica agrees, and the
suggestions a search box offers as a shopper types."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from service.api.analytics_schemas import (
    DayVolumeOut,
    EventCount,
    PositionCount,
    PositionList,
    QueryList,
    QueryStatsOut,
    RankingList,
    ShownProduct,
    Suggestions,
    VersionDayOut,
    VersionList,
    VersionRanking,
    VolumeList,
)
from service.api.deps import RuntimeDep
from service.api.schemas import AUTH_RESPONSES, ERROR_RESPONSES
from service.api.security import Role, allow
from service.search.analytics import DAY_S
from service.search.memory import memory_key
from storage.analytics import (
    QueryOrder,
    daily_volume,
    event_positions,
    query_stats,
    rankings,
    suggestions,
    wordings,
)

router = APIRouter(
    prefix="/v1/analytics",
    tags=["analytics"],
    dependencies=allow(Role.INGEST),
    responses={**AUTH_RESPONSES, **ERROR_RESPONSES},
)
suggest_router = APIRouter(
    tags=["search"], dependencies=allow(Role.SEARCH), responses=AUTH_RESPONSES
)

MAX_DAYS = 400
SUGGEST_DAYS = 90  # suggestions follow what shoppers searched lately
EPOCH = dt.date(1970, 1, 1)


def _iso_day(value: object) -> object:
    """Only a YYYY-MM-DD string is a day (pydantic alone would read `0` as 1970-01-01)."""
    if isinstance(value, str) and not ISO_DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
Since = Annotated[
    dt.date | None,
    BeforeValidator(_iso_day),
    Query(
        description="First day (UTC), inclusive; default 29 days before `until`. At most "
        f"{MAX_DAYS} days are read: an earlier `since` is moved up (the answer says which days "
        "it covers)."
    ),
]
Until = Annotated[
    dt.date | None,
    BeforeValidator(_iso_day),
    Query(description="Last day (UTC), inclusive; default today. Before `since`: nothing."),
]


def _range(since: dt.date | None, until: dt.date | None) -> tuple[dt.date, dt.date]:
    until = until or dt.datetime.now(dt.UTC).date()
    earliest = until - dt.timedelta(days=MAX_DAYS - 1)
    return max(since or until - dt.timedelta(days=29), earliest), until


def _day(d: dt.date) -> int:
    return (d - EPOCH).days


def _date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=day)


def _events(counts: Mapping[str, tuple[int, int, *tuple[float, ...]]]) -> dict[str, EventCount]:
    return {t: EventCount(searches=c[0], events=c[1]) for t, c in sorted(counts.items())}


def _per_search(
    counts: Mapping[str, tuple[int, int, *tuple[float, ...]]],
    etype: str,
    found: int,
    column: int = 0,
) -> float | None:
    """A count of `etype` (searches with one; or column 2: reciprocal ranks) per search that found
    something; None when none did."""
    return counts[etype][column] / found if found and etype in counts else (0.0 if found else None)


def _click_and_conversion(grades: Mapping[str, int]) -> tuple[str, str]:
    """The event types click-through and conversion count: the lowest and the highest grade."""
    return min(grades, key=grades.__getitem__), max(grades, key=grades.__getitem__)


@router.get(
    "/queries",
    response_model=QueryList,
    summary="Queries by searches: all of them, those that found nothing, or found but got no click",
)
async def queries(
    rt: RuntimeDep,
    since: Since = None,
    until: Until = None,
    list_: Annotated[
        QueryOrder,
        Query(
            alias="list",
            description="`top`: every query, most searched first; `no_results`: queries whose "
            "searches found nothing, most such searches first; `no_clicks`: queries that found "
            "products but never got a `click_event`, most such searches first.",
        ),
    ] = QueryOrder.TOP,
    query_type: Annotated[
        str | None, Query(pattern="^(text|image|composed)$", description="Only this query type.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> QueryList:
    first, last = _range(since, until)
    click, conversion = _click_and_conversion(rt.settings.event_grades)

    def read() -> list[QueryStatsOut]:
        with rt.sessions() as s:
            rows = query_stats(
                session=s,
                since=_day(first),
                until=_day(last),
                order=list_,
                limit=limit,
                event=click,
                query_type=query_type,
            )
        out = []
        for r in rows:
            found = r.searches - r.no_results
            out.append(
                QueryStatsOut(
                    query=r.query,
                    query_type=r.query_type,
                    searches=r.searches,
                    no_results=r.no_results,
                    click_through=_per_search(r.events, click, found),
                    conversion=_per_search(r.events, conversion, found),
                    events=_events(r.events),
                )
            )
        return out

    return QueryList(
        since=first,
        until=last,
        click_event=click,
        conversion_event=conversion,
        queries=await run_in_threadpool(read),
    )


@router.get(
    "/positions", response_model=PositionList, summary="Which shown positions events came from"
)
async def positions(rt: RuntimeDep, since: Since = None, until: Until = None) -> PositionList:
    first, last = _range(since, until)

    def read() -> dict[str, list[tuple[int, int]]]:
        with rt.sessions() as s:
            return event_positions(session=s, since=_day(first), until=_day(last))

    found = await run_in_threadpool(read)
    return PositionList(
        since=first,
        until=last,
        events={
            t: [PositionCount(position=p, events=n) for p, n in rows] for t, rows in found.items()
        },
    )


@router.get(
    "/volume",
    response_model=VolumeList,
    summary="Searches, empty answers and events per day and query type",
)
async def volume(rt: RuntimeDep, since: Since = None, until: Until = None) -> VolumeList:
    first, last = _range(since, until)

    def read() -> list[DayVolumeOut]:
        with rt.sessions() as s:
            rows = daily_volume(session=s, since=_day(first), until=_day(last), by="query_type")
        return [
            DayVolumeOut(
                day=_date(r.day),
                query_type=r.group,
                searches=r.searches,
                no_results=r.no_results,
                events=_events(r.events),
            )
            for r in rows
        ]

    return VolumeList(since=first, until=last, days=await run_in_threadpool(read))


@router.get(
    "/versions",
    response_model=VersionList,
    summary="Click-through, conversion and click MRR per day and model version",
)
async def versions(rt: RuntimeDep, since: Since = None, until: Until = None) -> VersionList:
    """From every replica's logs (SQL), unlike /v1/metrics/online, which is this process's."""
    first, last = _range(since, until)
    click, conversion = _click_and_conversion(rt.settings.event_grades)

    def read() -> list[VersionDayOut]:
        with rt.sessions() as s:
            rows = daily_volume(session=s, since=_day(first), until=_day(last), by="model_version")
        out = []
        for r in rows:
            found = r.searches - r.no_results
            out.append(
                VersionDayOut(
                    day=_date(r.day),
                    model_version=r.group,
                    searches=r.searches,
                    no_results=r.no_results,
                    click_through=_per_search(r.events, click, found),
                    conversion=_per_search(r.events, conversion, found),
                    click_mrr=_per_search(r.events, click, found, column=2),
                    events=_events(r.events),
                )
            )
        return out

    return VersionList(
        since=first,
        until=last,
        click_event=click,
        conversion_event=conversion,
        days=await run_in_threadpool(read),
    )


@router.get(
    "/rankings",
    response_model=RankingList,
    summary="What each model version last showed for a query (as typed, or any wording of it)",
)
async def rankings_of(
    rt: RuntimeDep,
    query: Annotated[str, Query(min_length=1, max_length=512, pattern=r"^[^\x00]*$")],
    since: Since = None,
    until: Until = None,
) -> RankingList:
    first, last = _range(since, until)
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    index = rt.searcher.index if rt.searcher is not None else None

    def title(pid: str) -> str | None:
        row = index.row_of.get(pid) if index is not None else None
        return index.metas[row].title if index is not None and row is not None else None

    def read() -> list[VersionRanking]:
        words = query.strip()
        with rt.sessions() as s:
            typed = {words} | wordings(session=s, key=memory_key(words, None).key)
            found = rankings(session=s, wordings=typed, since=start, until=end)
        return [
            VersionRanking(
                model_version=version,
                searched_at=at,
                products=[ShownProduct(product_id=p, title=title(p)) for p in shown],
            )
            for version, at, shown in found
        ]

    return RankingList(query=query, versions=await run_in_threadpool(read))


@suggest_router.get(
    "/v1/suggest",
    response_model=Suggestions,
    responses=ERROR_RESPONSES,
    summary="Popular logged queries with results that have a word starting as typed",
)
async def suggest(
    rt: RuntimeDep,
    q: Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")],
    limit: Annotated[int, Query(ge=1, le=20)] = 8,
) -> Suggestions:
    today = int(dt.datetime.now(dt.UTC).timestamp() // DAY_S)

    def read() -> list[str]:
        with rt.sessions() as s:
            return suggestions(session=s, prefix=q.strip(), since=today - SUGGEST_DAYS, limit=limit)

    return Suggestions(suggestions=await run_in_threadpool(read) if q.strip() else [])
