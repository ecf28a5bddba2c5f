"""The model registry over HTTP: list versions, start a refresh, follow it, roll back/forward."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from service.api.deps import RuntimeDep
from service.api.schemas import (
    AUTH_RESPONSES,
    ERROR_RESPONSES,
    Activated,
    ModelList,
    ModelVersionPublic,
    RunList,
    RunQueued,
    TrainingRunPublic,
)
from service.api.security import Role, allow
from service.errors import NotFound, NotReady
from service.search.hot_swap import IncompatibleHead, load_active_head
from storage.db import transaction
from storage.errors import ArtifactError
from storage.registry import (
    active_version,
    get_run,
    get_version,
    list_runs,
    list_versions,
    set_active,
)

router = APIRouter(
    prefix="/v1/models", tags=["models"], dependencies=allow(Role.ADMIN), responses=AUTH_RESPONSES
)


@router.get("", response_model=ModelList, summary="Every head version, newest first")
def models(rt: RuntimeDep) -> ModelList:
    with rt.sessions() as s:
        active = active_version(s)
        rows = list_versions(s)
    return ModelList(
        active=active,
        versions=[
            ModelVersionPublic.model_validate(v).model_copy(update={"active": v.version == active})
            for v in rows
        ],
    )


@router.post(
    "/train",
    status_code=202,
    response_model=RunQueued,
    responses=ERROR_RESPONSES,
    summary="Start a refresh now; follow it at /v1/models/runs/{run_id}",
)
def train(rt: RuntimeDep) -> RunQueued:
    if rt.learner is None:
        raise NotReady(rt.not_ready_reason or "the index is not loaded")
    return RunQueued(run_id=rt.learner.request("api"), status="queued")


@router.get(
    "/runs",
    response_model=RunList,
    summary="The newest refreshes: what the scheduler started, and what each decided",
)
def runs(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> RunList:
    with rt.sessions() as s:
        rows = list_runs(s, limit)
    return RunList(runs=[TrainingRunPublic.model_validate(r) for r in rows])


@router.get(
    "/runs/{run_id}",
    response_model=TrainingRunPublic,
    responses=ERROR_RESPONSES,
    summary="Status and outcome of a refresh",
)
def run_status(
    run_id: Annotated[int, Path(ge=1, le=2**31 - 1)], rt: RuntimeDep
) -> TrainingRunPublic:
    with rt.sessions() as s:
        run = get_run(s, run_id)
    if run is None:
        raise NotFound(f"no training run {run_id}")
    return TrainingRunPublic.model_validate(run)


def missing(version: str) -> str:
    return (
        f"version {version} cannot be served: its files are missing (head retention deletes "
        "those of old versions, FUSIONRANK_LEARNER_KEEP_HEADS); its record stays in GET /v1/models"
    )


@router.post(
    "/{version}/activate",
    response_model=Activated,
    responses={
        **ERROR_RESPONSES,
        409: ERROR_RESPONSES[400]
        | {"description": "Incompatible head, or its files deleted by retention."},
    },
    summary="Serve this version everywhere (rollback or roll-forward)",
)
async def activate(version: str, rt: RuntimeDep) -> Activated:
    searcher, watcher = rt.searcher, rt.watcher
    if searcher is None or watcher is None:
        raise NotReady(rt.not_ready_reason or "the index is not loaded")
    heads = rt.settings.data_dir / "heads"

    def switch() -> Activated:
        with rt.sessions() as s:
            if get_version(s, version) is None:
                raise NotFound(f"no model version {version}; see GET /v1/models")
        if not (heads / version).exists():
            raise IncompatibleHead(missing(version))
        try:  # verify before pointing anyone at it
            load_active_head(heads, version, searcher.active)
        except ArtifactError as e:
            raise IncompatibleHead(f"version {version} cannot be served: {e.message}") from e
        with transaction(rt.sessions) as s:
            previous = active_version(s)
            set_active(s, version)
        if not (heads / version).exists() and previous:  # pruned by a refresh meanwhile
            with transaction(rt.sessions) as s:
                set_active(s, previous)
            raise IncompatibleHead(missing(version))
        watcher.refused.pop(version, None)
        watcher.check_once()  # this process at once; the other replicas within a poll
        return Activated(active=version, previous=previous)

    return await run_in_threadpool(switch)
