"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep
from service.api.schemas import Health
from storage.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (it may still be unready)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(rt: RuntimeDep) -> Health | JSONResponse:
    """Ready when the index and head are loaded: searches are served from memory. A database
    that does not answer makes the replica `degraded` (still 200: searches work, writes answer
    503), so a load balancer keeps it while the database recovers."""
    checks: dict[str, str] = {}
    try:
        ping(rt.engine)
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {type(e).__name__}"
    if rt.searcher is None:
        checks["index"] = rt.not_ready_reason or "not loaded"
        checks["head"] = "not loaded"
    else:
        checks["index"] = f"ok ({len(rt.searcher.index)} products)"
        checks["head"] = f"ok ({rt.searcher.active.version})"
    if not (checks["index"].startswith("ok") and checks["head"].startswith("ok")):
        body = Health(status="not_ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ready" if checks["database"] == "ok" else "degraded", checks=checks)
