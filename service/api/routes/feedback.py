"""POST /v1/feedback: clicks, add-to-carts and purchases, durably stored before the 202."""

from __future__ import annotations

from fastapi import APIRouter, Request

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
from service.search.feedback import record_feedback

# The search page's visitors send feedback too (service.api.security): each is one shopper.
router = APIRouter(
    tags=["feedback"], dependencies=allow(Role.INGEST, visitors=True), responses=AUTH_RESPONSES
)

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
    recorded = await record_feedback(
        events=body.events,
        grades=rt.settings.event_grades,
        sessions=rt.sessions,
        impressions=rt.impressions,
        metrics=rt.metrics,
        telemetry=telemetry,
    )
    return FeedbackAccepted(accepted=recorded.accepted, duplicates=recorded.duplicates)
