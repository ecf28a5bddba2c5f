"""GET /v1/metrics/online: rolling click-through, click MRR and purchase rate per model version."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep
from service.api.schemas import OnlineMetricsPublic

router = APIRouter(tags=["metrics"])


@router.get(
    "/v1/metrics/online",
    response_model=OnlineMetricsPublic,
    summary="Live-traffic metrics per model version (this process), with drift counts",
)
def online(rt: RuntimeDep) -> OnlineMetricsPublic:
    return OnlineMetricsPublic.model_validate(rt.metrics.snapshot())
