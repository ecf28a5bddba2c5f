"""Bad requests get a 4xx with a JSON error body, never a 500."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from helpers import app_client
from PIL import Image

pytestmark = pytest.mark.slow

MAX_IMAGE_BYTES = 200_000


@pytest.fixture(scope="module")
def client(ingested, embedder):
    settings = ingested.settings.model_copy(update={"max_image_bytes": MAX_IMAGE_BYTES})
    with app_client(settings, embedder) as c:
        yield c


@pytest.fixture(scope="module")
def big_image() -> bytes:
    """A real ~300 KB image (noise does not compress)."""
    noise = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    data = buf.getvalue()
    assert 290_000 < len(data) < 320_000
    return data


def error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert "error" in body and "detail" in body
    if code is not None:
        assert body["error"] == code, body
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- schema errors (422) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"query": ""},
        {"query": "   \t\n "},
        {"query": None, "image": None},
        {"image": ""},
        {"query": "shirt", "k": 0},
        {"query": "shirt", "k": 101},
        {"query": "shirt", "k": -3},
        {"query": "shirt", "k": "many"},
        {"query": "x" * 513},
        {"query": 42},
        {"query": "shirt", "filters": {"articleType": {"nested": "object"}}},
        {"query": "shirt", "filters": ["articleType"]},
        {"query": "shirt", "user_id": "u" * 129},
    ],
    ids=[
        "empty-body",
        "empty-query",
        "whitespace-query",
        "nulls",
        "empty-image",
        "k=0",
        "k=101",
        "k<0",
        "k-not-int",
        "query-too-long",
        "query-not-string",
        "nested-filter",
        "filters-not-object",
        "user-id-too-long",
    ],
)
def test_schema_violations_are_422(client, payload):
    body = error(client.post("/v1/search", json=payload), 422, "validation_error")
    assert isinstance(body["detail"], list) and body["detail"]


def test_k_bounds_are_inclusive(client):
    assert client.post("/v1/search", json={"query": "shirt", "k": 1}).status_code == 200
    r = client.post("/v1/search", json={"query": "shirt", "k": 100})
    assert r.status_code == 200
    assert len(r.json()["results"]) == 100  # 150 products: 100 exist


# ---- 400s ------------------------------------------------------------------------------------
def test_unknown_filter_attribute(client):
    body = error(
        client.post("/v1/search", json={"query": "shirt", "filters": {"brandz": "x"}}),
        400,
        "unknown_filter",
    )
    assert "brandz" in body["detail"] and "articleType" in body["detail"]


def test_empty_filter_list(client):
    error(client.post("/v1/search", json={"query": "shirt", "filters": {"articleType": []}}), 400)


def test_filter_value_nobody_has_gives_no_results(client):
    r = client.post("/v1/search", json={"query": "shirt", "filters": {"articleType": "Spaceship"}})
    assert r.status_code == 200 and r.json()["results"] == []


@pytest.mark.parametrize("image", ["%%% not base64 %%%", "abc", "data:image/png;base64,@@@@"])
def test_undecodable_base64(client, image):
    error(client.post("/v1/search", json={"image": image}), 400, "invalid_image")


def test_base64_of_garbage(client):
    r = client.post("/v1/search", json={"image": b64(b"definitely not an image " * 50)})
    error(r, 400, "invalid_image")


def test_truncated_jpeg(client, jpeg):
    error(
        client.post("/v1/search", json={"image": b64(jpeg[: len(jpeg) // 2])}), 400, "invalid_image"
    )


def test_truncated_jpeg_multipart(client, jpeg):
    r = client.post(
        "/v1/search",
        data={"query": "shirt"},
        files={"image": ("x.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")},
    )
    error(r, 400, "invalid_image")


def test_malformed_json(client):
    r = client.post(
        "/v1/search", content=b'{"query": "shirt",', headers={"content-type": "application/json"}
    )
    error(r, 400, "bad_request")


@pytest.mark.parametrize("raw", [b'["query", "shirt"]', b'"shirt"', b"42", b"null"])
def test_json_body_that_is_not_an_object(client, raw):
    r = client.post("/v1/search", content=raw, headers={"content-type": "application/json"})
    error(r, 400, "bad_request")


def test_unsupported_content_type(client):
    r = client.post("/v1/search", content=b"query=shirt", headers={"content-type": "text/plain"})
    error(r, 400)


def test_multipart_with_a_wrongly_named_file(client, jpeg):
    r = client.post("/v1/search", files={"photo": ("x.jpg", jpeg, "image/jpeg")})
    error(r, 400)


def test_multipart_filters_that_are_not_json(client):
    r = client.post("/v1/search", data={"query": "shirt", "filters": "{articleType: Watches"})
    assert r.status_code < 500
    r = client.post(
        "/v1/search",
        files={"query": (None, "shirt"), "filters": (None, "{articleType: Watches")},
    )
    error(r, 400)


# ---- 413s ------------------------------------------------------------------------------------
def test_image_over_the_byte_limit_json(client, big_image):
    error(client.post("/v1/search", json={"image": b64(big_image)}), 413, "payload_too_large")


def test_image_just_over_the_limit_json(client):
    """Base64 short enough for the body limit, but the image over max_image_bytes."""
    data = b"\x00" * (MAX_IMAGE_BYTES + 10)
    error(client.post("/v1/search", json={"image": b64(data)}), 413, "payload_too_large")


def test_image_over_the_byte_limit_multipart(client, big_image):
    r = client.post("/v1/search", files={"image": ("big.png", big_image, "image/png")})
    error(r, 413, "payload_too_large")


def test_json_body_over_the_limit(client):
    r = client.post("/v1/search", json={"query": "shirt", "user_id": "x" * 1_000_000})
    error(r, 413, "payload_too_large")


def test_decompression_bomb(client, png_bomb):
    assert len(png_bomb) < MAX_IMAGE_BYTES
    error(client.post("/v1/search", json={"image": b64(png_bomb)}), 413, "payload_too_large")
    r = client.post("/v1/search", files={"image": ("bomb.png", png_bomb, "image/png")})
    error(r, 413, "payload_too_large")


# ---- products --------------------------------------------------------------------------------
def test_unknown_product_get_and_delete(client):
    error(client.get("/v1/products/nope-404"), 404, "not_found")
    error(client.delete("/v1/products/nope-404"), 404, "not_found")
    error(client.get("/v1/products/nope-404/image"), 404, "not_found")


@pytest.mark.parametrize(
    "payload, status",
    [
        ({}, 422),
        ({"title": ""}, 422),
        ({"title": "x", "unexpected": 1}, 422),
        ({"title": "x", "attributes": {"a": {"b": 1}}}, 422),
        ({"title": "x", "image": "%%%"}, 400),
        ({"title": "x", "image": b64(b"garbage" * 10)}, 400),
    ],
    ids=["no-title", "empty-title", "extra-field", "nested-attr", "bad-base64", "garbage-image"],
)
def test_bad_product_puts(client, payload, status):
    r = client.put("/v1/products/bad-put", json=payload)
    error(r, status)
    error(client.get("/v1/products/bad-put"), 404)  # nothing half-written


def test_wrong_method_and_path(client):
    error(client.get("/v1/search"), 405, "method_not_allowed")
    error(client.get("/v2/nothing"), 404, "not_found")


def test_nothing_above_was_a_server_error(client, jpeg, big_image):
    """A sweep of odd inputs: none of them may produce a 5xx."""
    cases = [
        {"json": {"query": "shirt", "image": image_b64_bytes}}
        for image_b64_bytes in (b64(jpeg), b64(jpeg[:10]), "", "====")
    ] + [
        {"json": {"query": "\u0000\ud7ff weird \u2603", "k": 3}},
        {"json": {"query": "shirt", "filters": {"articleType": [True, 1, 2.5]}}},
        {"json": {"query": "shirt", "filters": {}}},
        {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}},
        {"content": b"", "headers": {"content-type": "application/json"}},
        {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        {"content": b"junk", "headers": {"content-type": "multipart/form-data"}},
        {"files": {"image": ("x", b"", "image/jpeg")}},
        {"files": {"image": ("x", big_image[:1000], "image/png")}},
        {"data": {"k": "1000"}, "files": {"image": ("x.jpg", jpeg, "image/jpeg")}},
    ]
    for kwargs in cases:
        r = client.post("/v1/search", **kwargs)
        assert r.status_code < 500, (kwargs.keys(), r.status_code, r.text[:300])
        assert "error" in r.json() or r.status_code == 200
    for body in ([1, 2], "x", {"title": "t", "attributes": "not-a-dict"}):
        r = client.put(
            "/v1/products/sweep",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        assert 400 <= r.status_code < 500, r.text
