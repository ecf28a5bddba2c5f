"""The HTTP contract, against a real uvicorn server on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import BACKENDS, image_b64, ingested_copy, live_server
from PIL import Image
from sqlalchemy import select

from storage.models import Impression, ImpressionItem, QueryEmbedding

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory, ingested, embedder):
    if request.param == "sqlite":
        with live_server(ingested.settings) as srv:
            srv.ingest = ingested
            yield srv
    else:
        directory = tmp_path_factory.mktemp("pg-server")
        with (
            ingested_copy("postgres", directory, ingested.csv, ingested.rows, embedder) as ing,
            live_server(ing.settings) as srv,
        ):
            srv.ingest = ing
            yield srv


def by_type(rows, article_type):
    return [r for r in rows if r["articleType"] == article_type]


def check_results(body: dict, k: int) -> list[dict]:
    assert set(body) == {"search_id", "model_version", "results"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["search_id"])
    assert body["model_version"].startswith("h-")
    results = body["results"]
    assert len(results) == k
    assert [r["position"] for r in results] == list(range(1, k + 1))
    scores = [r["score"] for r in results]
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False)), scores
    ids = [r["product_id"] for r in results]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == k
    for r in results:
        assert set(r) == {"product_id", "position", "score", "title", "image_url", "attributes"}
    return results


def stored_impression(server, db, search_id: str) -> tuple[Impression, list[ImpressionItem]]:
    """The impression row once the writer has committed it (flush, then poll up to 5 s)."""
    server.runtime.impressions.flush()
    deadline = time.monotonic() + 5
    while True:
        with db() as s:
            imp = s.get(Impression, search_id)
            if imp is not None:
                items = list(
                    s.scalars(
                        select(ImpressionItem)
                        .where(ImpressionItem.search_id == search_id)
                        .order_by(ImpressionItem.position)
                    )
                )
                return imp, items
        if time.monotonic() > deadline:
            pytest.fail(f"impression {search_id} not in the database after 5 s")
        time.sleep(0.05)


def query_vectors(db, key: str) -> dict[str, np.ndarray]:
    """Encoder id -> the logged vector of the query content with this hash."""
    with db() as s:
        rows = s.scalars(select(QueryEmbedding).where(QueryEmbedding.key == key)).all()
    return {r.encoder: np.frombuffer(r.vector, dtype=np.float32) for r in rows}


# ---- search ----------------------------------------------------------------------------------
def test_text_search_contract(server, client):
    target = server.ingest.rows[3]
    r = client.post("/v1/search", json={"query": target["productDisplayName"], "k": 5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    results = check_results(body, 5)
    assert body["model_version"] == server.ingest.report.head_version
    assert target["id"] in [h["product_id"] for h in results[:3]]
    hit = next(h for h in results if h["product_id"] == target["id"])
    assert hit["title"] == target["productDisplayName"]
    assert hit["attributes"]["articleType"] == target["articleType"]
    assert hit["image_url"].startswith(server.url)
    # image_url serves the product's image
    img = client.get(hit["image_url"])
    assert img.status_code == 200
    assert img.headers["content-type"] == "image/jpeg"
    assert img.content == Path(target["image_path"]).read_bytes()


def timings(r: httpx.Response) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    }


def test_search_reports_where_its_time_went(client):
    r = client.post("/v1/search", json={"query": "red dress for a summer wedding", "k": 5})
    assert r.status_code == 200
    t = timings(r)
    assert 0 < t["encode"] <= t["search"] <= t["route"]


def test_a_repeated_query_skips_its_encoders_and_ranks_the_same(server, client):
    buf = io.BytesIO()  # bytes no other test sends: the first search must miss the cache
    Image.open(server.ingest.rows[7]["image_path"]).save(buf, "PNG")
    photo = base64.b64encode(buf.getvalue()).decode()

    def hits() -> tuple[int, int]:
        cache = client.get("/v1/metrics/online").json()["query_cache"]
        return cache["text"]["hits"], cache["photo"]["hits"]

    before = hits()
    for body in (
        {"query": "navy blue casual shirts for weekends", "k": 8},
        {"image": photo, "k": 8},
        {"query": "the same but in black please", "image": photo, "k": 8},
    ):
        first, again = (client.post("/v1/search", json=body) for _ in range(2))
        assert first.status_code == again.status_code == 200, again.text
        assert timings(first)["encode"] > 0, body.keys()
        assert timings(again)["encode"] == 0, body.keys()
        ranked = [
            [(h["product_id"], h["score"]) for h in r.json()["results"]] for r in (first, again)
        ]
        assert ranked[0] == ranked[1]
    # texts: asked again twice; photos: asked again, then twice beside a new text
    assert np.subtract(hits(), before).tolist() == [2, 3]


def test_default_k_is_20(client):
    r = client.post("/v1/search", json={"query": "watch"})
    assert r.status_code == 200
    check_results(r.json(), 20)


def test_image_search_finds_the_product_in_its_photo(server, client):
    rows = server.ingest.rows
    for target in rows[::30]:  # one product of each article type
        r = client.post("/v1/search", json={"image": image_b64(target["image_path"]), "k": 10})
        assert r.status_code == 200, r.text
        ids = [h["product_id"] for h in check_results(r.json(), 10)]
        assert target["id"] in ids[:3], (target["productDisplayName"], ids[:3])


def test_image_search_accepts_a_data_url(server, client):
    target = server.ingest.rows[40]
    data_url = f"data:image/jpeg;base64,{image_b64(target['image_path'])}"
    r = client.post("/v1/search", json={"image": data_url, "k": 3})
    assert r.status_code == 200
    assert target["id"] in [h["product_id"] for h in r.json()["results"]]


def test_composed_query(server, client):
    target = server.ingest.rows[60]
    r = client.post(
        "/v1/search",
        json={
            "query": target["productDisplayName"],
            "image": image_b64(target["image_path"]),
            "k": 8,
        },
    )
    assert r.status_code == 200, r.text
    ids = [h["product_id"] for h in check_results(r.json(), 8)]
    assert target["id"] in ids[:3]


def test_multipart_search_with_an_image_file(server, client):
    target = server.ingest.rows[100]
    with open(target["image_path"], "rb") as f:
        r = client.post(
            "/v1/search",
            data={
                "k": "6",
                "filters": json.dumps({"articleType": target["articleType"]}),
                "user_id": "multipart-user",
            },
            files={"image": ("photo.jpg", f, "image/jpeg")},
        )
    assert r.status_code == 200, r.text
    results = check_results(r.json(), 6)
    assert target["id"] in [h["product_id"] for h in results[:3]]
    assert all(h["attributes"]["articleType"] == target["articleType"] for h in results)


def test_multipart_text_only_search(server, client):
    target = server.ingest.rows[7]
    # multipart without a file part (httpx sends (None, value) parts as plain form fields)
    r = client.post(
        "/v1/search",
        files={"query": (None, target["productDisplayName"]), "k": (None, "4")},
    )
    assert r.status_code == 200, r.text
    assert target["id"] in [h["product_id"] for h in check_results(r.json(), 4)]


@pytest.mark.parametrize("k", [10, 25])
def test_filter_returns_exactly_k_matching_results(server, client, k):
    watches = by_type(server.ingest.rows, "Watches")
    assert len(watches) >= k
    # a query pointing elsewhere: the filter, not the query, must produce the k results
    r = client.post(
        "/v1/search",
        json={"query": "women's red high heels", "k": k, "filters": {"articleType": "Watches"}},
    )
    assert r.status_code == 200, r.text
    results = check_results(r.json(), k)
    assert all(h["attributes"]["articleType"] == "Watches" for h in results)
    if k == len(watches):
        assert {h["product_id"] for h in results} == {w["id"] for w in watches}


def test_list_filter_values_are_ored(server, client):
    rows = server.ingest.rows
    wanted = {"Watches", "Heels"}
    k = len([r for r in rows if r["articleType"] in wanted]) - 5
    r = client.post(
        "/v1/search",
        json={"query": "casual", "k": k, "filters": {"articleType": sorted(wanted)}},
    )
    assert r.status_code == 200, r.text
    results = check_results(r.json(), k)
    got = {h["attributes"]["articleType"] for h in results}
    assert got == wanted


def test_filters_are_anded_across_attributes(server, client):
    rows = server.ingest.rows
    colour = max(
        {r["baseColour"] for r in by_type(rows, "Tshirts")},
        key=lambda c: sum(r["baseColour"] == c for r in by_type(rows, "Tshirts")),
    )
    matching = {r["id"] for r in by_type(rows, "Tshirts") if r["baseColour"] == colour}
    r = client.post(
        "/v1/search",
        json={
            "query": "shirt",
            "k": 50,
            "filters": {"articleType": "Tshirts", "baseColour": colour},
        },
    )
    assert r.status_code == 200
    assert {h["product_id"] for h in r.json()["results"]} == matching


# ---- impressions -----------------------------------------------------------------------------
def test_text_search_is_logged(server, client, db):
    filters = {"articleType": ["Shirts", "Tshirts"], "gender": "Men"}
    r = client.post(
        "/v1/search",
        json={"query": "  blue check shirt  ", "k": 7, "filters": filters, "user_id": "u-42"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    imp, items = stored_impression(server, db, body["search_id"])
    assert imp.query_text == "blue check shirt"
    assert imp.has_image is False and imp.image_sha256 is None
    assert imp.query_type == "text"
    assert imp.filters == filters
    assert imp.user_id == "u-42"
    assert imp.model_version == body["model_version"]
    assert imp.k == 7 and imp.latency_ms > 0
    assert imp.created_at is not None
    got = body["results"]
    assert [i.position for i in items] == list(range(1, len(got) + 1))
    assert [i.product_id for i in items] == [h["product_id"] for h in got]
    assert [i.score for i in items] == pytest.approx([h["score"] for h in got], rel=1e-9)
    # not explored: shown where the model ranked it, with the prior examination curve 1/position
    assert imp.explore is False
    assert [i.model_position for i in items] == [i.position for i in items]
    assert [i.propensity for i in items] == pytest.approx([1 / i.position for i in items])
    # the query's frozen vector is kept for the learner, keyed by the text's hash
    (text_vec,) = query_vectors(db, hashlib.sha256(b"blue check shirt").hexdigest()).values()
    expected = server.runtime.embedder.text_encoder.encode(["blue check shirt"])[0]
    assert text_vec.shape == (384,) and float(text_vec @ expected) > 0.999


def test_image_search_is_logged_by_hash_only(server, client, db):
    target = server.ingest.rows[20]
    raw = Path(target["image_path"]).read_bytes()
    r = client.post("/v1/search", json={"image": base64.b64encode(raw).decode(), "k": 3})
    assert r.status_code == 200
    body = r.json()
    imp, items = stored_impression(server, db, body["search_id"])
    assert imp.has_image is True
    assert imp.image_sha256 == hashlib.sha256(raw).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", imp.image_sha256)
    assert imp.query_text is None and imp.query_type == "image"
    assert imp.filters is None and imp.user_id is None
    assert [i.product_id for i in items] == [h["product_id"] for h in body["results"]]
    # only its 1280-d vector and its colour descriptor are, under the same hash
    embedder = server.runtime.embedder
    photo = embedder.decode(raw)
    vecs = query_vectors(db, imp.image_sha256)
    assert set(vecs) == {embedder.image_encoder.id, embedder.colour_encoder.id}
    assert vecs[embedder.image_encoder.id].shape == (1280,)
    assert np.allclose(vecs[embedder.colour_encoder.id], embedder.colour(photo))
    # the shopper's photo itself is not kept anywhere
    images_dir = server.settings.images_dir
    assert not images_dir.exists() or not any(images_dir.iterdir())


def test_composed_and_multipart_searches_are_logged(server, client, db):
    target = server.ingest.rows[50]
    raw = Path(target["image_path"]).read_bytes()
    r = client.post(
        "/v1/search",
        data={"query": "in black", "k": "2", "user_id": "mp"},
        files={"image": ("x.jpg", raw, "image/jpeg")},
    )
    assert r.status_code == 200, r.text
    imp, items = stored_impression(server, db, r.json()["search_id"])
    assert imp.query_type == "composed" and imp.query_text == "in black"
    assert imp.image_sha256 == hashlib.sha256(raw).hexdigest()
    assert imp.user_id == "mp" and len(items) == 2


# ---- health, products, OpenAPI ---------------------------------------------------------------
def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_a_serving_process_keeps_its_catalog_out_of_the_garbage_collector(server):
    import gc

    # a full collection over the loaded catalog's objects would stall every request in flight
    assert gc.get_freeze_count() > len(server.ingest.rows)


def test_readyz_reports_its_checks(server, client):
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "index", "head"}
    assert all(v.startswith("ok") for v in body["checks"].values())
    assert f"{len(server.ingest.rows)} products" in body["checks"]["index"]
    assert server.ingest.report.head_version in body["checks"]["head"]


def test_get_product(server, client):
    target = server.ingest.rows[5]
    r = client.get(f"/v1/products/{target['id']}")
    assert r.status_code == 200
    body = r.json()
    assert body["product_id"] == target["id"]
    assert body["title"] == target["productDisplayName"]
    assert body["attributes"]["articleType"] == target["articleType"]
    assert body["revision"] >= 1
    assert client.get(body["image_url"]).content == Path(target["image_path"]).read_bytes()


def test_unknown_product_is_a_json_404(client):
    for path in ("/v1/products/no-such-id", "/v1/products/no-such-id/image"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"] == "not_found"


def test_openapi_describes_search(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    post = spec["paths"]["/v1/search"]["post"]
    content = post["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert content["application/json"]["schema"]["$ref"].endswith("/SearchRequest")
    assert "image" in content["multipart/form-data"]["schema"]["properties"]
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/SearchResponse")
    schemas = spec["components"]["schemas"]
    assert {"SearchRequest", "SearchResponse", "SearchHit", "ErrorBody"} <= set(schemas)
    assert {"400", "413", "422"} <= set(post["responses"])
    assert "/v1/products/{product_id}" in spec["paths"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_refs_all_resolve(client):
    """A dangling $ref makes the spec invalid (Swagger UI, client generators fail on it)."""
    spec = client.get("/openapi.json").json()
    schemas = spec.get("components", {}).get("schemas", {})
    dangling = sorted({r for r in _refs(spec) if r.split("/")[-1] not in schemas})
    assert dangling == []
