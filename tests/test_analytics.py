"""Search analytics and suggestions: searches and events folded from the real logs, read back
over HTTP from SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import BACKENDS, app_client, cloned_store

from service.learning import encoders_of, memory_fold


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory, ingested):
    directory = tmp_path_factory.mktemp(f"analytics-{request.param}")
    with cloned_store(ingested, request.param, directory) as copy:
        yield copy


def _search(client, query: str, **extra) -> dict:
    r = client.post("/v1/search", json={"query": query, "k": 10, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _event(client, body: dict, position: int, etype: str) -> None:
    product = body["results"][position - 1]["product_id"]
    r = client.post(
        "/v1/feedback",
        json={"search_id": body["search_id"], "product_id": product, "type": etype},
    )
    assert r.status_code == 202, r.text


def test_analytics_count_what_was_searched_found_and_done(store, embedder):
    with app_client(store.settings, embedder) as client:
        rt = client.runtime
        fold = memory_fold(store.settings, rt.sessions, encoders_of(rt.searcher.index))
        last, bought = _shop(client)
        rt.impressions.flush()
        assert fold.run() > 0

        top = client.get("/v1/analytics/queries").json()
        assert top["click_event"] == "click" and top["conversion_event"] == "purchase"
        by_query = {q["query"].lower(): q for q in top["queries"]}
        watch = by_query["wrist watch"]
        assert top["queries"][0] == watch  # the most searched comes first
        assert (watch["searches"], watch["no_results"]) == (4, 0)
        assert watch["events"]["click"] == {"searches": 4, "events": 5}
        assert watch["click_through"] == 1.0 and watch["conversion"] == 0.25
        assert by_query["high heels"]["click_through"] == 0.0

        empty = client.get("/v1/analytics/queries", params={"list": "no_results"}).json()
        assert [q["query"] for q in empty["queries"]] == ["gold watch"]
        assert empty["queries"][0]["click_through"] is None
        unclicked = client.get("/v1/analytics/queries", params={"list": "no_clicks"}).json()
        assert [q["query"] for q in unclicked["queries"]] == ["high heels"]

        positions = client.get("/v1/analytics/positions").json()["events"]
        assert positions["click"] == [{"position": 2, "events": 4}, {"position": 3, "events": 1}]
        volume = client.get("/v1/analytics/volume").json()["days"]
        assert [(d["query_type"], d["searches"], d["no_results"]) for d in volume] == [
            ("text", 6, 1)
        ]
        assert volume[0]["day"] == dt.datetime.now(dt.UTC).date().isoformat()
        (served,) = client.get("/v1/analytics/versions").json()["days"]
        assert served["model_version"] == rt.searcher.active.version
        assert (served["searches"], served["no_results"]) == (6, 1)
        # 5 searches found something; 4 had a first click at position 2, 1 a purchase
        assert served["click_through"] == 0.8 and served["conversion"] == 0.2
        assert served["click_mrr"] == pytest.approx(0.4)

        # Folding again counts nothing twice; a later click on a clicked search is an event only.
        _event(client, bought, 4, "click")
        rt.impressions.flush()
        fold.run()
        again = client.get("/v1/analytics/queries").json()["queries"][0]
        assert again["searches"] == 4 and again["events"]["click"] == {"searches": 4, "events": 6}

        # What each version last showed, found by the day's first wording of the query.
        ranked = client.get("/v1/analytics/rankings", params={"query": "WRIST WATCHES"}).json()
        (latest,) = ranked["versions"]
        assert latest["model_version"] == rt.searcher.active.version
        shown = [p["product_id"] for p in latest["products"]]
        assert shown == [h["product_id"] for h in last["results"]]
        assert all(p["title"] for p in latest["products"])

        _assert_suggestions(client)
        _assert_date_ranges(client)


def _shop(client) -> tuple[dict, dict]:
    """Searches and events of a few shoppers; returns the last search for "Wrist Watch" and the
    one (spelled otherwise) that ended in a purchase."""
    nothing = {"articleType": "Watches", "baseColour": "No Such Colour"}
    for _ in range(3):
        last = _search(client, "Wrist Watch")
        _event(client, last, 2, "click")
    bought = _search(client, "wrist watches")  # the same query, spelled otherwise
    _event(client, bought, 2, "click")
    _event(client, bought, 3, "click")  # a second click: one more event, not a search
    _event(client, bought, 2, "purchase")
    _search(client, "high heels")  # found, never clicked
    assert _search(client, "gold watch", filters=nothing)["results"] == []
    return last, bought


def _assert_suggestions(client) -> None:
    """Suggestions are the searched queries that found something, by prefix."""
    said = client.get("/v1/suggest", params={"q": "WAT"}).json()["suggestions"]
    assert said[0].lower() == "wrist watch" and "gold watch" not in said  # it found nothing
    assert client.get("/v1/suggest", params={"q": "hee"}).json()["suggestions"] == ["high heels"]
    assert client.get("/v1/suggest", params={"q": "50%_"}).json()["suggestions"] == []


def _assert_date_ranges(client) -> None:
    """Ranges before the logs or backwards are empty, long ones are cut to 400 days, bad ones
    are refused."""
    yesterday = dt.date.today() - dt.timedelta(days=1)
    old = client.get("/v1/analytics/queries", params={"until": yesterday.isoformat()})
    assert old.status_code == 200 and old.json()["queries"] == []
    backwards = {"since": "2026-02-02", "until": "2026-02-01"}
    assert client.get("/v1/analytics/volume", params=backwards).json()["days"] == []
    too_long = {"since": "2020-01-01", "until": "2026-01-01"}
    covered = client.get("/v1/analytics/positions", params=too_long).json()
    assert (covered["since"], covered["until"]) == ("2024-11-28", "2026-01-01")  # 400 days
    for bad in ({"until": "0"}, {"since": "2026-02-30"}, {"since": "yesterday"}):
        assert client.get("/v1/analytics/volume", params=bad).status_code == 422
    assert client.get("/v1/analytics/queries", params={"list": "best"}).status_code == 422
