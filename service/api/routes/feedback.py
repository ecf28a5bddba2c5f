"""POST /v1/feedback: clicks, add-to-carts and purchases, durably stored before the 202."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.api.body import JSON_OVERHEAD, read_json_object, validate
from service.api.deps import RuntimeDep, TelemetryDep
from service.api.schemas import (
    AUTH_RESPONSES,
    ERROR_RESPONSES,
    FeedbackAccepted,
    FeedbackBatch,
    FeedbackEventIn,
)
from service.api.security import Role, allow
from service.errors import NotReady
from storage.db import transaction
from storage.errors import InvalidEvents
from storage.feedback import EventIn, Recorded, record_events

router = APIRouter(tags=["feedback"], dependencies=allow(Role.INGEST), responses=AUTH_RESPONSES)

MAX_BODY = 1000 * 1024 + JSON_OVERHEAD  # 1,000 events of up to ~1 KB each

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/FeedbackEventIn"},
                        {"$ref": "#/components/schemas/FeedbackBatch"},
                    ]
                }
            }
        },
    }
}


def _events(body: FeedbackBatch, grades: dict[str, int]) -> list[EventIn]:
    now = datetime.now(UTC)
    unknown = [
        {"index": i, "type": e.type, "problem": f"unknown type; configured: {', '.join(grades)}"}
        for i, e in enumerate(body.events)
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
        for e in body.events
    ]


@router.post(
    "/v1/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    responses=ERROR_RESPONSES,
    openapi_extra=_BODY,
    summary="Record shopper events (one, or a batch of up to 1,000) for shown products",
)
async def feedback(request: Request, rt: RuntimeDep, telemetry: TelemetryDep) -> FeedbackAccepted:
    """202 only once the events are committed. The whole batch is refused (422, saying which
    event and why) if any event names an unknown search or a product that search did not show."""
    payload = await read_json_object(request, MAX_BODY)
    body = (
        validate(FeedbackBatch, payload)
        if "events" in payload
        else FeedbackBatch(events=[validate(FeedbackEventIn, payload)])
    )
    events = _events(body, rt.settings.event_grades)

    # A search is logged asynchronously; its feedback may come before the flush. Have it written
    # now, and wait without holding a worker thread.
    searches = {e.search_id for e in events}
    if rt.impressions.pending(searches):
        rt.impressions.hurry()
    deadline = time.monotonic() + 10
    while rt.impressions.pending(searches):
        if time.monotonic() > deadline:
            raise NotReady("those searches are still being logged; retry in a few seconds")
        await asyncio.sleep(0.01)

    def store() -> Recorded:
        with transaction(rt.sessions) as session:
            return record_events(session, events, received_at=datetime.now(UTC))

    try:
        recorded = await run_in_threadpool(store)
    except InvalidEvents:
        telemetry.events.labels("rejected").inc(len(events))
        raise
    telemetry.events.labels("accepted").inc(recorded.accepted)
    telemetry.events.labels("duplicate").inc(recorded.duplicates)
    for search_id, position, type_ in recorded.stored:
        rt.metrics.event(search_id, position, type_)
    return FeedbackAccepted(accepted=recorded.accepted, duplicates=recorded.duplicates)
