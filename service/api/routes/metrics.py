"""GET /v1/metrics/online: rolling click-through, click MRR and purchase rate per model version;
GET /metrics: the Prometheus exposition of service.telemetry (no key: scrapers rarely have one,
and it changes nothing; keep it off the public internet with your proxy)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import RuntimeDep, TelemetryDep
from service.api.schemas import AUTH_RESPONSES, OnlineMetricsPublic
from service.api.security import Role, allow

router = APIRouter(tags=["metrics"], dependencies=allow(Role.ADMIN), responses=AUTH_RESPONSES)
prometheus = APIRouter(tags=["metrics"])


@prometheus.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics of this process",
)
def scrape(telemetry: TelemetryDep) -> Response:
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/metrics/online",
    response_model=OnlineMetricsPublic,
    summary="Live-traffic metrics per model version (this process), with drift counts",
)
def online(rt: RuntimeDep) -> OnlineMetricsPublic:
    out = rt.metrics.snapshot()
    if rt.searcher is not None:
        out["query_cache"] = {
            "text": rt.searcher.text_cache.stats(),
            "photo": rt.searcher.photo_cache.stats(),
        }
    return OnlineMetricsPublic.model_validate(out)
