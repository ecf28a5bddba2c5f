"""Incremental catalog writes over the API: searchable at once, and still so after a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import BACKENDS, app_client, cloned_store, image_b64

pytestmark = pytest.mark.slow

NEW_ID = "new-lantern-1"
NEW_TITLE = "Zephyrine Quokka Lantern Brass Table Lamp"
RENAMED = "Obsidian Walrus Espresso Grinder"
MP_ID = "new-mp-2"
MP_TITLE = "Marigold Pangolin Silk Scarf"


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, ingested):
    """A private copy of the ingested catalog on SQLite or PostgreSQL (these tests write)."""
    with cloned_store(ingested, request.param, tmp_path) as ing:
        yield ing


def search_ids(client, query: str, k: int = 5, **extra) -> list[str]:
    r = client.post("/v1/search", json={"query": query, "k": k, **extra})
    assert r.status_code == 200, r.text
    return [h["product_id"] for h in r.json()["results"]]


def test_put_search_replace_delete_restart(store, embedder):
    rows = store.rows
    photo = rows[10]["image_path"]  # a real product photo for the new product
    doomed = rows[20]  # a catalog product deleted through the API
    with app_client(store.settings, embedder) as client:
        assert client.get(f"/v1/products/{NEW_ID}").status_code == 404
        first_revision = _put_new(client, photo)
        _replace_new(client, first_revision)

        # multipart PUT with an image file
        with open(rows[70]["image_path"], "rb") as f:
            r = client.put(
                f"/v1/products/{MP_ID}",
                data={"title": MP_TITLE, "attributes": json.dumps({"articleType": "Scarves"})},
                files={"image": ("scarf.jpg", f, "image/jpeg")},
            )
        assert r.status_code == 200, r.text
        assert r.json()["attributes"] == {"articleType": "Scarves"}
        assert search_ids(client, MP_TITLE)[0] == MP_ID

        _delete_from_catalog(client, doomed)
        ready = client.get("/readyz").json()
        assert f"{len(rows) + 2 - 1} products" in ready["checks"]["index"]

    # Restart on the same data dir and database: the index build predates all of the above,
    # so start-up must replay it from SQL.
    with app_client(store.settings, embedder) as client:
        assert search_ids(client, RENAMED)[0] == NEW_ID
        assert NEW_ID not in search_ids(client, "lamp", filters={"articleType": "Lamps"})
        assert search_ids(client, MP_TITLE)[0] == MP_ID
        assert doomed["id"] not in search_ids(client, doomed["productDisplayName"], k=50)
        assert client.get(f"/v1/products/{doomed['id']}").status_code == 404
        assert client.get(f"/v1/products/{NEW_ID}").json()["title"] == RENAMED
        ready = client.get("/readyz").json()
        assert f"{len(rows) + 1} products" in ready["checks"]["index"]

        # a deleted product can come back with a PUT
        r = client.put(
            f"/v1/products/{doomed['id']}",
            json={"title": doomed["productDisplayName"], "attributes": {"articleType": "Back"}},
        )
        assert r.status_code == 200
        assert doomed["id"] in search_ids(client, doomed["productDisplayName"], k=3)


def _put_new(client, photo: str) -> int:
    """PUT a new product (JSON, base64 image): searchable at position 1 at once, its image
    served, its new attribute value filterable, its photo finding it; returns its revision."""
    r = client.put(
        f"/v1/products/{NEW_ID}",
        json={
            "title": NEW_TITLE,
            "attributes": {"articleType": "Lamps", "baseColour": "Gold", "stock": 3},
            "image": image_b64(photo),
        },
    )
    answered = time.perf_counter()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["product_id"] == NEW_ID and body["title"] == NEW_TITLE
    assert body["attributes"] == {"articleType": "Lamps", "baseColour": "Gold", "stock": "3"}
    assert body["image_url"].endswith(f"/v1/products/{NEW_ID}/image")
    assert search_ids(client, NEW_TITLE)[0] == NEW_ID
    assert time.perf_counter() - answered < 1.0, "searchable within a second"

    img = client.get(body["image_url"])
    assert img.status_code == 200 and img.content == Path(photo).read_bytes()
    assert search_ids(client, "lamp", filters={"articleType": "Lamps"}) == [NEW_ID]
    r = client.post("/v1/search", json={"image": image_b64(photo), "k": 3})
    assert NEW_ID in [h["product_id"] for h in r.json()["results"]]
    return body["revision"]


def _replace_new(client, first_revision: int) -> None:
    """PUT again with a changed title (no image: it keeps its image) replaces it."""
    r = client.put(
        f"/v1/products/{NEW_ID}",
        json={"title": RENAMED, "attributes": {"articleType": "Kitchen"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["revision"] > first_revision
    assert r.json()["image_url"] is not None
    assert search_ids(client, RENAMED)[0] == NEW_ID
    hits = search_ids(client, NEW_TITLE, k=20)
    assert hits.count(NEW_ID) <= 1, "one product, one row"
    assert search_ids(client, "lamp", filters={"articleType": "Lamps"}) == []
    assert search_ids(client, "x", filters={"articleType": "Kitchen"}) == [NEW_ID]
    got = client.get(f"/v1/products/{NEW_ID}").json()
    assert got["title"] == RENAMED and got["attributes"] == {"articleType": "Kitchen"}


def _delete_from_catalog(client, doomed: dict) -> None:
    """DELETE a catalog product: 204, gone from search (filtered too) and GET."""
    assert doomed["id"] in search_ids(client, doomed["productDisplayName"], k=3)
    r = client.delete(f"/v1/products/{doomed['id']}")
    assert r.status_code == 204 and r.content == b""
    assert doomed["id"] not in search_ids(client, doomed["productDisplayName"], k=50)
    assert client.get(f"/v1/products/{doomed['id']}").status_code == 404
    assert client.delete(f"/v1/products/{doomed['id']}").status_code == 404
    r = client.post(
        "/v1/search",
        json={"query": "x", "k": 100, "filters": {"articleType": doomed["articleType"]}},
    )
    assert doomed["id"] not in [h["product_id"] for h in r.json()["results"]]


def test_put_without_image_is_text_searchable(store, embedder):
    with app_client(store.settings, embedder) as client:
        r = client.put("/v1/products/no-img", json={"title": "Cerulean Axolotl Umbrella"})
        assert r.status_code == 200, r.text
        assert r.json()["image_url"] is None
        assert search_ids(client, "Cerulean Axolotl Umbrella")[0] == "no-img"
        assert client.get("/v1/products/no-img/image").status_code == 404
        # an image query still works with a product without an image in the index
        photo = store.rows[0]["image_path"]
        r = client.post("/v1/search", json={"image": image_b64(photo), "k": 5})
        assert r.status_code == 200 and len(r.json()["results"]) == 5


def test_a_rejected_image_changes_nothing(store, embedder):
    target = store.rows[30]
    with app_client(store.settings, embedder) as client:
        before = client.get(f"/v1/products/{target['id']}").json()
        r = client.put(
            f"/v1/products/{target['id']}",
            json={"title": "Overwritten", "image": image_b64(target["image_path"])[:100]},
        )
        assert 400 <= r.status_code < 500
        assert client.get(f"/v1/products/{target['id']}").json() == before
        assert target["id"] in search_ids(client, target["productDisplayName"], k=3)
