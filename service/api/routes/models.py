"""The model registry over HTTP: list versions, start a refresh, follow it, roll back/forward."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from model.head import MIX, QUERY_TYPES
from service.api.deps import RuntimeDep, SearcherDep
from service.api.model_schemas import (
    Activated,
    ModelList,
    ModelVersionPublic,
    PositionBiasPublic,
    RunList,
    RunQueued,
    ServingModel,
    TrainingRunPublic,
)
from service.api.schemas import AUTH_RESPONSES, ERROR_RESPONSES
from service.api.security import Role, allow
from service.errors import NotFound, NotReady
from service.search.hot_swap import activate_version
from storage.models import RunStatus
from storage.registry import active_version, get_run, get_version, list_runs, list_versions

router = APIRouter(
    prefix="/v1/models", tags=["models"], dependencies=allow(Role.ADMIN), responses=AUTH_RESPONSES
)


@router.get("", response_model=ModelList, summary="Every head version, newest first")
def models(rt: RuntimeDep) -> ModelList:
    with rt.sessions() as s:
        active = active_version(session=s)
        rows = list_versions(session=s)
    return ModelList(
        active=active,
        versions=[
            ModelVersionPublic.model_validate(v).model_copy(update={"active": v.version == active})
            for v in rows
        ],
    )


@router.get(
    "/serving",
    response_model=ServingModel,
    responses=ERROR_RESPONSES,
    summary="What the version this process serves learned: class weights, position bias, mix",
)
def serving(rt: RuntimeDep, searcher: SearcherDep) -> ServingModel:
    active = searcher.active  # one read: a swap meanwhile cannot mix two versions
    with rt.sessions() as s:
        row = get_version(session=s, version=active.version)
    mix = active.head.mix
    return ServingModel(
        version=active.version,
        class_weights=row.class_weights if row is not None else None,
        position_bias=PositionBiasPublic(
            source=active.bias.source,
            eta=active.bias.eta,
            examination=[active.bias.propensity(p) for p in range(1, 21)],
        ),
        mix=None
        if mix is None
        else {
            t: dict(zip(MIX, w, strict=True))
            for t, w in zip(QUERY_TYPES, mix.detach().tolist(), strict=True)
        },
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
    return RunQueued(run_id=rt.learner.request("api"), status=RunStatus.QUEUED)


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
        rows = list_runs(session=s, limit=limit)
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
        run = get_run(session=s, run_id=run_id)
    if run is None:
        raise NotFound(f"no training run {run_id}")
    return TrainingRunPublic.model_validate(run)


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
    watcher = rt.watcher
    if rt.searcher is None or watcher is None:
        raise NotReady(rt.not_ready_reason or "the index is not loaded")
    previous = await run_in_threadpool(activate_version, watcher=watcher, version=version)
    return Activated(active=version, previous=previous)
