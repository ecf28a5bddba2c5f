"""GET /metrics through a real uvicorn server: what a Prometheus scraper sees after searches,
feedback and a refresh."""

from __future__ import annotations

import time

import httpx
import pytest
from helpers import cloned_store, live_server
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, ingested):
    directory = tmp_path_factory.mktemp("metrics-server")
    on_request = {  # the learner in process, refreshing only when asked
        "learner_in_process": True,
        "learner_interval_minutes": 100_000,
        "learner_min_new_events": 10**9,
        "learner_refresh_on_drift": False,
    }
    with (
        cloned_store(ingested, "sqlite", directory, **on_request) as store,
        live_server(store.settings) as srv,
    ):
        yield srv


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{url}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_searches_feedback_and_refreshes_are_counted(server):
    url = server.url
    before = scrape(url)
    r = httpx.post(f"{url}/v1/search", json={"query": "blue shirt", "k": 5}, timeout=60)
    assert r.status_code == 200
    body = r.json()
    product = body["results"][0]["product_id"]
    event = {"event_id": "m-1", "search_id": body["search_id"], "product_id": product}
    for _ in range(2):  # the second is a duplicate
        r = httpx.post(f"{url}/v1/feedback", json={**event, "type": "click"}, timeout=60)
        assert r.status_code == 202, r.text
    bad = {"search_id": "f" * 32, "product_id": product, "type": "click"}
    assert httpx.post(f"{url}/v1/feedback", json=bad, timeout=60).status_code == 404
    httpx.get(f"{url}/v1/products/{product}", timeout=30)

    after = scrape(url)
    search = {"route": "/v1/search", "method": "POST", "status": "200"}
    count = "fusionrank_http_request_duration_seconds_count"
    assert value(after, count, **search) == value(before, count, **search) + 1
    product_route = {"route": "/v1/products/{product_id}", "method": "GET", "status": "200"}
    assert value(after, count, **product_route) >= 1  # the template, never the id
    for stage in ("encode", "retrieve", "rank", "log"):
        name = "fusionrank_search_stage_duration_seconds_count"
        assert value(after, name, stage=stage) == value(before, name, stage=stage) + 1
    events = "fusionrank_feedback_events_total"
    for outcome in ("accepted", "duplicate", "rejected"):
        assert value(after, events, outcome=outcome) == value(before, events, outcome=outcome) + 1
    assert value(after, "fusionrank_active_model", version=body["model_version"]) == 1
    assert ("fusionrank_model_swaps_total", ()) in after

    r = httpx.post(f"{url}/v1/models/train", timeout=60)  # too little feedback: skipped
    assert r.status_code == 202
    run = r.json()["run_id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/v1/models/runs/{run}", timeout=30).json()["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, "the refresh did not finish in 120 s"
        time.sleep(0.2)
    runs = scrape(url)
    total = sum(v for (n, _), v in runs.items() if n == "fusionrank_refresh_runs_total")
    assert total == 1 + sum(
        v for (n, _), v in before.items() if n == "fusionrank_refresh_runs_total"
    )


def test_every_answer_carries_a_request_id(server):
    r = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "abc-123"}, timeout=30)
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "bad id\\n"}, timeout=30)
    assert len(r.headers["x-request-id"]) == 32  # an unsafe one is replaced
