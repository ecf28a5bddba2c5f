"""POST /v1/feedback against a real uvicorn server on SQLite and PostgreSQL: durable 202s,
idempotent retries, joins to what the search showed, and 422s that say which event is wrong."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from helpers import BACKENDS, app_client, cloned_store, live_server, start_test_runtime
from sqlalchemy import func, select

from storage.models import FeedbackEvent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory, ingested, embedder):
    directory = tmp_path_factory.mktemp(f"feedback-{request.param}")
    # A slow impression flush: feedback sent right after its search must wait for the write.
    with cloned_store(ingested, request.param, directory, impression_flush_ms=1500) as store:
        rt = start_test_runtime(store.settings, embedder)
        try:
            with live_server(store.settings, runtime=rt) as srv:
                yield srv
        finally:
            rt.close()


def search(client, query: str = "watch", k: int = 10) -> tuple[str, list[str]]:
    r = client.post("/v1/search", json={"query": query, "k": k})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["search_id"], [h["product_id"] for h in body["results"]]


def stored(db, search_id: str) -> list[FeedbackEvent]:
    with db() as s:
        return list(
            s.scalars(
                select(FeedbackEvent)
                .where(FeedbackEvent.search_id == search_id)
                .order_by(FeedbackEvent.id)
            )
        )


def test_an_event_right_after_its_search_is_stored_with_its_position(client, db):
    sid, shown = search(client)
    r = client.post(
        "/v1/feedback", json={"search_id": sid, "product_id": shown[2], "type": "click"}
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0}
    (ev,) = stored(db, sid)  # committed before the 202
    assert (ev.product_id, ev.position, ev.type) == (shown[2], 3, "click")
    assert ev.ts is not None and ev.received_at is not None


def test_a_retried_event_id_is_counted_once(client, db):
    sid, shown = search(client)
    event = {"event_id": f"e-{uuid.uuid4()}", "search_id": sid, "product_id": shown[0]}
    batch = {"events": [{**event, "type": "click"}, {**event, "type": "click"}]}
    assert client.post("/v1/feedback", json=batch).json() == {"accepted": 1, "duplicates": 1}
    assert client.post("/v1/feedback", json=batch).json() == {"accepted": 0, "duplicates": 2}
    assert len(stored(db, sid)) == 1


def test_without_event_id_the_same_event_is_counted_once(client, db):
    sid, shown = search(client)
    click = {
        "search_id": sid,
        "product_id": shown[1],
        "type": "click",
        "ts": "2026-11-24T10:00:00Z",
    }
    buy = {**click, "type": "purchase"}
    later = {**click, "ts": "2026-11-24T10:05:00+00:00"}
    r = client.post("/v1/feedback", json={"events": [click, buy, later]})
    assert r.json() == {"accepted": 3, "duplicates": 0}
    assert client.post("/v1/feedback", json=click).json() == {"accepted": 0, "duplicates": 1}
    # the same instant in another time zone is the same event, stored in UTC
    same = {**click, "ts": "2026-11-24T12:00:00+02:00"}
    assert client.post("/v1/feedback", json=same).json() == {"accepted": 0, "duplicates": 1}
    # without an id and without ts, a retry is still one event (the server's clock is not
    # part of its identity)
    bare = {"search_id": sid, "product_id": shown[2], "type": "click"}
    assert client.post("/v1/feedback", json=bare).json() == {"accepted": 1, "duplicates": 0}
    assert client.post("/v1/feedback", json=bare).json() == {"accepted": 0, "duplicates": 1}
    assert sorted(e.type for e in stored(db, sid)) == ["click", "click", "click", "purchase"]


def test_unknown_search_or_unshown_product_rejects_the_whole_batch(client, db, server):
    sid, shown = search(client)
    unshown = next(
        pid for pid in (m.id for m in server.runtime.searcher.index.metas) if pid not in shown
    )
    good = {"search_id": sid, "product_id": shown[0], "type": "click"}
    r = client.post(
        "/v1/feedback",
        json={
            "events": [
                good,
                {"search_id": "0" * 32, "product_id": shown[0], "type": "click"},
                {"search_id": sid, "product_id": unshown, "type": "add_to_cart"},
            ]
        },
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_event"
    assert [(p["index"], p["problem"]) for p in body["detail"]] == [
        (1, "unknown search_id"),
        (2, "this search did not show this product"),
    ]
    assert body["detail"][1]["product_id"] == unshown
    assert stored(db, sid) == []  # the good event was not stored either
    # a known search named only with products it did not show is still a known search
    alone = client.post("/v1/feedback", json={**good, "product_id": unshown})
    assert alone.status_code == 422
    assert [p["problem"] for p in alone.json()["detail"]] == [
        "this search did not show this product"
    ]
    # a batch whose only problem is searches that do not exist: 404, same body
    unknown = client.post("/v1/feedback", json={**good, "search_id": "0" * 32})
    assert unknown.status_code == 404 and unknown.json()["error"] == "invalid_event"


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ({"search_id": "x", "product_id": "1", "type": "teleport"}, 422, "invalid_event"),
        ({"events": []}, 422, "validation_error"),
        ({"search_id": "x", "product_id": "1"}, 422, "validation_error"),
        ({"search_id": "x", "product_id": "1", "type": "click", "extra": 1}, 422, None),
        ({"search_id": "x", "product_id": "1", "type": "click", "ts": "yesterday"}, 422, None),
        ([{"search_id": "x"}], 400, "bad_request"),
    ],
)
def test_malformed_feedback_is_a_clear_4xx(client, payload, status, error):
    r = client.post("/v1/feedback", json=payload)
    assert r.status_code == status, r.text
    assert r.json()["error"] == (error or "validation_error")


def test_more_than_1000_events_or_broken_json_is_refused(client):
    ev = {"search_id": "x", "product_id": "1", "type": "click"}
    r = client.post("/v1/feedback", json={"events": [ev] * 1001})
    assert r.status_code == 422
    r = client.post(
        "/v1/feedback", content=b'{"events": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


def test_a_full_batch_of_1000_is_stored_exactly(client, db):
    searches = [search(client, q, k=20) for q in ("shirt", "watch", "heels", "bag", "sunglasses")]
    events = [
        {
            "event_id": f"b-{i}-{uuid.uuid4().hex[:8]}",
            "search_id": sid,
            "product_id": pid,
            "type": t,
        }
        for i, (sid, shown) in enumerate(searches)
        for pid in shown
        for t in ("click", "add_to_cart")
        for _ in range(5)  # 5 distinct ids per (product, type): all stored
    ]
    events = [{**e, "event_id": f"{e['event_id']}-{n}"} for n, e in enumerate(events)]
    assert len(events) == 1000
    r = client.post("/v1/feedback", json={"events": events})
    assert r.status_code == 202 and r.json() == {"accepted": 1000, "duplicates": 0}
    with db() as s:
        n = s.scalar(
            select(func.count())
            .select_from(FeedbackEvent)
            .where(FeedbackEvent.search_id.in_([sid for sid, _ in searches]))
        )
    assert n == 1000


def test_concurrent_retries_of_one_batch_store_it_once(client, db, server):
    sid, shown = search(client, k=20)
    events = [
        {"event_id": f"c-{uuid.uuid4()}", "search_id": sid, "product_id": pid, "type": "click"}
        for pid in shown
    ]
    results: list[dict] = []

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/feedback", json={"events": events})
            assert r.status_code == 202, r.text
            results.append(r.json())

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["accepted"] for r in results) == len(events)
    assert sum(r["duplicates"] for r in results) == 3 * len(events)
    assert len(stored(db, sid)) == len(events)


def test_event_types_are_configuration(ingested, embedder, tmp_path):
    with (
        cloned_store(
            ingested, "sqlite", tmp_path, event_grades={"click": 1, "wishlist": 1, "purchase": 3}
        ) as store,
        app_client(store.settings, embedder) as client,
    ):
        sid, shown = search(client)
        ok = client.post(
            "/v1/feedback", json={"search_id": sid, "product_id": shown[0], "type": "wishlist"}
        )
        assert ok.status_code == 202, ok.text
        gone = client.post(
            "/v1/feedback", json={"search_id": sid, "product_id": shown[0], "type": "add_to_cart"}
        )
        assert gone.status_code == 422
        assert "configured: click, wishlist, purchase" in gone.json()["detail"][0]["problem"]


def test_openapi_documents_feedback(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/feedback"]["post"]
    refs = op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in refs} == {"FeedbackEventIn", "FeedbackBatch"}
    assert set(spec["components"]["schemas"]) >= {"FeedbackEventIn", "FeedbackBatch"}
    assert "202" in op["responses"] and "422" in op["responses"]
