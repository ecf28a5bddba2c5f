"""GET /v1/metrics/online: rolling click-through, click MRR and purchase rate per model version."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep
from service.api.schemas import AUTH_RESPONSES, OnlineMetricsPublic
from service.api.security import Role, allow

router = APIRouter(tags=["metrics"], dependencies=allow(Role.ADMIN), responses=AUTH_RESPONSES)


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
