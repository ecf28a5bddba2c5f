"""Facet counts: per attribute, how many of a search's candidates (every one its filters allow,
not only the page) have each value; a value sent back as a filter selects exactly those."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import httpx
import numpy as np
import pytest
from helpers import app_client

from service.catalog.index import CatalogIndex
from service.errors import UnknownFilter
from service.search.searcher import Searcher, SearchQuery
from storage.products import ProductRecord

ATTRS = ["articleType", "baseColour", "gender"]


@pytest.fixture(scope="module")
def client(ingested, embedder):
    with app_client(ingested.settings, embedder) as c:
        yield c


def search(client, **body) -> dict:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def check_facets(facets: dict, results: list[dict], attrs: list[str]) -> None:
    """What any facets must satisfy: one entry per attribute asked, counts > 0, most first then
    by value, and every value on the page counted at least as often as the page shows it."""
    assert sorted(facets) == sorted(attrs)
    for attr in attrs:
        values = facets[attr]
        assert all(set(v) == {"value", "count"} and v["count"] > 0 for v in values)
        assert values == sorted(values, key=lambda v: (-v["count"], v["value"]))
        counts = {v["value"]: v["count"] for v in values}
        assert len(counts) == len(values)  # each value once
        on_page = Counter(str(r["attributes"][attr]) for r in results if attr in r["attributes"])
        for value, n in on_page.items():
            assert counts.get(value, 0) >= n, (attr, value, counts)
        assert sum(counts.values()) >= sum(on_page.values())


# ---- over HTTP -------------------------------------------------------------------------------
def test_facets_count_beyond_the_page_and_only_when_asked(client):
    body = search(client, query="casual shirt for men", k=10, facets=ATTRS)
    assert set(body) == {"search_id", "model_version", "results", "facets"}
    check_facets(body["facets"], body["results"], ATTRS)
    total = sum(v["count"] for v in body["facets"]["articleType"])
    assert total > len(body["results"])  # the candidates, not the page
    assert "facets" not in search(client, query="casual shirt for men", k=10)
    assert search(client, query="casual shirt for men", k=10, facets=[])["facets"] == {}


def test_a_facet_value_sent_back_as_a_filter_selects_exactly_it(client):
    unfiltered = search(client, query="summer", k=5, facets=["articleType", "baseColour"])
    picked = unfiltered["facets"]["articleType"][0]
    filtered = search(
        client,
        query="summer",
        k=20,
        filters={"articleType": picked["value"]},
        facets=["articleType", "baseColour"],
    )
    assert filtered["results"]
    assert all(r["attributes"]["articleType"] == picked["value"] for r in filtered["results"])
    only = filtered["facets"]["articleType"]
    assert [v["value"] for v in only] == [picked["value"]]
    assert only[0]["count"] <= picked["count"]
    check_facets(filtered["facets"], filtered["results"], ["articleType", "baseColour"])


def test_an_unknown_facet_is_refused_as_an_unknown_filter_is(client):
    r = client.post("/v1/search", json={"query": "shirt", "facets": ["articleType", "brandz"]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "unknown_filter"
    assert "brandz" in body["detail"] and "articleType" in body["detail"]


@pytest.mark.parametrize(
    "facets",
    [[f"attr{i}" for i in range(21)], [""], ["a\x00b"], ["x" * 129], "articleType", [1]],
    ids=["21-names", "empty-name", "nul", "too-long", "not-a-list", "not-a-string"],
)
def test_facets_outside_the_schema_are_422(client, facets):
    r = client.post("/v1/search", json={"query": "shirt", "facets": facets})
    assert r.status_code == 422, r.text


def test_multipart_facets_are_a_json_list_part_or_one_part_per_name(client):
    def form(*facets: str) -> httpx.Response:
        parts = [
            ("query", (None, "leather watch")),
            ("k", (None, "5")),
            ("filters", (None, json.dumps({"gender": "Men"}), "application/json")),
            *[("facets", (None, f)) for f in facets],
        ]
        return client.post("/v1/search", files=parts)

    as_json = form(json.dumps(["articleType", "gender"]))
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    check_facets(body["facets"], body["results"], ["articleType", "gender"])
    assert [v["value"] for v in body["facets"]["gender"]] == ["Men"]
    per_name = form("articleType", "gender")  # how form encoders send a list
    assert per_name.status_code == 200, per_name.text
    assert per_name.json()["facets"] == body["facets"]
    assert form("").status_code == 422  # an empty name
    assert form(json.dumps([f"a{i}" for i in range(21)])).status_code == 422
    for not_a_list in ("[gender", '"gender"'):  # a name as typed, which no product has
        r = form(not_a_list)
        assert r.status_code == 400 and r.json()["error"] == "unknown_filter", r.text


def test_multipart_json_parts_are_not_null(client):
    r = client.post("/v1/search", files={"query": (None, "shirt"), "filters": (None, "null")})
    assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text


# ---- in process ------------------------------------------------------------------------------
@pytest.mark.parametrize("filters", [{}, {"gender": "Men"}, {"articleType": ["Heels", "Watches"]}])
def test_facets_equal_a_count_over_every_candidate(client, filters):
    """A k deeper than the catalog shows the whole pool, so the facets must equal a brute-force
    count over the hits."""
    searcher = client.runtime.searcher
    res = searcher.search(SearchQuery(text="blue", k=10_000, filters=filters, facets=ATTRS))
    assert res.hits and res.facets is not None
    for attr in ATTRS:
        brute = Counter(
            str(h.product.attributes[attr]) for h in res.hits if attr in h.product.attributes
        )
        assert dict(res.facets[attr]) == dict(brute), attr
        assert res.facets[attr] == sorted(brute.items(), key=lambda vc: (-vc[1], vc[0]))


def test_a_catalog_without_attributes_refuses_every_facet(client):
    searcher = client.runtime.searcher
    index = searcher.index
    rows = index.alive_rows()
    bare = CatalogIndex(  # the same products, vectors and head, without their attributes
        text=index.vectors("text", rows),
        image=index.vectors("image", rows),
        colour=index.vectors("colour", rows),
        ptext=index.vectors("ptext", rows),
        pimage=index.vectors("pimage", rows),
        has_image=index.has_image(rows),
        metas=[replace(index.metas[r], attributes={}) for r in rows.tolist()],
    )
    plain = Searcher(searcher.embedder, bare, searcher.active, per_channel=searcher.per_channel)
    assert plain.search(SearchQuery(text="watch", k=3)).facets is None
    with pytest.raises(UnknownFilter, match="no attributes"):
        plain.search(SearchQuery(text="watch", k=3, facets=["articleType"]))


# ---- the index alone -------------------------------------------------------------------------
def test_index_facet_counts_skip_missing_values_and_keep_the_most_frequent():
    n = 300
    rng = np.random.default_rng(0)
    vecs = {s: rng.standard_normal((n, 8)).astype(np.float32) for s in ("text", "image")}
    metas = [
        ProductRecord(f"p{i}", f"title {i}", {"size": str(i % 150)} if i % 3 else {}, None)
        for i in range(n)
    ]
    index = CatalogIndex(
        text=vecs["text"],
        image=vecs["image"],
        ptext=vecs["text"],
        pimage=vecs["text"],
        has_image=np.zeros(n, bool),
        metas=metas,
        meta={"attributes": ["size"]},
    )
    every = np.arange(n)
    counts = index.facet_counts(every, ["size"], limit=5)["size"]
    brute = Counter(m.attributes["size"] for m in metas if "size" in m.attributes)
    assert counts == sorted(brute.items(), key=lambda vc: (-vc[1], vc[0]))[:5]
    assert all(c == 2 for _, c in counts)  # ties: by value
    assert len(index.facet_counts(every, ["size"])["size"]) == len(brute)
    assert index.facet_counts(np.zeros(0, np.int64), ["size"]) == {"size": []}
    # a filter on a counted value selects exactly the rows counted
    value, count = counts[0]
    assert int(index.filter_mask({"size": [value]}).sum()) == count
