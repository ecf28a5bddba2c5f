"""Prometheus metrics of one API process, in a registry of its own.

Request and search-stage latencies and feedback outcomes are counted as they happen. What the
learner does is read from SQL when scraped: the learner may run in another process, and every
replica then reports the same refresh history (use `max` over instances, not `sum`). The active
version and the swap count are this process's own.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from storage.registry import finished_runs

access = logging.getLogger("fusionrank.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

SEARCH_STAGES = ("encode", "retrieve", "rank", "log")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1, 5)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 1)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "fusionrank_http_request_duration_seconds",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search_stage = Histogram(
            "fusionrank_search_stage_duration_seconds",
            "Time of each stage of a search: encode (0 when the query cache had it), retrieve "
            "(every channel's candidates), rank (the head), log (queueing the impression).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        # bound once: a search then skips four label lookups
        self.stages = {stage: self.search_stage.labels(stage) for stage in SEARCH_STAGES}
        self.events = PromCounter(
            "fusionrank_feedback_events",
            "Feedback events: accepted (stored), duplicate (an event_id already stored), "
            "rejected (its batch was refused).",
            ["outcome"],
            registry=self.registry,
        )

    def watch(
        self,
        sessions: sessionmaker[Session],
        active_version: Callable[[], str | None],
        swaps: Callable[[], int],
    ) -> None:
        """Also report the learner's runs from SQL, and this process's head, at each scrape."""
        self.registry.register(_LearnerCollector(sessions, active_version, swaps))


class _LearnerCollector(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        active_version: Callable[[], str | None],
        swaps: Callable[[], int],
    ) -> None:
        self.sessions, self.active_version, self.swaps = sessions, active_version, swaps
        self._lock = threading.Lock()
        self._seen: set[int] = set()  # finished runs already counted
        self._runs: Counter[tuple[str, str]] = Counter()  # (trigger, status)
        self._types: Counter[tuple[str, str]] = Counter()  # (query type, promoted | refused)
        self._seconds = 0.0
        self._since: datetime | None = None  # runs that finished at or after this are read

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._read_new_runs()
            runs = CounterMetricFamily(
                "fusionrank_refresh_runs", "Finished refresh runs.", labels=["trigger", "status"]
            )
            for (trigger, status), n in sorted(self._runs.items()):
                runs.add_metric([trigger, status], n)
            seconds = CounterMetricFamily(
                "fusionrank_refresh_duration_seconds", "Time spent in finished refresh runs."
            )
            seconds.add_metric([], self._seconds)
            types = CounterMetricFamily(
                "fusionrank_refresh_decisions",
                "Per query type, what the gate decided in each judged refresh.",
                labels=["query_type", "decision"],
            )
            for (qtype, decision), n in sorted(self._types.items()):
                types.add_metric([qtype, decision], n)
        yield from (runs, seconds, types)
        info = GaugeMetricFamily(
            "fusionrank_active_model", "The head version this process serves.", labels=["version"]
        )
        version = self.active_version()
        if version is not None:
            info.add_metric([version], 1)
        yield info
        swaps = CounterMetricFamily("fusionrank_model_swaps", "Hot swaps of the served head.")
        swaps.add_metric([], self.swaps())
        yield swaps

    def _read_new_runs(self) -> None:
        with self.sessions() as s:
            rows = finished_runs(session=s, since=self._since)
        for run_id, trigger, status, finished_at, detail in rows:
            if run_id in self._seen:
                continue
            self._seen.add(run_id)
            self._runs[(trigger, status)] += 1
            detail = detail or {}
            self._seconds += float(detail.get("seconds") or 0.0)
            accepted = set(detail.get("accepted_types") or [])
            for qtype in detail.get("type_reasons") or {}:
                self._types[(qtype, "promoted" if qtype in accepted else "refused")] += 1
            if finished_at is not None and (self._since is None or finished_at > self._since):
                self._since = finished_at


class RequestObserver:
    """ASGI middleware around every HTTP request: it gives the request an id (the client's
    `X-Request-ID` if sane, else a new one; echoed in the answer and set for every log line),
    times it into `Telemetry.requests` by the route's template (`/v1/products/{product_id}`, so
    ids never become labels) and logs one access line with the caller and any search id."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.telemetry.requests.labels(route, scope["method"], str(status)).observe(seconds)
            state = scope.get("state", {})
            caller = state.get("caller")
            access.info(
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "search_id": state.get("search_id"),
                    "caller": getattr(caller, "name", None),
                },
            )
            logs.request_id.reset(token)
