"""The FastAPI application: lifespan-loaded runtime, routers, and the one error mapping."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sql
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from service import __version__
from service.api.body import register_body_schemas
from service.api.body_limit import BodyLimit
from service.api.pages import routes as pages
from service.api.routes import (
    analytics,
    feedback,
    health,
    memory,
    metrics,
    models,
    products,
    search,
)
from service.api.schemas import FeedbackBatch, FeedbackEventIn, ProductIn, SearchRequest
from service.api.security import Keyring, RateLimit, SessionSigner
from service.config import Settings
from service.errors import DatabaseUnavailable, FusionrankError, InvalidEvents
from service.serving import Runtime, start_runtime
from service.telemetry import RequestObserver, Telemetry

log = logging.getLogger(__name__)

# Swagger UI's and ReDoc's files, shipped by the fastapi-offline package: /docs needs no CDN.
DOCS_ASSETS = "/docs-assets"


Start = Callable[[Settings], Runtime]  # builds a serving process's runtime (service.serving)


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    *,
    start: Start = start_runtime,
    on_ready: Callable[[Runtime], None] | None = None,
) -> FastAPI:
    """`runtime` lets tests hand in one they built; otherwise the lifespan builds it with
    `start` (the serving composition root, given its thread policy or learner configuration by
    the entry point). `on_ready` is called once the runtime is loaded, before the first request
    is served."""
    config = settings or (runtime.settings if runtime is not None else Settings())
    telemetry = Telemetry()
    app = FastAPI(
        title="fusionrank",
        version=__version__,
        summary="Multimodal product search that learns from shoppers.",
        lifespan=_lifespan(config, runtime, start, on_ready, telemetry),
        docs_url=None,  # served by _install_docs from local files instead of a CDN
        redoc_url=None,
    )
    app.state.telemetry = telemetry
    app.state.keyring = Keyring(config.api_keys.get_secret_value())
    secret = config.session_secret.get_secret_value() or config.api_keys.get_secret_value()
    app.state.sessions = SessionSigner(secret, config.session_hours)
    app.state.rate_limit = RateLimit(config.rate_limit, config.rate_limit_storage)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestObserver, telemetry=telemetry)  # outermost: it times the 413s too
    for router in (
        search.router,
        analytics.suggest_router,
        products.router,
        feedback.router,
        models.router,
        memory.router,
        analytics.router,
    ):
        app.include_router(router)
    for router in (metrics.router, metrics.prometheus, health.router):
        app.include_router(router)
    _install_docs(app)
    app.include_router(pages.router)
    app.mount("/static", pages.assets(), name="static")
    _install_error_handlers(app)
    register_body_schemas(
        app,
        [SearchRequest, ProductIn, FeedbackEventIn, FeedbackBatch],
        enums={"FeedbackEventIn.type": list(config.event_grades)},
    )
    return app


def _lifespan(
    config: Settings,
    runtime: Runtime | None,
    start: Start,
    on_ready: Callable[[Runtime], None] | None,
    telemetry: Telemetry,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the runtime before the first request (or take the one given) and close what it
    built on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or start(config)
        app.state.runtime = rt
        telemetry.watch(
            rt.sessions,
            lambda: rt.searcher.active.version if rt.searcher is not None else None,
            lambda: rt.watcher.swaps if rt.watcher is not None else 0,
        )
        if runtime is None:
            # The catalog is many long-lived objects whose full collection would stall requests
            # in flight; frozen, the collector never scans them again.
            gc.collect()
            gc.freeze()
        if on_ready is not None:
            on_ready(rt)
        try:
            yield
        finally:
            if runtime is None:
                gc.unfreeze()
                rt.close()  # drains the impression queue: nothing acknowledged is lost

    return lifespan


def _methods_on(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves on `path` (RFC 9110's Allow)."""
    return sorted(
        {
            method
            for route in app.routes
            if isinstance(route, Route) and route.path_regex.fullmatch(path)
            for method in route.methods or ()
        }
    )


def _install_docs(app: FastAPI) -> None:
    """/docs and /redoc as FastAPI serves them by default, with their scripts, styles and icon
    served from `DOCS_ASSETS` (no API key: like the spec itself, they are public)."""
    assets = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    app.mount(DOCS_ASSETS, assets, name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect_url,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FusionrankError)
    async def _domain(_: Request, exc: FusionrankError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", exc.code, exc.message)
        detail = exc.problems if isinstance(exc, InvalidEvents) else exc.message
        return JSONResponse({"error": exc.code, "detail": detail}, exc.status_code, exc.headers)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        return await _domain(
            request,
            DatabaseUnavailable(
                f"the database is unavailable ({type(exc).__name__}); nothing of this request "
                "was stored. Searches still work; retry this in a few seconds"
            ),
        )

    # What a down, unreachable or restarting database raises (SQLite: a locked file).
    lost = (sql.OperationalError, sql.InterfaceError, sql.DisconnectionError, sql.TimeoutError)
    for error in lost:
        app.add_exception_handler(error, _database_down)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = jsonable_encoder(exc.errors())
        return JSONResponse({"error": "validation_error", "detail": detail}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route on this path
            headers["Allow"] = ", ".join(_methods_on(app, request.url.path))
        return JSONResponse({"error": code, "detail": exc.detail}, exc.status_code, headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": "internal_error", "detail": "unexpected server error"}, 500)
