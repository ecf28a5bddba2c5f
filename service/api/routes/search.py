"""POST /v1/search: text, image or both; logs the impression."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from service.api.body import json_and_multipart, parse_body
from service.api.deps import RuntimeDep, SearcherDep, TelemetryDep
from service.api.schemas import (
    AUTH_RESPONSES,
    ERROR_RESPONSES,
    QUERY_OR_IMAGE,
    SearchRequest,
    SearchResponse,
    form_field,
)
from service.api.security import Caller, Role, allow
from service.encoding.cache import content_key
from service.encoding.images import decode_base64
from service.search.searcher import SearchQuery, SearchResult
from service.search.served import record_search

router = APIRouter(tags=["search"], dependencies=allow(Role.SEARCH), responses=AUTH_RESPONSES)

# The form's fields and limits are SearchRequest's (parse_body validates the form with it too).
_MULTIPART = {
    "query": form_field(SearchRequest, "query"),
    "image": {"type": "string", "format": "binary"},
    "k": form_field(SearchRequest, "k", default=True),
    "filters": form_field(
        SearchRequest, "filters", description="As in the JSON body, a JSON part."
    ),
    "user_id": form_field(SearchRequest, "user_id"),
    "explain": form_field(SearchRequest, "explain", default=True),
    "facets": form_field(
        SearchRequest,
        "facets",
        description="As in the JSON body: a JSON list in one part, or one part per name.",
    ),
}


def _caller(request: Request) -> Caller | None:
    """The key or page visitor that searched, which the query memory counts as one shopper when
    the search names no user; None without keys (every caller is the loopback's own "local")."""
    caller: Caller | None = getattr(request.state, "caller", None)
    return None if caller is None or caller.name == "local" else caller


def image_url(request: Request, product_id: str, base: str | None = None) -> str:
    base = base or str(request.base_url).rstrip("/")
    return f"{base}/v1/products/{quote(product_id, safe='')}/image"


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    response_model_exclude_unset=True,  # `explanation` and `facets` only when asked for
    responses={
        200: {
            "headers": {
                "Server-Timing": {
                    "description": "Milliseconds spent in the encoders (encode; 0 when the "
                    "query cache had the query's vectors), the whole search (search) and the "
                    "route (route), e.g. "
                    "`encode;dur=10.41, search;dur=12.02, route;dur=12.71`.",
                    "schema": {"type": "string"},
                }
            }
        },
        **ERROR_RESPONSES,
    },
    openapi_extra=json_and_multipart(SearchRequest, _MULTIPART, anyOf=QUERY_OR_IMAGE),
    summary="Search the catalog by text, image, or both",
)
async def search(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    searcher: SearcherDep,
    telemetry: TelemetryDep,
) -> dict[str, Any]:
    started = time.perf_counter()
    limit = rt.settings.max_image_bytes
    body, image_bytes = await parse_body(request, SearchRequest, max_image_bytes=limit)
    if body.image:
        image_bytes = decode_base64(body.image, limit)
    image_sha = content_key(image_bytes) if image_bytes is not None else None
    caller = _caller(request)
    query = SearchQuery(
        text=body.query,
        image=image_bytes,
        image_sha256=image_sha,
        k=body.k,
        filters=dict(body.filters or {}),
        # a page visitor is one shopper, whatever user id it sends (service.api.security)
        user_id=None if caller is not None and caller.visitor else body.user_id,
        explain=body.explain,
        facets=list(body.facets or []),
    )
    result = await rt.searches.run(lambda: searcher.search(query))  # on the loop or a thread
    request.state.search_id = result.search_id  # for the access log line
    record_search(
        query=query,
        result=result,
        searcher=searcher,
        impressions=rt.impressions,
        metrics=rt.metrics,
        telemetry=telemetry,
        filters=body.filters,
        caller=caller.name if caller is not None else None,
    )
    # Where the time went, for operators and the latency benchmark (shown by browsers' devtools).
    response.headers["Server-Timing"] = (
        f"encode;dur={result.encode_ms:.2f}, search;dur={result.latency_ms:.2f}, "
        f"route;dur={(time.perf_counter() - started) * 1000:.2f}"
    )
    return _answer(request, body, result)


def _answer(request: Request, body: SearchRequest, result: SearchResult) -> dict[str, Any]:
    """The response body. A plain dict: response_model validates and serialises it once (model
    instances built here would be validated twice)."""
    base = str(request.base_url).rstrip("/")
    out: dict[str, Any] = {
        "search_id": result.search_id,
        "model_version": result.model_version,
        "results": [
            {
                "product_id": h.product.id,
                "position": i,
                "score": h.score,
                "title": h.product.title,
                "image_url": image_url(request, h.product.id, base),
                "attributes": h.product.attributes,
                **({"explanation": h.explanation} if body.explain else {}),
            }
            for i, h in enumerate(result.hits, start=1)
        ],
    }
    if body.facets is not None:
        out["facets"] = {
            attr: [{"value": v, "count": c} for v, c in counts]
            for attr, counts in (result.facets or {}).items()
        }
    return out
