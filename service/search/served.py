"""What follows a served search: its impression for the learner, and its counts."""

from __future__ import annotations

import time
from typing import Any

from service.search.impressions import ImpressionLogger, impression_of
from service.search.online_metrics import OnlineMetrics
from service.search.searcher import Searcher, SearchQuery, SearchResult
from service.telemetry import Telemetry


def record_search(
    *,
    query: SearchQuery,
    result: SearchResult,
    searcher: Searcher,
    impressions: ImpressionLogger,
    metrics: OnlineMetrics,
    telemetry: Telemetry,
    filters: dict[str, Any] | None,
    caller: str | None,
) -> None:
    """Queue the search's impression (written off the request path), start its online metrics
    and observe where its time went. `filters`: as the client sent them, which the learner
    replays; `caller`: the API key's fingerprint (None without keys)."""
    logging = time.perf_counter()
    impressions.log(
        impression_of(
            result=result,
            searcher=searcher,
            query_text=query.text,
            image_sha256=query.image_sha256,
            filters=filters,
            user_id=query.user_id,
            caller=caller,
            k=query.k,
        )
    )
    metrics.shown(result.search_id, result.model_version)
    stages = telemetry.stages
    stages["encode"].observe(result.encode_ms / 1000)
    stages["retrieve"].observe(result.retrieve_ms / 1000)
    stages["rank"].observe(result.rank_ms / 1000)
    stages["log"].observe(time.perf_counter() - logging)
