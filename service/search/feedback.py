"""Recording shopper feedback: from parsed events to stored ones, counted and scored.

Feedback may arrive before its search's impression is committed (impressions are written off
the request path, service.search.impressions); it then waits for that write instead of being
refused as naming an unknown search.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.errors import InvalidEvents, NotReady
from service.search.impressions import ImpressionLogger
from service.search.online_metrics import OnlineMetrics
from service.telemetry import Telemetry
from storage.db import transaction
from storage.feedback import EventIn, Recorded, record_events

WAIT_FOR_SEARCHES_S = 10.0  # then 503: the impression writer is stuck (retrying its database)


class FeedbackEvent(Protocol):
    """One shopper action as a client sent it (service.api.schemas.FeedbackEventIn has it)."""

    @property
    def event_id(self) -> str | None: ...
    @property
    def search_id(self) -> str: ...
    @property
    def product_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def ts(self) -> datetime | None: ...


def to_events(events: Sequence[FeedbackEvent], grades: Mapping[str, int]) -> list[EventIn]:
    """The events as stored, stamped now if the client gave no time; InvalidEvents if any has a
    type the settings do not grade."""
    now = datetime.now(UTC)
    unknown = [
        {"index": i, "type": e.type, "problem": f"unknown type; configured: {', '.join(grades)}"}
        for i, e in enumerate(events)
        if e.type not in grades
    ]
    if unknown:
        raise InvalidEvents(unknown)
    return [
        EventIn(
            search_id=e.search_id,
            product_id=e.product_id,
            type=e.type,
            ts=(e.ts if e.ts.tzinfo else e.ts.replace(tzinfo=UTC)).astimezone(UTC) if e.ts else now,
            event_id=e.event_id,
            client_ts=e.ts is not None,
        )
        for e in events
    ]


async def wait_for_searches(impressions: ImpressionLogger, search_ids: set[str]) -> None:
    """Return once these searches' impressions are committed, having the writer flush them now;
    NotReady if that takes longer than WAIT_FOR_SEARCHES_S. Waits without holding a thread."""
    if impressions.pending(search_ids):
        impressions.hurry()
    deadline = time.monotonic() + WAIT_FOR_SEARCHES_S
    while impressions.pending(search_ids):
        if time.monotonic() > deadline:
            raise NotReady("those searches are still being logged; retry in a few seconds")
        await asyncio.sleep(0.01)


async def record_feedback(
    *,
    events: Sequence[FeedbackEvent],
    grades: Mapping[str, int],
    sessions: sessionmaker[Session],
    impressions: ImpressionLogger,
    metrics: OnlineMetrics,
    telemetry: Telemetry,
) -> Recorded:
    """Store a batch atomically, once its searches are logged, and count it. Raises
    InvalidEvents (nothing stored) for an unknown type, an unknown search or a product that
    search did not show; NotReady if its searches are still unlogged after a while."""
    stored = to_events(events, grades)
    await wait_for_searches(impressions, {e.search_id for e in stored})

    def store() -> Recorded:
        with transaction(sessions) as session:
            return record_events(session=session, events=stored, received_at=datetime.now(UTC))

    try:
        recorded = await run_in_threadpool(store)
    except InvalidEvents:
        telemetry.events.labels("rejected").inc(len(stored))
        raise
    telemetry.events.labels("accepted").inc(recorded.accepted)
    telemetry.events.labels("duplicate").inc(recorded.duplicates)
    for search_id, position, type_ in recorded.stored:
        metrics.event(search_id, position, type_)
    return recorded
