"""Route dependencies as Annotated aliases; tests swap them via app.dependency_overrides.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, and
thread hops cost more than the dictionary lookups they do."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.catalog.writer import CatalogWriter
from service.errors import NotReady
from service.search.searcher import Searcher
from service.serving import Runtime
from service.telemetry import Telemetry


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_searcher(rt: RuntimeDep) -> Searcher:
    if rt.searcher is None:
        raise NotReady(rt.not_ready_reason or "the index is not loaded")
    return rt.searcher


async def get_writer(rt: RuntimeDep) -> CatalogWriter:
    if rt.writer is None:
        raise NotReady(rt.not_ready_reason or "the index is not loaded")
    return rt.writer


async def get_telemetry(request: Request) -> Telemetry:
    return request.app.state.telemetry  # type: ignore[no-any-return]


SearcherDep = Annotated[Searcher, Depends(get_searcher)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
WriterDep = Annotated[CatalogWriter, Depends(get_writer)]
